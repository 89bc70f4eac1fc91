"""The plain function behind the Celery task, on a real clip and a real (tiny) model."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from tests.webapp.conftest import make_analysis
from webapp.analyses import services, submit
from webapp.analyses.models import Analysis, Status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("carol", password="pw-carol-123")


def test_it_runs_an_analysis_to_done_with_one_result(owner, astro_clip, tiny_model_dir):
    a = make_analysis(owner, astro_clip.read_bytes())
    assert services.execute_analysis(str(a.id)) == Status.DONE
    a.refresh_from_db()
    # The row holds the verdict, the report, the model version and the annotated video.
    assert a.progress == 100 and a.stage == "done" and a.finished is not None
    assert a.verdict["label"] in ("real", "fake", "uncertain")
    assert a.report["video"]["frame_count"] == 30 and a.duration == pytest.approx(1.2)
    assert a.model_version == "tiny-1"
    assert a.annotated.size > 1000 and a.thumbnail
    # The owner can fetch the face crops of each track.
    from django.test import Client

    c = Client()
    c.force_login(owner)
    resp = c.get(f"/analyses/{a.id}/faces/0.jpg")
    assert resp.status_code == 200 and resp["Content-Type"] == "image/jpeg"
    assert b"".join(resp.streaming_content)[:2] == b"\xff\xd8"
    # Each transition is logged.
    assert [(t.old, t.new) for t in a.transitions.all()] == [
        ("queued", "running"),
        ("running", "done"),
    ]
    # A second delivery of the same task changes nothing.
    finished = a.finished
    assert services.execute_analysis(str(a.id)) == Status.DONE
    a.refresh_from_db()
    assert a.finished == finished and a.transitions.count() == 2


def test_it_records_a_clear_failure_for_a_bad_file(owner, tiny_model_dir):
    a = make_analysis(owner, b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    assert services.execute_analysis(str(a.id)) == Status.FAILED
    a.refresh_from_db()
    assert a.error_code in ("unreadable_video", "no_video_stream") and "video" in a.error


def test_it_stops_and_cleans_up_when_cancelled_mid_run(
    owner, astro_clip, tiny_model_dir, monkeypatch
):
    a = make_analysis(owner, astro_clip.read_bytes())
    seen = []

    def cancel_on_detect(analysis):
        seen.append(analysis.stage)
        if analysis.stage == "detecting":
            Analysis.objects.filter(id=analysis.id).update(status=Status.CANCELLED)

    monkeypatch.setattr(services, "publish_analysis", cancel_on_detect)
    assert services.execute_analysis(str(a.id)) == Status.CANCELLED
    a.refresh_from_db()
    assert not a.annotated and "rendering" not in seen
    assert not os.path.exists(
        os.path.dirname(a.original.path).replace("uploads", "results")
    ) or not os.listdir(os.path.dirname(a.original.path).replace("uploads", "results"))


def test_it_ignores_a_job_whose_row_was_deleted(owner, tiny_model_dir):
    a = make_analysis(owner)
    a_id = str(a.id)
    a.delete()
    assert services.execute_analysis(a_id) == "missing"


def test_it_takes_over_a_running_job_whose_worker_went_silent(owner, astro_clip, tiny_model_dir):
    from datetime import timedelta

    from django.utils import timezone

    a = make_analysis(owner, astro_clip.read_bytes(), status=Status.RUNNING, attempts=1)
    Analysis.objects.filter(id=a.id).update(heartbeat=timezone.now() - timedelta(minutes=10))
    assert services.execute_analysis(str(a.id)) == Status.DONE
    a.refresh_from_db()
    assert a.attempts == 2


def test_it_leaves_a_live_running_job_alone(owner, tiny_model_dir):
    from django.utils import timezone

    a = make_analysis(owner, status=Status.RUNNING, heartbeat=timezone.now(), attempts=1)
    assert services.execute_analysis(str(a.id)) == Status.RUNNING


def test_it_gives_up_after_too_many_attempts(owner, tiny_model_dir):
    a = make_analysis(owner, status=Status.RUNNING, attempts=3)
    assert services.execute_analysis(str(a.id)) == Status.FAILED
    a.refresh_from_db()
    assert a.error_code == "too_many_attempts"


def test_a_duplicate_delivery_leaves_a_live_job_on_its_last_attempt_alone(owner, tiny_model_dir):
    from django.utils import timezone

    # Its worker is alive (fresh heartbeat): a second message for it must not fail it.
    a = make_analysis(owner, status=Status.RUNNING, attempts=3, heartbeat=timezone.now())
    assert services.execute_analysis(str(a.id)) == Status.RUNNING
    a.refresh_from_db()
    assert a.status == Status.RUNNING and a.error_code == ""


def test_it_says_missing_when_the_row_is_deleted_while_it_runs(
    owner, astro_clip, tiny_model_dir, monkeypatch
):
    a = make_analysis(owner, astro_clip.read_bytes())
    real = services.analyse_video

    def deleted_first(*args, **kwargs):
        # The owner deletes it as it starts: the next progress update finds no row.
        Analysis.objects.filter(id=a.id).delete()
        return real(*args, **kwargs)

    monkeypatch.setattr(services, "analyse_video", deleted_first)
    assert services.execute_analysis(str(a.id)) == "missing"


def test_the_annotated_file_is_stored_through_the_storage_api(owner, astro_clip, tiny_model_dir):
    a = make_analysis(owner, astro_clip.read_bytes())
    a.annotated.save("stale.mp4", ContentFile(b"old"), save=True)
    services.execute_analysis(str(a.id))
    a.refresh_from_db()
    assert a.annotated.name.endswith("annotated.mp4")


def test_it_defers_a_job_while_its_owner_is_at_the_running_limit(
    owner, astro_clip, tiny_model_dir, settings
):
    from django.utils import timezone

    settings.VERITY_MAX_RUNNING_PER_USER = 1
    make_analysis(owner, status=Status.RUNNING, heartbeat=timezone.now())
    long_ago = timezone.now() - timedelta(hours=1)
    waiting = make_analysis(owner, astro_clip.read_bytes(), heartbeat=long_ago)
    # Not started: it waits (the task re-sends itself) while another of theirs runs.
    assert services.execute_analysis(str(waiting.id)) == services.DEFERRED
    waiting.refresh_from_db()
    assert waiting.status == Status.QUEUED and waiting.attempts == 0
    # Its heartbeat says a message for it is alive, so the reaper does not send another.
    assert waiting.heartbeat > long_ago
    assert services.reap_stale()["resent"] == 0


def test_the_reaper_requeues_a_job_whose_worker_died_and_fails_it_after_too_many(
    owner, settings, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    sent, limits = [], []

    def apply_async(args, **kw):
        sent.append(args[0])
        limits.append((kw.get("soft_time_limit"), kw.get("time_limit")))

    monkeypatch.setattr("worker.tasks.run_analysis.apply_async", apply_async)
    old = timezone.now() - timedelta(seconds=settings.VERITY_STALE_SECONDS + 5)
    dead = make_analysis(owner, status=Status.RUNNING, attempts=1)
    hopeless = make_analysis(owner, status=Status.RUNNING, attempts=settings.VERITY_MAX_ATTEMPTS)
    alive = make_analysis(owner, status=Status.RUNNING, attempts=1)
    Analysis.objects.filter(id__in=[dead.id, hopeless.id]).update(heartbeat=old)
    Analysis.objects.filter(id=alive.id).update(heartbeat=timezone.now())

    counts = services.reap_stale()
    assert counts["requeued"] == 1 and counts["failed"] == 1
    dead.refresh_from_db(), hopeless.refresh_from_db(), alive.refresh_from_db()
    # The dead worker's job is queued again and re-sent; the hopeless one says why it failed.
    assert dead.status == Status.QUEUED and sent == [str(dead.id)]
    # With time limits scaled to the clip, as when it was first sent (unreadable here).
    assert limits == [submit.time_limits(None)]
    assert hopeless.status == Status.FAILED and hopeless.error_code == "too_many_attempts"
    assert alive.status == Status.RUNNING


def test_it_judges_faces_by_the_analysis_minimum_width_or_the_sites(
    owner, astro_clip, tiny_model_dir, settings
):
    # The site's default: above the astronaut's face width, so it is not judged.
    settings.VERITY_MIN_FACE = 1000
    a = make_analysis(owner, astro_clip.read_bytes())
    assert services.execute_analysis(str(a.id)) == Status.DONE
    a.refresh_from_db()
    assert a.report["options"]["min_face"] == 1000
    assert a.verdict_label == "uncertain" and "under 1000 px" in a.verdict["note"]
    assert a.report["tracks"][0]["note"]

    # An analysis that asked for every face to be judged is, whatever the site's default.
    b = make_analysis(owner, astro_clip.read_bytes())
    Analysis.objects.filter(id=b.id).update(min_face=0)
    assert services.execute_analysis(str(b.id)) == Status.DONE
    b.refresh_from_db()
    assert b.report["options"]["min_face"] == 0
    assert b.verdict["note"] == "" and b.report["tracks"][0]["note"] == ""


def test_the_heartbeat_keeps_beating_after_a_failed_beat():
    import threading

    from webapp.heartbeat import Heartbeat

    class Rows:
        """Fails its first update (a dropped database connection), then counts."""

        def __init__(self) -> None:
            self.calls = 0
            self.third = threading.Event()

        def update(self, **fields) -> int:
            self.calls += 1
            if self.calls == 1:
                raise OSError("connection reset")
            if self.calls >= 3:
                self.third.set()
            return 1

    rows = Rows()
    with Heartbeat(rows, 0.01, "test-heartbeat"):
        # Beats go on after the failure.
        assert rows.third.wait(5)


def test_a_deferred_job_is_sent_again_with_its_own_time_limits(
    owner, astro_clip, tiny_model_dir, settings, monkeypatch
):
    from django.utils import timezone

    from worker.tasks import run_analysis

    settings.VERITY_MAX_RUNNING_PER_USER = 1
    make_analysis(owner, status=Status.RUNNING, heartbeat=timezone.now())
    waiting = make_analysis(owner, astro_clip.read_bytes())
    sent = []
    monkeypatch.setattr(run_analysis, "apply_async", lambda args, **kw: sent.append((args, kw)))
    # Delivered with limits scaled to a long clip; deferred; re-sent with the same limits,
    # not the task's 30-minute defaults.
    # (Eager apply() would take the task's defaults, so the delivery is a pushed request,
    # as the worker's is: timelimit (hard, soft).)
    run_analysis.push_request(timelimit=(4060, 4000))
    try:
        assert run_analysis.run(str(waiting.id)) == services.DEFERRED
    finally:
        run_analysis.pop_request()
    assert sent == [
        ((str(waiting.id),), {"countdown": 5, "time_limit": 4060, "soft_time_limit": 4000})
    ]


def test_a_fresh_upload_whose_message_was_lost_is_sent_again(
    owner, astro_clip, settings, monkeypatch
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from worker.tasks import run_analysis

    sent = []
    # The broker loses the first message (a Redis restarted empty): nothing is delivered.
    monkeypatch.setattr(run_analysis, "apply_async_on_commit", lambda *a, **kw: None)
    monkeypatch.setattr(run_analysis, "apply_async", lambda args, **kw: sent.append(args[0]))
    fresh = submit.create_analysis(owner, SimpleUploadedFile("c.mp4", astro_clip.read_bytes()))
    # A row from before uploads stamped a heartbeat: none at all.
    legacy = make_analysis(owner)
    assert fresh.heartbeat is not None and legacy.heartbeat is None
    settings.VERITY_RESEND_QUEUED_SECONDS = 0
    assert services.reap_stale()["resent"] == 2
    assert sorted(sent) == sorted([str(fresh.id), str(legacy.id)])


def _take_over_midway(monkeypatch, a: Analysis, take_over) -> None:
    """Run `take_over()` once, when the first worker starts rendering."""
    real, done = services.publish_analysis, []

    def hook(analysis):
        real(analysis)
        if analysis.stage == "rendering" and not done:
            done.append(True)
            take_over()

    monkeypatch.setattr(services, "publish_analysis", hook)


def test_a_worker_that_lost_its_job_leaves_the_new_holders_results_alone(
    owner, astro_clip, tiny_model_dir, monkeypatch
):
    from django.test import Client

    a = make_analysis(owner, astro_clip.read_bytes())

    def second_worker_runs_it_to_the_end():
        # The reaper thought the first worker dead; a second one takes it and finishes.
        Analysis.objects.filter(id=a.id).update(status=Status.QUEUED)
        assert services.execute_analysis(str(a.id)) == Status.DONE

    _take_over_midway(monkeypatch, a, second_worker_runs_it_to_the_end)
    # The first worker finds the job is no longer its own and stops, deleting nothing.
    assert services.execute_analysis(str(a.id)) == Status.DONE
    a.refresh_from_db()
    assert a.attempts == 2 and a.transitions.filter(new="done").count() == 1
    c = Client()
    c.force_login(owner)
    for path in ("video/", "thumbnail.jpg", "faces/0.jpg"):
        assert c.get(f"/analyses/{a.id}/{path}").status_code == 200, path


def test_a_worker_that_lost_its_job_while_saving_leaves_the_new_holders_face_strips(
    owner, astro_clip, tiny_model_dir, monkeypatch
):
    """The narrowest window: the first worker checked that it still held the job, and
    loses it while storing its images. Its strips must neither replace the new holder's
    nor take them away when it deletes what it wrote."""
    from django.test import Client

    a = make_analysis(owner, astro_clip.read_bytes())
    real_save_images = services._save_images
    calls: list[str] = []

    def save_images(analysis, artifacts, lease, written):
        calls.append(lease)
        if len(calls) == 1:  # the first worker, about to save: a second one finishes
            Analysis.objects.filter(id=a.id).update(status=Status.QUEUED)
            assert services.execute_analysis(str(a.id)) == Status.DONE
            holder = Analysis.objects.get(id=a.id)
            kept["strip"] = holder.track_crop_name(0)
            with default_storage.open(kept["strip"], "rb") as fh:
                kept["bytes"] = fh.read()
            # The first worker's strip differs (say, another frame sample).
            artifacts.track_crops[0] = [c[:, ::-1].copy() for c in artifacts.track_crops[0]]
        real_save_images(analysis, artifacts, lease, written)

    kept: dict = {}
    monkeypatch.setattr(services, "_save_images", save_images)
    assert services.execute_analysis(str(a.id)) == Status.DONE
    a.refresh_from_db()
    assert len(calls) == 2 and a.lease == calls[1] != calls[0]
    assert a.transitions.filter(new="done").count() == 1
    c = Client()
    c.force_login(owner)
    resp = c.get(f"/analyses/{a.id}/faces/0.jpg")
    assert resp.status_code == 200 and b"".join(resp.streaming_content) == kept["bytes"]
    # Nothing of the first worker's is left behind either.
    _dirs, files = default_storage.listdir(f"results/{owner.id}/{a.id}/")
    assert not [f for f in files if calls[0] in f]


def test_a_worker_that_lost_its_job_cannot_finish_it_under_the_new_holder(
    owner, astro_clip, tiny_model_dir, monkeypatch
):
    a = make_analysis(owner, astro_clip.read_bytes())

    def second_worker_claims_it():
        Analysis.objects.filter(id=a.id).update(status=Status.QUEUED)
        other = Analysis.objects.get(id=a.id)
        assert other.claim(services.stale_after(), lease="second-worker")

    _take_over_midway(monkeypatch, a, second_worker_claims_it)
    # Still running, under the second worker: the first neither finished it nor moved it.
    assert services.execute_analysis(str(a.id)) == Status.RUNNING
    a.refresh_from_db()
    assert a.lease == "second-worker" and a.stage == "starting" and a.progress == 0
    assert a.report is None and not a.annotated
