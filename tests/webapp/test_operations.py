from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_it_reports_health_of_database_redis_workers_and_model(client, tiny_model_dir):
    resp = client.get("/health/")
    body = resp.json()
    # Database and Redis answer; the active model is named; with no worker running, 503.
    assert body["database"]["ok"] and body["redis"]["ok"]
    assert body["model"] == {"ok": True, "name": "tiny", "version": "tiny-1"}
    assert "count" in body["workers"]
    assert resp.status_code == (200 if body["workers"]["ok"] else 503)


def test_it_creates_the_first_staff_account_from_the_environment(monkeypatch):
    monkeypatch.setenv("VERITY_ADMIN_USERNAME", "chief")
    monkeypatch.setenv("VERITY_ADMIN_PASSWORD", "a-long-pass-1234")
    out = io.StringIO()
    call_command("ensure_staff", stdout=out)
    user = get_user_model().objects.get(username="chief")
    assert user.is_staff and user.check_password("a-long-pass-1234")
    assert "Sign in at http://127.0.0.1:8000/accounts/login/" in out.getvalue()
    # Run again: nothing new, and it says who can sign in.
    out = io.StringIO()
    call_command("ensure_staff", stdout=out)
    assert get_user_model().objects.filter(is_staff=True).count() == 1 and "chief" in out.getvalue()


