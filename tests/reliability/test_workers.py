"""The queue under failure, with real Redis, PostgreSQL and Celery worker processes."""

from __future__ import annotations

import os

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.e2e.stack import Stack
from tests.media import astronaut_clip
from tests.reliability.conftest import FAST, PrivateRedis, wait_for
from webapp.analyses.models import Analysis, Status
from webapp.analyses.submit import create_analysis

pytestmark = pytest.mark.e2e


def _status(a: Analysis) -> Analysis:
    a.refresh_from_db()
    return a


@pytest.fixture
def long_clip(tmp_path_factory):
    return astronaut_clip(tmp_path_factory.mktemp("clips") / "long.mp4", 300)


def test_it_finishes_a_job_whose_worker_was_killed_with_exactly_one_result(
    fast_stack, long_clip, django_user_model
):
    user = django_user_model.objects.create_user("kim", password="pw-kim-12345")
    worker = fast_stack.start_worker("doomed", beat=True)
    a = create_analysis(user, SimpleUploadedFile("long.mp4", long_clip.read_bytes()))

    # kill -9 the worker (and its pool process) in the middle of the analysis.
    wait_for(
        lambda: _status(a).status == Status.RUNNING and a.progress >= 12,
        90,
        "the job to be under way",
    )
    fast_stack.kill_worker(worker)
    assert _status(a).status == Status.RUNNING

    # A new worker (with the periodic reaper) takes it over and finishes it.
    fast_stack.start_worker("rescuer", beat=True)
    wait_for(lambda: _status(a).status in (Status.DONE, Status.FAILED), 120, "the job to finish")
    assert a.status == Status.DONE, a.error
    assert a.attempts == 2
    # Exactly one result: one transition to done, one annotated video.
    transitions = [(t.old, t.new) for t in a.transitions.all()]
    assert transitions.count(("running", "done")) == 1
    assert ("running", "queued") in transitions
    results_dir = os.path.dirname(a.annotated.path)
    assert sorted(os.listdir(results_dir)).count("annotated.mp4") == 1


def test_it_cancels_a_running_job_frees_the_worker_and_removes_files(
    fast_stack, long_clip, django_user_model
):
    user = django_user_model.objects.create_user("lee", password="pw-lee-12345")
    token = _token(user)
    fast_stack.start_worker("w1")
    a = create_analysis(user, SimpleUploadedFile("long.mp4", long_clip.read_bytes()))
    wait_for(
        lambda: _status(a).status == Status.RUNNING and a.progress >= 12,
        90,
        "the job to be under way",
    )

    # Cancel through the API: the worker stops within seconds.
    resp = requests.post(
        f"{fast_stack.url}/api/analyses/{a.id}/cancel/",
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    log = fast_stack.log_dir / "worker-w1.log"
    wait_for(
        lambda: f"analysis {a.id}: cancelled" in log.read_text(), 15, "the worker to stop the job"
    )
    assert _status(a).status == Status.CANCELLED and not a.annotated
    results_dir = os.path.join(
        os.path.dirname(os.path.dirname(a.original.path)).replace("uploads", "results"), str(a.id)
    )
    assert not os.path.exists(results_dir) or os.listdir(results_dir) == []

    # The worker is free: the next job runs to the end.
    b = create_analysis(
        user,
        SimpleUploadedFile(
            "next.mp4", astronaut_clip(fast_stack.log_dir / "short.mp4", 20).read_bytes()
        ),
    )
    wait_for(lambda: _status(b).status == Status.DONE, 90, "the next job to finish")


def test_it_recovers_when_redis_restarts_mid_run(
    transactional_db, tmp_path, settings, tiny_bundle, long_clip, django_user_model
):
    redis = PrivateRedis()
    redis.start()
    settings.MEDIA_ROOT = tmp_path / "media"
    stack = Stack(
        tmp_path, model_dir=str(tiny_bundle.path), extra_env={**FAST, "REDIS_URL": redis.url}
    )
    try:
        stack.start_web()
        stack.start_worker("w1", beat=True)
        user = django_user_model.objects.create_user("max", password="pw-max-12345")
        headers = {"Authorization": f"Token {_token(user)}"}

        def upload(name: str, path) -> str:
            with open(path, "rb") as fh:
                resp = requests.post(
                    f"{stack.url}/api/analyses/",
                    headers=headers,
                    files={"file": (name, fh)},
                    timeout=30,
                )
            assert resp.status_code == 201, resp.text
            return resp.json()["id"]

        first = Analysis.objects.get(id=upload("long.mp4", long_clip))
        wait_for(lambda: _status(first).status == Status.RUNNING, 90, "the job to start")

        # Redis goes away and comes back empty (no persistence), mid-run.
        redis.stop()
        redis.start()

        # The running job still finishes; the site answers; new work flows without manual steps.
        wait_for(lambda: _status(first).status == Status.DONE, 120, "the first job to finish")
        assert (
            requests.get(f"{stack.url}/api/analyses/", headers=headers, timeout=10).status_code
            == 200
        )
        second = Analysis.objects.get(
            id=upload("short.mp4", astronaut_clip(tmp_path / "short.mp4", 20))
        )
        wait_for(
            lambda: _status(second).status == Status.DONE,
            120,
            "a job sent after the restart to finish",
        )
    finally:
        stack.stop()
        redis.stop()


def _token(user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=user).key
