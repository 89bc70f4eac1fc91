"""Test settings: PostgreSQL at 127.0.0.1:5432 when it answers, else SQLite."""

from __future__ import annotations

import os
from pathlib import Path

from webapp.localredis import answers, start_private_redis, url_answers
from webapp.settings.base import *  # noqa: F403
from webapp.settings.base import VAR_DIR, database, env

# The same connection pool as the site's, so that the tests exercise it; the end-to-end
# servers get the test database's URL.
if env.str("DATABASE_URL", default=""):
    DATABASES = {"default": database(env.str("DATABASE_URL"))}
elif answers("127.0.0.1", 5432):
    DATABASES = {
        "default": {
            **database("postgres://postgres@127.0.0.1:5432/verity"),
            # One database per test run, so that concurrent runs never collide.
            "TEST": {"NAME": env.str("VERITY_TEST_DB", default=f"test_verity_{os.getpid()}")},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "test.sqlite3"),
            "TEST": {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")},
        }
    }
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = Path(env.str("VERITY_MEDIA_ROOT", default=str(VAR_DIR / "test-media")))
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


# Database 9: tests never share queues with a development worker on database 0.
_redis = env.str("REDIS_URL", default="redis://127.0.0.1:6379/9")
if not url_answers(_redis):
    # Tests start what they need: a private redis-server when none answers.
    import atexit

    _redis, _proc = start_private_redis()
    atexit.register(_proc.terminate)
    os.environ["REDIS_URL"] = _redis
REDIS_URL = _redis
CELERY_BROKER_URL = REDIS_URL
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [REDIS_URL]  # noqa: F405