def test_it_generates_and_prints_a_password_without_a_terminal(monkeypatch):
    monkeypatch.delenv("VERITY_ADMIN_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())
    out = io.StringIO()
    call_command("ensure_staff", stdout=out)
    printed = out.getvalue().split("Generated password (shown once): ")[1].split()[0]
    assert get_user_model().objects.get(username="admin").check_password(printed)


def test_it_limits_queued_analyses_per_user_with_a_clear_message(
    client, settings, astro_clip, django_user_model
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.VERITY_MAX_QUEUED_PER_USER = 2
    users = [
        django_user_model.objects.create_user(n, password="pw-12345678")
        for n in ("ann", "ben", "cid")
    ]

    def upload(user):
        client.force_login(user)
        return client.post(
            "/analyses/new/",
            {"file": SimpleUploadedFile("c.mp4", astro_clip.read_bytes())},
            HTTP_ACCEPT="application/json",
        )

    # Two users each go over their limit and are told why.
    for user in users[:2]:
        assert [upload(user).status_code for _ in range(2)] == [201, 201]
        over = upload(user)
        assert over.status_code == 400 and "limit is 2" in over.json()["error"]
    # Another user is unaffected.
    assert upload(users[2]).status_code == 201


def test_it_refuses_to_start_with_an_unknown_runtime():
    env = {**os.environ, "VERITY_RUNTIME": "tensorrt"}
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings.local"
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # A typo in the runtime stops the process at start, not every analysis later.
    assert done.returncode != 0
    assert "VERITY_RUNTIME must be auto, onnx or keras, not 'tensorrt'" in done.stderr


def test_a_rerun_counts_against_the_queue_limit_too(client, settings, django_user_model):
    from tests.webapp.conftest import make_analysis
    from webapp.analyses.models import Status

    settings.VERITY_MAX_QUEUED_PER_USER = 2
    user = django_user_model.objects.create_user("dee", password="pw-12345678")
    client.force_login(user)
    finished = make_analysis(user, status=Status.DONE)
    for _ in range(2):
        make_analysis(user)
    resp = client.post(f"/analyses/{finished.id}/rerun/", follow=True)
    assert "limit is 2" in resp.content.decode()
    finished.refresh_from_db()
    assert finished.status == Status.DONE


def test_health_pings_workers_at_most_every_few_seconds_and_names_them_to_staff_only(
    client, tiny_model_dir, monkeypatch, django_user_model
):
    from webapp.api import health
    from worker.celery import app

    pings = []

    def ping(**kw):  # the broker's side: one worker answers
        pings.append(kw)
        return [{"celery@worker-7": {"ok": "pong"}}]

    monkeypatch.setattr(app.control, "ping", ping)
    monkeypatch.setattr(health, "_workers_seen", None)
    # Anonymous callers (a load balancer) learn that a worker is up, not its host name.
    for _ in range(3):
        body = client.get("/health/").json()
        assert body["workers"] == {"ok": True, "count": 1}
    assert len(pings) == 1  # one broadcast serves every request for a few seconds
    staff = django_user_model.objects.create_user("ops", password="pw-12345678", is_staff=True)
    client.force_login(staff)
    assert client.get("/health/").json()["workers"]["names"] == ["celery@worker-7"]
    # Once the result is older than the window, the next request pings again.
    monkeypatch.setattr(health, "WORKERS_TTL", -1.0)
    client.get("/health/")
    assert len(pings) == 2


def test_health_answers_a_signed_in_caller_when_the_session_store_is_down(
    client, tiny_model_dir, monkeypatch, django_user_model
):
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import OperationalError

    from webapp.api import health

    staff = django_user_model.objects.create_user("ops2", password="pw-12345678", is_staff=True)
    client.force_login(staff)
    monkeypatch.setattr(health, "_workers_seen", (float("inf"), {"ok": True, "count": 1}))

    def down(self):  # the database behind the sessions is unreachable
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(SessionStore, "load", down)
    resp = client.get("/health/")
    # The JSON report, not a 500 page: a staff browser open on it during an outage.
    assert resp.status_code in (200, 503) and resp.json()["database"]["ok"] is True
    assert "names" not in resp.json()["workers"]


@pytest.mark.django_db(transaction=True)
def test_parallel_uploads_cannot_both_take_the_last_place_in_the_queue(
    settings, astro_clip, django_user_model, monkeypatch
):
    """Two uploads from one user arrive together with one place left: one is queued, the
    other refused. Storing a clip takes time (here 0.3 s, as for a large file), and a
    count taken before it is stale by the time the row is inserted."""
    import threading
    import time

    from django.core.files.storage import FileSystemStorage
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import connection

    from webapp.analyses.models import Analysis
    from webapp.analyses.submit import create_analysis
    from webapp.analyses.validation import RejectedUpload

    if connection.vendor != "postgresql":
        pytest.skip("the lock under test is PostgreSQL's; SQLite serialises writers")
    settings.VERITY_MAX_QUEUED_PER_USER = 1
    user = django_user_model.objects.create_user("eve", password="pw-12345678")
    other = django_user_model.objects.create_user("fay", password="pw-12345678")
    real_save = FileSystemStorage._save

    def slow_save(self, name, content):  # the disk: slow, as for a large upload
        time.sleep(0.3)
        return real_save(self, name, content)

    monkeypatch.setattr(FileSystemStorage, "_save", slow_save)
    start = threading.Barrier(3)
    outcomes: list[str] = []

    def upload(owner) -> None:
        start.wait()
        try:
            create_analysis(owner, SimpleUploadedFile("c.mp4", astro_clip.read_bytes()))
            outcomes.append(f"{owner.username} queued")
        except RejectedUpload as exc:
            outcomes.append(f"{owner.username} refused: {exc}")
        finally:
            connection.close()

    threads = [threading.Thread(target=upload, args=(u,)) for u in (user, user, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert Analysis.objects.filter(owner=user).count() == 1, outcomes
    assert sorted(o.split(":")[0] for o in outcomes) == ["eve queued", "eve refused", "fay queued"]
    assert Analysis.objects.filter(owner=other).count() == 1


def test_a_second_rerun_of_the_same_analysis_leaves_the_queued_job_and_its_files_alone(
    django_user_model,
):
    """Two clicks on "re-run": the second request read the row before the first queued it.
    It must be refused without deleting anything the queued job owns."""
    from django.core.files.base import ContentFile

    from tests.webapp.conftest import make_analysis
    from webapp.analyses.models import Analysis, Status
    from webapp.analyses.submit import rerun_analysis
    from webapp.analyses.validation import RejectedUpload

    user = django_user_model.objects.create_user("gus", password="pw-12345678")
    done = make_analysis(user, status=Status.DONE)
    stale = Analysis.objects.get(pk=done.pk)  # what the second request read
    rerun_analysis(done)
    done.refresh_from_db()
    assert done.status == Status.QUEUED
    # The queued job's worker has started writing its results.
    done.annotated.save("annotated.mp4", ContentFile(b"new"), save=True)
    with pytest.raises(RejectedUpload, match="Only a finished analysis"):
        rerun_analysis(stale)
    done.refresh_from_db()
    assert done.status == Status.QUEUED and done.annotated.storage.exists(done.annotated.name)
