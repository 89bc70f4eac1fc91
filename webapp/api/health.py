"""GET /health/: database, Redis, live workers and the active model version.

Anyone may ask (load balancers, compose healthchecks), so the costly part, a broadcast
ping that waits a second for the workers' replies, is shared for WORKERS_TTL seconds by
every request of the process, and the workers' host names are shown to staff only.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse


def _database() -> dict:
    try:
        with connection.cursor() as c:
            c.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": type(exc).__name__}


def _redis() -> dict:
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": type(exc).__name__}


WORKERS_TTL = 5.0
_workers_lock = threading.Lock()
_workers_seen: tuple[float, dict] | None = None  # (monotonic time, result)


def _ping_workers() -> dict:
    from worker.celery import app

    try:
        replies = app.control.ping(timeout=1.0) or []
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "count": 0, "error": type(exc).__name__}
    names = sorted(name for reply in replies for name in reply)
    return {"ok": bool(names), "count": len(names), "names": names}


def _workers() -> dict:
    """The last ping's result if under WORKERS_TTL old; one request pings at a time."""
    global _workers_seen
    with _workers_lock:
        if _workers_seen is None or time.monotonic() - _workers_seen[0] > WORKERS_TTL:
            _workers_seen = (time.monotonic(), _ping_workers())
        return dict(_workers_seen[1])


def _model() -> dict:
    from webapp.training.registry import active_bundle_path

    path = Path(active_bundle_path())
    try:
        meta = json.loads((path / "meta.json").read_text())
        return {"ok": True, "name": meta.get("name"), "version": meta.get("version")}
    except (OSError, ValueError) as exc:
        return {"ok": False, "error": type(exc).__name__}


def _is_staff(request: HttpRequest) -> bool:
    """Whether the caller is signed-in staff. Reading the session needs the database: when
    that is down the answer must still be the 503 report, not a 500."""
    try:
        return bool(request.user.is_authenticated and request.user.is_staff)
    except Exception:  # noqa: BLE001 - the database check above already says what failed
        return False


def health(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database(), "redis": _redis(), "workers": _workers(), "model": _model()}
    if not _is_staff(request):
        checks["workers"].pop("names", None)
    ok = all(c["ok"] for c in checks.values())
    return JsonResponse({"ok": ok, **checks}, status=200 if ok else 503)
