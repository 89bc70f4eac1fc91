"""Test settings: PostgreSQL at 127.0.0.1:5432 when it answers, else SQLite."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from webapp.settings.base import *  # noqa: F403
from webapp.settings.base import VAR_DIR, env


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


if env.str("DATABASE_URL", default=""):
    DATABASES = {"default": env.db_url("DATABASE_URL")}
elif _answers("127.0.0.1", 5432):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "verity",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": 5432,
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


def _private_redis() -> str:
    """Tests start what they need: a private redis-server when none answers."""
    import atexit
    import shutil
    import subprocess
    import tempfile
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("No Redis answers at REDIS_URL and redis-server is not installed.")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tempfile.mkdtemp(),
        ],
        stdout=subprocess.DEVNULL,
    )
    atexit.register(proc.terminate)
    for _ in range(50):
        if _answers("127.0.0.1", port):
            break
        time.sleep(0.1)
    return f"redis://127.0.0.1:{port}/0"


# Database 9: tests never share queues with a development worker on database 0.
_redis = env.str("REDIS_URL", default="redis://127.0.0.1:6379/9")
_host, _, _rest = _redis.removeprefix("redis://").partition(":")
if not _answers(_host or "127.0.0.1", int((_rest.split("/")[0]) or 6379)):
    import os

    os.environ["REDIS_URL"] = _redis = _private_redis()
REDIS_URL = _redis
CELERY_BROKER_URL = REDIS_URL
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [REDIS_URL]  # noqa: F405
