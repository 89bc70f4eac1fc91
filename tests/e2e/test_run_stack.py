"""`make run`'s last step, scripts/run_stack.py: the web server (uvicorn and its worker
processes) and a Celery worker, and a private Redis when none answers; Ctrl-C stops all of
it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests

from tests.e2e.stack import ROOT, database_url, free_port

pytestmark = pytest.mark.e2e


def test_it_serves_the_site_with_a_worker_and_its_own_redis(
    transactional_db, tmp_path, settings, tiny_bundle
):
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings.test",
        "DATABASE_URL": database_url(),
        # Nothing listens here: the script must start a redis-server of its own.
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "VERITY_PORT": str(port),
        "VERITY_MODEL_DIR": str(tiny_bundle.path),
        "PYTHONPATH": str(ROOT),
    }
    log = open(tmp_path / "stack.log", "wb")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen(
        [sys.executable, "scripts/run_stack.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # The health endpoint answers: database, Redis, a live worker, the model.
        deadline = time.time() + 90
        body = {}
        while time.time() < deadline:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/health/", timeout=3).json()
                if body.get("ok"):
                    break
            except (requests.ConnectionError, ValueError):
                pass
            time.sleep(1)
        output = (tmp_path / "stack.log").read_text()
        assert body.get("ok"), (body, output[-3000:])
        assert body["workers"]["count"] >= 1 and body["model"]["version"] == "tiny-1"
        assert "started a private redis-server" in output
        # Every process it started: the web server and its workers, Celery, Redis.
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4, [c.cmdline() for c in children]
    finally:
        # Ctrl-C stops everything it started.
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], [c.cmdline() for c in alive]
