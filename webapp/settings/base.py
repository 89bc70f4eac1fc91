"""Settings shared by every environment; values come from the environment with
embedded defaults so that one command runs the site on a fresh machine."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from detector.verdict import DEFAULT_MIN_FACE

BASE_DIR = Path(__file__).resolve().parents[2]
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

VAR_DIR = Path(env.str("VERITY_VAR_DIR", default=str(BASE_DIR / "var")))
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-insecure-verity-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",
    "csp",
    "webapp.accounts",
    "webapp.analyses",
    "webapp.live",
    "webapp.training",
    "webapp.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last: it turns a lockout flagged during authentication into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webapp" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database(url: str) -> dict:
    """The settings for one database URL, with a connection pool for PostgreSQL.

    Under ASGI each request runs on a thread of its own, so persistent connections
    (CONN_MAX_AGE > 0) pile up, one per thread, until PostgreSQL refuses clients (seen in
    bench/load.py); opening a connection for each request instead costs about 8 ms. A
    psycopg pool per process does neither: a request borrows a connection and gives it back
    when it ends. The pool requires CONN_MAX_AGE 0. VERITY_DB_POOL_MAX_SIZE=0 turns it off.
    """
    db = env.db_url_config(url)
    db["CONN_MAX_AGE"] = 0
    pool_max = env.int("VERITY_DB_POOL_MAX_SIZE", default=4)
    if "postgresql" in db["ENGINE"] and pool_max > 0:
        # Per process. More requests than this wait for a connection, which costs little:
        # a Python process computes on one core at a time. A Celery task uses two (the task
        # and its heartbeat).
        db.setdefault("OPTIONS", {})["pool"] = {"min_size": min(2, pool_max), "max_size": pool_max}
        # A pooled connection may have died while idle (PostgreSQL restarted): check it
        # when it is handed out, which costs one round trip.
        db["CONN_HEALTH_CHECKS"] = True
    return db


# SQLite when DATABASE_URL is unset; PostgreSQL (or anything dj-database-url reads) when set.
DATABASES = {
    "default": database(env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'verity.sqlite3'}")),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Axes first: it refuses a locked-out client before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Sign-in throttling: 5 failures for one user name from one address lock that pair out
# for 15 minutes (the page and POST /api/auth/token/ alike); others are unaffected.
AXES_FAILURE_LIMIT = env.int("VERITY_SIGNIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("VERITY_SIGNIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "webapp.accounts.lockout.lockout_response"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "analyses:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "webapp" / "static"]
WHITENOISE_USE_FINDERS = True

# Uploaded and produced files are private: no MEDIA_URL is served; views check ownership.
MEDIA_ROOT = Path(env.str("VERITY_MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if env.str("VERITY_S3_BUCKET", default=""):
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("VERITY_S3_BUCKET"),
            "endpoint_url": env.str("VERITY_S3_ENDPOINT_URL", default=None),
            "default_acl": "private",
            "querystring_auth": True,
        },
    }

# Django writes uploads above this size to a temporary file in chunks.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = 10_485_760
VERITY_MAX_UPLOAD_BYTES = env.int("VERITY_MAX_UPLOAD_BYTES", default=500 * 1024 * 1024)
VERITY_FRAMES = env.int("VERITY_FRAMES", default=32)
# Faces narrower than this (px) are shown but not judged; 0 judges every face.
VERITY_MIN_FACE = env.int("VERITY_MIN_FACE", default=DEFAULT_MIN_FACE)
VERITY_MODEL_DIR = env.str("VERITY_MODEL_DIR", default=str(BASE_DIR / "models" / "default"))
# What runs the network in the worker: auto (ONNX Runtime once verified against Keras
# within 1e-3, else Keras), onnx or keras. Verified exports are cached in VERITY_CACHE_DIR.
VERITY_RUNTIME = env.str("VERITY_RUNTIME", default="auto")
if VERITY_RUNTIME not in ("auto", "onnx", "keras"):
    raise ImproperlyConfigured(
        f"VERITY_RUNTIME must be auto, onnx or keras, not {VERITY_RUNTIME!r}."
    )
os.environ.setdefault("VERITY_CACHE_DIR", str(VAR_DIR / "cache"))
# Fair use: analyses a user may have waiting or running, and running at once.
VERITY_MAX_QUEUED_PER_USER = env.int("VERITY_MAX_QUEUED_PER_USER", default=10)
VERITY_MAX_RUNNING_PER_USER = env.int("VERITY_MAX_RUNNING_PER_USER", default=2)
# A running job whose worker has been silent this long is presumed dead and re-queued,
# up to VERITY_MAX_ATTEMPTS attempts; the reaper looks every VERITY_REAPER_INTERVAL seconds.
VERITY_STALE_SECONDS = env.int("VERITY_STALE_SECONDS", default=90)
VERITY_MAX_ATTEMPTS = env.int("VERITY_MAX_ATTEMPTS", default=3)
VERITY_REAPER_INTERVAL = env.float("VERITY_REAPER_INTERVAL", default=30.0)
# A queued job untouched this long is sent again (the broker may have lost it).
VERITY_RESEND_QUEUED_SECONDS = env.int("VERITY_RESEND_QUEUED_SECONDS", default=600)

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": env.str("VERITY_CHANNEL_PREFIX", default="verity"),
        },
    }
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

EMAIL_BACKEND = env.str(
    "DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="verity@localhost")

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Scripts only from our own static files (or a per-response nonce); no inline <style>
# elements, though style="" attributes are allowed (they cannot select or exfiltrate).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "media-src": [SELF],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("VERITY_LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Verity API",
    "DESCRIPTION": "Upload clips, follow their analysis and fetch verdicts, reports and annotated videos.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a field named "status": name each set of choices (analyses
    # and training runs share one).
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "webapp.analyses.models.Status",
        "ModelVersionStatusEnum": "webapp.training.models.ModelVersion.Status",
    },
}
