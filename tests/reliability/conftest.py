from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

import pytest

from tests.e2e.stack import Stack, free_port
from webapp.localredis import start_private_redis

# Short clocks so that recovery happens within a test's patience.
FAST = {
    "VERITY_STALE_SECONDS": "6",
    "VERITY_REAPER_INTERVAL": "2",
    "VERITY_RESEND_QUEUED_SECONDS": "6",
}


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class PrivateRedis:
    """A redis-server of the test's own, so that it can be stopped and started."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if not self.binary:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="verity-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        _url, self.proc = start_private_redis(self.port, self.dir)
        wait_for(lambda: _answers(self.port), 10, "redis to start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


@pytest.fixture
def fast_stack(transactional_db, tmp_path, settings, tiny_bundle):
    settings.MEDIA_ROOT = tmp_path / "media"
    for k, v in FAST.items():
        setattr(settings, k, int(v) if k != "VERITY_REAPER_INTERVAL" else float(v))
    s = Stack(tmp_path, model_dir=str(tiny_bundle.path), extra_env=FAST)
    s.start_web()
    yield s
    s.stop()
