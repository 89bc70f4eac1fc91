"""Run the whole site on one machine: Redis (if none answers), the ASGI server and a
Celery worker. Ctrl-C stops all of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from webapp import localredis

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def start_private_redis(procs: list[subprocess.Popen]) -> str:
    try:
        url, proc = localredis.start_private_redis()
    except RuntimeError as exc:
        sys.exit(str(exc))
    procs.append(proc)
    print(
        f"No Redis answered at the configured URL: started a private redis-server at {url}",
        flush=True,
    )
    return url


def name(proc: subprocess.Popen) -> str:
    # "celery", "redis-server", or the module that python -m runs ("webapp.server").
    args = [str(a) for a in proc.args]
    return args[2] if args[1:2] == ["-m"] else Path(args[0]).name


def main() -> None:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")
    (ROOT / "var").mkdir(exist_ok=True)
    host, port = env.get("VERITY_HOST", "127.0.0.1"), env.get("VERITY_PORT", "8000")
    procs: list[subprocess.Popen] = []
    redis_url = env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if not localredis.url_answers(redis_url):
        redis_url = start_private_redis(procs)
        env["REDIS_URL"] = redis_url
    env["VERITY_HOST"], env["VERITY_PORT"] = host, port
    # uvicorn, one process per core (VERITY_WEB_WORKERS): see webapp/server.py.
    procs.append(subprocess.Popen([sys.executable, "-m", "webapp.server"], cwd=ROOT, env=env))
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
                print(f"{name(p)} exited with status {p.returncode}; stopping.", flush=True)
                stop()
        time.sleep(0.5)


if __name__ == "__main__":
    main()
