"""Start the real thing for end-to-end tests: the web server (uvicorn, as `make run` starts
it) and Celery worker processes, against the test database and a real Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    db = settings.DATABASES["default"]
    if "postgresql" in db["ENGINE"]:
        return f"postgres://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


class Stack:
    def __init__(
        self, log_dir: Path, model_dir: str | None = None, extra_env: dict | None = None
    ) -> None:
        self.log_dir = log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "webapp.settings.test",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "VERITY_MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "VERITY_MODEL_DIR": model_dir or settings.VERITY_MODEL_DIR,
            "VERITY_CHANNEL_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
            "PYTHONPATH": str(ROOT),
            **(extra_env or {}),
        }
        self.web: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def start_web(self) -> None:
        log = open(self.log_dir / "web.log", "ab")  # noqa: SIM115 - the child keeps writing to it
        self.web = subprocess.Popen(
            [sys.executable, "-m", "webapp.server"],
            cwd=ROOT,
            env={**self.env, "VERITY_HOST": "127.0.0.1", "VERITY_PORT": str(self.port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        # The port may open before the worker processes have loaded the site: wait for an
        # answer, so that a test's first request does not pay for the start-up.
        deadline = time.time() + 60
        while time.time() < deadline and self.web.poll() is None:
            try:
                urllib.request.urlopen(f"{self.url}/accounts/login/", timeout=5).close()
                return
            except urllib.error.HTTPError:
                return  # it answered
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the web server did not start; see {self.log_dir / 'web.log'}")

    def start_worker(
        self, name: str = "w1", queues: str = "inference,training,default", beat: bool = False
    ) -> subprocess.Popen:
        log_path = self.log_dir / f"worker-{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        proc = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "worker.celery",
                "worker",
                "-Q",
                queues,
                "-c",
                "1",
                "--loglevel",
                "INFO",
                "-n",
                f"{name}-{self.port}@%h",
                "--without-mingle",
                "--without-gossip",
                *(["-B", "-s", str(self.log_dir / f"beat-{name}")] if beat else []),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if b"ready." in log_path.read_bytes():
                self.workers.append(proc)
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(
            f"celery worker did not start; see {log_path}:\n{log_path.read_text()[-3000:]}"
        )

    def kill_worker(self, proc: subprocess.Popen) -> None:
        """kill -9 the worker and its pool children, as a crashed machine would."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self.workers.remove(proc)

    def stop(self) -> None:
        for p in [*self.workers, self.web]:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in [*self.workers, self.web]:
            if p is not None:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
