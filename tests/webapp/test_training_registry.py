"""The model registry and staff-triggered retraining: who may see it, how versions are
promoted and rolled back, user labels, and a real training run through the Celery
`training` queue."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, transaction
from django.test import Client
from rest_framework.test import APIClient

from tests.media import face_folder
from tests.webapp.conftest import make_analysis, make_user
from webapp.analyses import services as analysis_services
from webapp.live.publish import publish_training_run
from webapp.live.routing import websocket_urlpatterns
from webapp.training import registry
from webapp.training.models import ModelVersion, TrainingRun
from webapp.training.services import execute_training_run, start_run

# A Redis database of this module's own for the broker: workers that other tests start
# on the shared test database (9) consume the `training` queue too.
PRIVATE_REDIS_DB = 13


@pytest.fixture
def staff(db):
    return make_user("sam", "pw-sam-123", is_staff=True)


@pytest.fixture
def staff_client(staff):
    # Its own client: a test may use `client` for someone else at the same time.
    c = Client()
    c.force_login(staff)
    return c


@pytest.fixture
def second_bundle(tiny_bundle, tmp_path) -> Path:
    """A copy of the tiny bundle under another version name."""
    path = tmp_path / "bundles" / "tiny-2"
    shutil.copytree(tiny_bundle.path, path)
    meta = json.loads((path / "meta.json").read_text())
    meta["version"] = "tiny-2"
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def _ready(version: str, path: Path | str, **kw) -> ModelVersion:
    return ModelVersion.objects.create(
        version=version,
        bundle_path=str(path),
        status=ModelVersion.Status.READY,
        meta={"input_size": 71, "threshold": 0.5},
        **kw,
    )


# ---- the registry --------------------------------------------------------------------


def test_it_registers_the_shipped_bundle_on_first_use(staff_client, tiny_model_dir):
    # Nothing registered yet: the first visit registers the shipped bundle, active.
    assert not ModelVersion.objects.exists()
    resp = staff_client.get("/staff/models/")
    assert resp.status_code == 200
    shipped = ModelVersion.objects.get()
    assert shipped.status == "active" and shipped.bundle_path == str(tiny_model_dir)
    assert shipped.version == "tiny-1" and shipped.meta["input_size"] == 71
    assert b"tiny-1" in resp.content and b"Retrain" in resp.content

    # Later visits and the API do not register it twice.
    staff_client.get("/staff/models/")
    assert staff_client.get("/api/models/").json()["count"] == 1
    assert registry.active_bundle_path() == str(tiny_model_dir)


def test_an_upgrade_that_replaces_the_shipped_files_gets_a_version_of_its_own(
    staff_client, tiny_bundle, settings, tmp_path
):
    shipped_dir = tmp_path / "default"
    shutil.copytree(tiny_bundle.path, shipped_dir)
    settings.VERITY_MODEL_DIR = str(shipped_dir)
    old = registry.ensure_registered()
    assert (old.version, old.status) == ("tiny-1", "active")

    # The upgrade: new files under the same path, as when models/default went from 2.0 to 2.1.
    meta = json.loads((shipped_dir / "meta.json").read_text())
    meta.update(version="tiny-1.1", parent="tiny-1")
    (shipped_dir / "meta.json").write_text(json.dumps(meta))

    new = registry.ensure_registered()
    assert (new.version, new.status, new.bundle_path) == ("tiny-1.1", "active", str(shipped_dir))
    assert new.parent_id == old.pk and new.activated is not None
    old.refresh_from_db()
    # The old version keeps its record but not the path: its files are gone.
    assert (old.status, old.bundle_path, old.version) == ("retired", "", "tiny-1")
    assert ModelVersion.objects.filter(status="active").count() == 1
    assert registry.active_bundle_path() == str(shipped_dir)

    # Later calls change nothing, and the old version cannot come back: a rollback does not
    # land on it, and promoting it says why.
    assert registry.ensure_registered().pk == new.pk and ModelVersion.objects.count() == 2
    with pytest.raises(registry.PromotionError, match="no previous version"):
        registry.rollback()
    with pytest.raises(registry.PromotionError, match="replaced by an upgrade"):
        registry.promote(old.pk)
    html = staff_client.get("/staff/models/").content.decode()
    assert 'data-version="tiny-1.1"' in html and 'data-version="tiny-1"' in html


def test_it_shows_each_versions_auc_with_its_interval(staff_client, tiny_model_dir, tmp_path):
    held_out = {"all_unseen": {"frame": {"n": 40, "roc_auc": 0.7168, "roc_auc_ci": [0.61, 0.80]}}}
    _ready("with-ci", tmp_path, metrics={"held_out": held_out})
    _ready("no-ci", tmp_path, metrics={"test": {"frame": {"n": 9, "roc_auc": 0.5}}})
    html = staff_client.get("/staff/models/").content.decode()

    def auc_cell(version: str) -> str:
        row = html[html.index(f'data-version="{version}"') :]
        cell = row[row.index('class="auc"') :]
        return cell[: cell.index("</td>")]

    assert "0.717" in auc_cell("with-ci") and "0.61–0.80" in auc_cell("with-ci")
    assert "0.500" in auc_cell("no-ci") and "–0." not in auc_cell("no-ci")


def test_it_promotes_and_rolls_back_with_exactly_one_active_version(
    staff, tiny_model_dir, second_bundle
):
    shipped = registry.ensure_registered()
    new = _ready("tiny-2", second_bundle, parent=shipped, created_by=staff)
    in_flight = analysis_services.get_bundle()
    assert in_flight.meta.version == "tiny-1"

    # Promote: the new version serves, the old one is retired, one active row only.
    registry.promote(new.pk, staff)
    assert list(ModelVersion.objects.filter(status="active")) == [new]
    assert ModelVersion.objects.get(pk=shipped.pk).status == "retired"
    assert registry.active_bundle_path() == str(second_bundle)

    # A new analysis loads the new version without a restart; one in flight keeps the
    # bundle object it started with.
    assert analysis_services.get_bundle().meta.version == "tiny-2"
    assert in_flight.meta.version == "tiny-1"

    # Roll back: the previous version is active again, and the cache follows the path.
    assert registry.previous_version() == shipped
    registry.rollback(staff)
    assert list(ModelVersion.objects.filter(status="active")) == [shipped]
    assert ModelVersion.objects.get(pk=new.pk).status == "retired"
    assert analysis_services.get_bundle().meta.version == "tiny-1"

    # The database itself refuses a second active version.
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=new.pk).update(status="active")


def test_it_refuses_to_promote_a_version_that_cannot_serve(staff, tiny_model_dir, tmp_path):
    registry.ensure_registered()
    failed = ModelVersion.objects.create(version="bad-1", status="failed", bundle_path="")
    missing = _ready("gone-1", tmp_path / "nothing-here")

    # Failed versions and versions without a bundle stay where they are.
    for v in (failed, missing):
        with pytest.raises(registry.PromotionError):
            registry.promote(v.pk, staff)
    assert ModelVersion.objects.get(status="active").version == "tiny-1"

    # Nothing to roll back to before the first promotion.
    with pytest.raises(registry.PromotionError, match="no previous version"):
        registry.rollback(staff)


def test_it_promotes_from_the_api_and_the_page(staff_client, staff, tiny_model_dir, second_bundle):
    shipped = registry.ensure_registered()
    new = _ready("tiny-2", second_bundle)
    api = APIClient()
    api.force_authenticate(staff)

    # The REST API lists the versions and activates one.
    listed = api.get("/api/models/").json()["results"]
    assert {v["version"] for v in listed} == {"tiny-1", "tiny-2"}
    resp = api.post(f"/api/models/{new.pk}/activate/")
    assert resp.status_code == 200 and resp.json()["status"] == "active"
    # A version that cannot be promoted is a 409 with the reason.
    failed = ModelVersion.objects.create(version="bad-1", status="failed")
    resp = api.post(f"/api/models/{failed.pk}/activate/")
    assert resp.status_code == 409 and "failed" in resp.json()["error"]

    # The page's Roll back button brings the shipped version back.
    resp = staff_client.post("/staff/models/rollback/", follow=True)
    assert b"Rolled back" in resp.content
    assert ModelVersion.objects.get(status="active") == shipped
    # And its Promote button goes forward again.
    staff_client.post(f"/staff/models/{new.pk}/promote/")
    assert ModelVersion.objects.get(status="active") == new


# ---- who may see it ------------------------------------------------------------------


def test_it_refuses_everyone_but_staff(client, alice, tiny_model_dir):
    shipped = registry.ensure_registered()
    run = TrainingRun.objects.create(sources={"labelled": True}, params={"epochs": 1})
    api_calls = [
        ("post", "/api/training-runs/", {"labelled": True}),
        ("get", f"/api/training-runs/{run.id}/", None),
        ("post", f"/api/training-runs/{run.id}/cancel/", None),
        ("get", "/api/models/", None),
        ("post", f"/api/models/{shipped.pk}/activate/", None),
        ("post", "/api/models/rollback/", None),
    ]
    pages = [
        ("get", "/staff/models/"),
        ("get", "/staff/models/retrain/"),
        ("post", "/staff/models/retrain/"),
        ("get", f"/staff/models/runs/{run.id}/"),
        ("post", f"/staff/models/runs/{run.id}/cancel/"),
        ("post", f"/staff/models/{shipped.pk}/promote/"),
        ("post", "/staff/models/rollback/"),
    ]

    # Anonymous: the API asks for credentials (401); the pages send to the sign-in page.
    anon = APIClient()
    for method, url, data in api_calls:
        assert getattr(anon, method)(url, data, format="json").status_code == 401, url
    for method, url in pages:
        resp = getattr(client, method)(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/"), url

    # Signed in but not staff, by token or by session: 403 everywhere, no admin login.
    api = APIClient()
    token = api.post("/api/auth/token/", {"username": "alice", "password": "pw-alice-123"})
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    for method, url, data in api_calls:
        assert getattr(api, method)(url, data, format="json").status_code == 403, url
    client.force_login(alice)
    for method, url in pages:
        assert getattr(client, method)(url).status_code == 403, url
    assert b"/staff/models/" not in client.get("/").content

    # Nothing changed behind the refusals.
    assert TrainingRun.objects.get() == run and run.status == "queued"
    assert ModelVersion.objects.get(status="active") == shipped


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_streams_a_run_to_staff_only(tiny_model_dir):
    staff = await sync_to_async(make_user)("sam", "pw-sam-123", is_staff=True)
    alice = await sync_to_async(make_user)("alice")
    run = await sync_to_async(TrainingRun.objects.create)(
        status="running", epoch=1, params={"epochs": 3}, curves={"loss": [0.7]}
    )
    app = URLRouter(websocket_urlpatterns)

    def communicator(user) -> WebsocketCommunicator:
        c = WebsocketCommunicator(app, f"/ws/training-runs/{run.id}/")
        c.scope["user"] = user
        return c

    # Non-staff and anonymous visitors are refused.
    for user in (alice, AnonymousUser()):
        c = communicator(user)
        connected, _ = await c.connect()
        assert not connected
        await c.disconnect()

    # Staff get the row as it is on connect, then each published change.
    c = communicator(staff)
    connected, _ = await c.connect()
    assert connected
    first = await c.receive_json_from(timeout=5)
    assert first["epoch"] == 1 and first["epochs"] == 3 and first["curves"] == {"loss": [0.7]}
    run.epoch, run.curves = 2, {"loss": [0.7, 0.5]}
    await sync_to_async(publish_training_run)(run)
    msg = await c.receive_json_from(timeout=5)
    assert msg["epoch"] == 2 and msg["curves"]["loss"] == [0.7, 0.5]
    await c.disconnect()


# ---- user labels ---------------------------------------------------------------------


def test_it_lets_owners_label_finished_clips_for_staff(
    client, alice, bob, staff_client, tiny_model_dir
):
    done = make_analysis(alice, status="done", verdict_label="real", original_name="party.mp4")
    queued = make_analysis(alice)
    client.force_login(alice)

    # The owner records the truth on a finished analysis, from its page.
    page = client.get(f"/analyses/{done.id}/")
    assert b"This clip is fake" in page.content and b'id="label-card"' in page.content
    resp = client.post(f"/analyses/{done.id}/label/", {"label": "fake"}, follow=True)
    assert b"recorded as fake" in resp.content
    done.refresh_from_db()
    assert done.user_label == "fake" and done.labelled_at is not None

    # Not before it is finished, not with another value, never someone else's clip.
    client.post(f"/analyses/{queued.id}/label/", {"label": "real"})
    queued.refresh_from_db()
    assert queued.user_label == ""
    assert client.post(f"/analyses/{done.id}/label/", {"label": "maybe"}).status_code == 400
    client.force_login(bob)
    assert client.post(f"/analyses/{done.id}/label/", {"label": "real"}).status_code == 404
    done.refresh_from_db()
    assert done.user_label == "fake"

    # Staff see the labelled clip on the Retrain page and can train on it.
    page = staff_client.get("/staff/models/retrain/")
    assert b"party.mp4" in page.content and b"1 fake, 0 real" in page.content

    # The owner can take the label back.
    client.force_login(alice)
    client.post(f"/analyses/{done.id}/label/", {"label": ""})
    done.refresh_from_db()
    assert done.user_label == "" and done.labelled_at is None


def test_it_turns_labelled_clips_into_training_items(alice, staff, astro_clip, tmp_path):
    from webapp.training.services import gather_items

    fake = make_analysis(alice, astro_clip.read_bytes(), status="done", user_label="fake")
    real = make_analysis(alice, astro_clip.read_bytes(), status="done", user_label="real")
    make_analysis(alice, astro_clip.read_bytes(), status="done")  # no label: not used
    run = TrainingRun.objects.create(sources={"labelled": True}, params={})

    # One clip each, labelled as their owners said, each its own group.
    items = sorted(gather_items(run, tmp_path), key=lambda it: it.label)
    assert [(it.label, it.kind, it.source) for it in items] == [
        (0, "video", "labels:users"),
        (1, "video", "labels:users"),
    ]
    assert [it.group for it in items] == [f"labels/{real.id}", f"labels/{fake.id}"]
    assert all(Path(it.path).read_bytes() == astro_clip.read_bytes() for it in items)


# ---- starting runs -------------------------------------------------------------------


def test_it_queues_a_run_from_the_form_and_the_api(
    staff_client, staff, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks
):
    data_dir = face_folder(tmp_path / "faces", 3)
    shipped = registry.ensure_registered()
    form = {
        "dataset": str(data_dir),
        "layout": "auto",
        "compression": "c23",
        "epochs": 2,
        "input_size": 71,
        "batch_size": 8,
        "frames_per_video": 4,
        "fine_tune_from": shipped.pk,
    }

    # The form queues a run on commit and shows its page.
    with django_capture_on_commit_callbacks() as callbacks:
        resp = staff_client.post("/staff/models/retrain/", form)
    run = TrainingRun.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/staff/models/runs/{run.id}/"
    assert len(callbacks) == 1
    assert run.status == "queued" and run.created_by == staff and run.parent == shipped
    assert run.sources == {
        "dataset": str(data_dir),
        "layout": "auto",
        "compression": "c23",
        "labelled": False,
        "labelled_weight": 1.0,
    }
    assert run.params["epochs"] == 2 and run.params["fine_tune_from"] == "tiny-1"
    assert run.params["average_every"] is None  # off unless asked for
    page = staff_client.get(resp["Location"])
    assert page.status_code == 200 and b'id="chart-loss"' in page.content

    # Wrong requests are refused with reasons: no source, no such folder, labelled clips
    # when there are none.
    cases = [
        ({"dataset": ""}, b"at least one data source"),
        ({"dataset": str(tmp_path / "nope")}, b"is not a folder on the server"),
        ({"dataset": "relative/path"}, b"absolute path"),
        ({"labelled": "on"}, b"No clip has been labelled"),
        ({"average_every": 0}, b"greater than or equal to 1"),
        ({"labelled_weight": 0}, b"greater than or equal to 0.1"),
    ]
    for change, reason in cases:
        resp = staff_client.post("/staff/models/retrain/", {**form, **change})
        assert resp.status_code == 200 and reason in resp.content, change
    assert TrainingRun.objects.count() == 1

    # A fine-tune may change its parent's input size ("train small, fine-tune large").
    with django_capture_on_commit_callbacks():
        resp = staff_client.post(
            "/staff/models/retrain/", {**form, "input_size": 96, "average_every": 20}
        )
    larger = TrainingRun.objects.latest("id")
    assert resp.status_code == 302 and larger != run
    assert larger.params["input_size"] == 96 and larger.parent == shipped
    assert larger.params["average_every"] == 20
    page = staff_client.get(f"/staff/models/runs/{larger.id}/")
    assert b"weights averaged every 20 steps" in page.content
    larger.delete()

    # Self-blends made anew every epoch: asked for on its own, it implies self-blends.
    assert run.params["fresh_sbi"] is False
    with django_capture_on_commit_callbacks():
        resp = staff_client.post("/staff/models/retrain/", {**form, "fresh_sbi": "on"})
    fresh = TrainingRun.objects.latest("id")
    assert resp.status_code == 302 and fresh.params["fresh_sbi"] and fresh.params["sbi"]
    page = staff_client.get(f"/staff/models/runs/{fresh.id}/")
    assert b"self-blended fakes made anew every epoch" in page.content
    fresh.delete()

    # The REST API: the form's defaults fill what is not sent; errors are a 400.
    api = APIClient()
    api.force_authenticate(staff)
    with django_capture_on_commit_callbacks() as callbacks:
        resp = api.post(
            "/api/training-runs/", {"dataset": str(data_dir), "input_size": 71}, format="json"
        )
    assert resp.status_code == 201 and len(callbacks) == 1
    body = api.get(f"/api/training-runs/{resp.json()['id']}/").json()
    assert body["status"] == "queued" and body["params"]["epochs"] == 5
    assert api.post("/api/training-runs/", {}, format="json").status_code == 400

    # A queued run can be cancelled; the worker then leaves it alone.
    assert api.post(f"/api/training-runs/{run.id}/cancel/").status_code == 200
    assert execute_training_run(run.id) == "cancelled"
    assert api.post(f"/api/training-runs/{run.id}/cancel/").status_code == 409
    assert ModelVersion.objects.get(status="active") == shipped


def test_it_fails_a_run_with_a_reason_and_leaves_the_active_version(
    staff, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks, settings
):
    settings.VAR_DIR = tmp_path / "var"
    shipped = registry.ensure_registered()
    only_real = face_folder(tmp_path / "faces", 4)
    shutil.rmtree(only_real / "fake")
    params = {"epochs": 1, "input_size": 71, "batch_size": 8, "frames_per_video": 4}

    # Faces of one class only: nothing to learn, said in words.
    with django_capture_on_commit_callbacks():
        run = start_run(staff, {"dataset": str(only_real), "layout": "folder"}, params)
    assert execute_training_run(run.id) == "failed"
    run.refresh_from_db()
    assert "all of one class" in run.error and "active model is unchanged" in run.error
    assert run.finished is not None and "failed:" in run.log

    # A folder that went away between the form and the worker.
    with django_capture_on_commit_callbacks():
        run = start_run(staff, {"dataset": str(tmp_path / "gone")}, params)
    assert execute_training_run(run.id) == "failed"
    run.refresh_from_db()
    assert "does not exist" in run.error

    # The active version never moved, and no version was left half-made.
    assert ModelVersion.objects.get(status="active") == shipped
    assert not ModelVersion.objects.filter(status__in=["training", "ready"]).exists()


def test_it_stops_a_run_cancelled_while_it_extracts(
    staff, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks, settings, monkeypatch
):
    from detector import training
    from webapp.training.services import cancel_run

    settings.VAR_DIR = tmp_path / "var"
    shipped = registry.ensure_registered()
    data_dir = face_folder(tmp_path / "faces", 3)
    with django_capture_on_commit_callbacks():
        run = start_run(
            staff, {"dataset": str(data_dir)}, {"epochs": 1, "input_size": 71, "batch_size": 8}
        )
    real_extract = training.extract_faces

    def extract_then_cancel(items, size, *args, progress=None, **kw):
        # Staff press Cancel while faces are being extracted.
        cancel_run(TrainingRun.objects.get(id=run.id), staff)
        return real_extract(items, size, *args, progress=progress, **kw)

    monkeypatch.setattr(training, "extract_faces", extract_then_cancel)

    # The worker notices at its next progress update and stops; the reason stays.
    assert execute_training_run(run.id) == "cancelled"
    run.refresh_from_db()
    assert run.error.startswith("Cancelled by sam") and "stopped: cancelled" in run.log
    assert ModelVersion.objects.get(status="active") == shipped


def test_the_reaper_requeues_a_silent_run_fails_it_on_its_last_attempt_and_resends_a_lost_one(
    staff, settings, tmp_path, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from webapp.training.services import models_dir, reap_stale_runs

    settings.VAR_DIR = tmp_path / "var"
    sent = []
    monkeypatch.setattr(
        "worker.tasks.run_training.apply_async", lambda args, **kw: sent.append(args[0])
    )
    old = timezone.now() - timedelta(hours=2)
    running = TrainingRun.Status.RUNNING
    dead = TrainingRun.objects.create(status=running, attempts=1, heartbeat=old)
    half_made = models_dir() / "half-made"
    half_made.mkdir(parents=True)
    version = ModelVersion.objects.create(
        version="half-made", bundle_path=str(half_made), status=ModelVersion.Status.TRAINING
    )
    hopeless = TrainingRun.objects.create(
        status=running, attempts=settings.VERITY_MAX_ATTEMPTS, heartbeat=old, model_version=version
    )
    alive = TrainingRun.objects.create(status=running, attempts=1, heartbeat=timezone.now())
    lost = TrainingRun.objects.create(heartbeat=old)  # queued, its message gone

    assert reap_stale_runs() == {"failed": 1, "requeued": 1, "resent": 1}
    for r in (dead, hopeless, alive, lost):
        r.refresh_from_db()
    # The silent run is queued again and sent; the lost one sent again; the live one untouched.
    assert dead.status == "queued" and sorted(sent) == sorted([dead.id, lost.id])
    assert alive.status == "running" and lost.status == "queued"
    # The run that kept dying says why, and its half-made version is failed and removed.
    assert hopeless.status == "failed" and "stopped 3 times" in hopeless.error
    version.refresh_from_db()
    assert version.status == "failed" and not half_made.exists()
    # Once sent, nothing is sent again on the next pass.
    assert reap_stale_runs() == {"failed": 0, "requeued": 0, "resent": 0}


def _tiny_run(staff, tmp_path, settings, on_commit) -> TrainingRun:
    """A queued one-epoch run on a tiny face folder, the shipped version registered."""
    settings.VAR_DIR = tmp_path / "var"
    registry.ensure_registered()
    data_dir = face_folder(tmp_path / "faces", 4)
    params = {"epochs": 1, "input_size": 71, "batch_size": 8, "frames_per_video": 4}
    with on_commit():
        return start_run(staff, {"dataset": str(data_dir), "layout": "folder"}, params)


def test_a_run_weighs_the_labelled_clips_as_staff_asked(
    staff,
    alice,
    astro_clip,
    tiny_model_dir,
    tmp_path,
    settings,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    from detector import training
    from webapp.training.services import LABELLED_SOURCE, labelled_weights

    # Weight 1 (or no labelled clips) adds nothing; another weight covers the clips and
    # their self-blends alike.
    assert labelled_weights({"labelled": True, "labelled_weight": 1.0}) == {}
    assert labelled_weights({"labelled": False, "labelled_weight": 3.0}) == {}
    both = {LABELLED_SOURCE: 3.0, f"sbi:{LABELLED_SOURCE}": 3.0}
    assert labelled_weights({"labelled": True, "labelled_weight": 3.0}) == both

    # A real run on a face folder and six labelled clips, labelled clips weighted 3.
    settings.VAR_DIR = tmp_path / "var"
    registry.ensure_registered()
    for i in range(6):
        label = "fake" if i % 2 else "real"
        make_analysis(alice, astro_clip.read_bytes(), status="done", user_label=label)
    sources = {
        "dataset": str(face_folder(tmp_path / "faces", 4)),
        "layout": "folder",
        "labelled": True,
        "labelled_weight": 3.0,
    }
    params = {"epochs": 1, "input_size": 71, "batch_size": 8, "frames_per_video": 2}
    params |= {"steps_per_epoch": 1, "sbi": True}
    with django_capture_on_commit_callbacks():
        run = start_run(staff, sources, params)
    seen = {}
    real_train = training.train

    def recording_train(train_set, val_set, config, *args, **kwargs):
        seen["sources"], seen["weights"] = set(train_set.sources.tolist()), config.source_weights
        return real_train(train_set, val_set, config, *args, **kwargs)

    monkeypatch.setattr(training, "train", recording_train)
    assert execute_training_run(run.id) == "done"

    # Training got the weight for each labelled source it has (the split decides which:
    # six clips leave one in training all but about once in 1,400 runs), and the
    # version records it.
    assert seen["weights"] == {k: w for k, w in both.items() if k in seen["sources"]}
    assert seen["weights"]
    run.refresh_from_db()
    assert run.model_version.meta["training"]["source_weights"] == seen["weights"]
    page = Client()
    page.force_login(staff)
    assert (
        b"the clips users labelled (weight 3.0)"
        in page.get(f"/staff/models/runs/{run.id}/").content
    )


def test_a_retried_run_discards_the_version_its_dead_attempt_left(
    staff, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks, settings
):
    from webapp.training.services import models_dir

    run = _tiny_run(staff, tmp_path, settings, django_capture_on_commit_callbacks)
    # Attempt 1 made its version and died (its worker was killed): the row points at it.
    left = models_dir() / "attempt-1"
    left.mkdir(parents=True)
    first = ModelVersion.objects.create(
        version="attempt-1", bundle_path=str(left), status=ModelVersion.Status.TRAINING
    )
    TrainingRun.objects.filter(id=run.id).update(model_version=first, attempts=1)

    assert execute_training_run(run.id) == "done"
    run.refresh_from_db()
    first.refresh_from_db()
    assert first.status == "failed" and "Superseded by attempt 2" in first.meta["error"]
    assert not left.exists()
    assert run.model_version.status == "ready" and run.model_version_id != first.id
    assert not ModelVersion.objects.filter(status="training").exists()


def test_a_run_deleted_while_it_trains_is_cleaned_up(
    staff, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks, settings, monkeypatch
):
    from detector import training

    run = _tiny_run(staff, tmp_path, settings, django_capture_on_commit_callbacks)
    real_train = training.train

    def delete_then_train(*args, **kwargs):
        # Staff delete the run in the admin once its version exists.
        TrainingRun.objects.filter(id=run.id).delete()
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training, "train", delete_then_train)
    assert execute_training_run(run.id) == "missing"
    # Its version is failed and its files and work folder are gone.
    made = ModelVersion.objects.exclude(status="active").get()
    assert made.status == "failed" and not Path(made.bundle_path).exists()
    assert not (tmp_path / "var" / "training" / f"run-{run.id}").exists()


def test_a_worker_whose_run_was_taken_over_stops_and_leaves_the_new_attempt_alone(
    staff, tiny_model_dir, tmp_path, django_capture_on_commit_callbacks, settings, monkeypatch
):
    from detector import training
    from webapp.training.services import models_dir

    run = _tiny_run(staff, tmp_path, settings, django_capture_on_commit_callbacks)
    work = tmp_path / "var" / "training" / f"run-{run.id}"
    theirs = {}
    real_train = training.train

    def taken_over_then_train(*args, **kwargs):
        # This worker's beats stopped for minutes; another worker claimed the run (attempt
        # 2), made its own version, and is training in the same work folder.
        folder = models_dir() / "attempt-2"
        folder.mkdir(parents=True)
        theirs["version"] = ModelVersion.objects.create(
            version="attempt-2", bundle_path=str(folder), status=ModelVersion.Status.TRAINING
        )
        TrainingRun.objects.filter(id=run.id).update(attempts=2, model_version=theirs["version"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training, "train", taken_over_then_train)
    # Its next update finds the run no longer its own: it stops, says so, and records nothing.
    assert execute_training_run(run.id) == "running"
    run.refresh_from_db()
    assert (run.status, run.attempts, run.model_version_id) == ("running", 2, theirs["version"].id)
    assert "cancelled" not in run.log and run.error == ""
    # The other attempt's version and the shared work folder are untouched; its own version
    # is failed and removed.
    theirs["version"].refresh_from_db()
    assert theirs["version"].status == "training" and Path(theirs["version"].bundle_path).exists()
    assert work.exists()
    mine = ModelVersion.objects.exclude(id=theirs["version"].id).exclude(status="active").get()
    assert mine.status == "failed" and "lost the run" in mine.meta["error"]
    assert not Path(mine.bundle_path).exists()


# ---- a real run through the training queue -------------------------------------------


@pytest.fixture
def training_stack(transactional_db, tmp_path, tiny_model_dir, settings):
    from django.conf import settings as live

    from tests.e2e.stack import Stack

    host = live.REDIS_URL.rsplit("/", 1)[0]
    broker = f"{host}/{PRIVATE_REDIS_DB}"
    settings.VAR_DIR = tmp_path / "var"
    stack = Stack(
        tmp_path,
        model_dir=str(tiny_model_dir),
        extra_env={"REDIS_URL": broker, "VERITY_VAR_DIR": str(tmp_path / "var")},
    )
    stack.broker = broker
    stack.start_worker("trainer", queues="training")
    yield stack
    stack.stop()


def test_it_trains_a_version_end_to_end_on_the_training_queue(training_stack, tmp_path):
    from worker.celery import app
    from worker.tasks import run_training

    staff = make_user("sam", "pw-sam-123", is_staff=True)
    shipped = registry.ensure_registered()
    data_dir = face_folder(tmp_path / "faces", 6)
    params = {
        "epochs": 1,
        "input_size": 71,
        "batch_size": 8,
        "frames_per_video": 4,
        "steps_per_epoch": 2,
        "average_every": 1,
        "fresh_sbi": True,
    }
    # The row start_run makes, sent the way delay_on_commit sends it, but to this
    # module's broker (start_run itself is covered above).
    run = TrainingRun.objects.create(
        created_by=staff,
        sources={"dataset": str(data_dir), "layout": "auto"},
        params={**params, "fine_tune_from": None},
    )
    with app.connection_for_write(training_stack.broker) as conn:
        run_training.apply_async((run.id,), connection=conn)

    started = time.monotonic()
    deadline = started + 300
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status in ("done", "failed", "cancelled"):
            break
        time.sleep(1)
    elapsed = time.monotonic() - started
    log = (tmp_path / "worker-trainer.log").read_text()[-3000:]

    # The run finished on the training worker, epoch by epoch, with curves.
    assert run.status == "done", f"{run.status}: {run.error}\n{run.log}\n{log}"
    assert run.progress == 100 and run.epoch == 1
    assert len(run.curves["loss"]) == 1 and len(run.curves["val_loss"]) == 1
    print(f"training run through the queue: {elapsed:.1f}s")

    # A new version, ready (not active), with its bundle and test metrics on disk.
    version = run.model_version
    assert version.status == "ready" and version.parent is None and version.created_by == staff
    assert Path(version.bundle_path).parent == tmp_path / "var" / "models"
    assert (Path(version.bundle_path) / "weights.npz").exists()
    assert version.metrics["test"]["frame"]["n"] > 0 and "validation" in version.metrics
    assert version.meta["input_size"] == 71 and 0 < version.meta["threshold"] < 1
    # It trained on self-blends made for each epoch from its real training faces ...
    trained = version.meta["training"]
    assert trained["fresh_faces_per_epoch"] > 0
    # ... and ships the mean of the weights after each of its steps, as the run asked.
    steps = min(math.ceil((trained["train_faces"] + trained["fresh_faces_per_epoch"]) / 8), 2)
    assert trained["average_every"] == 1 and trained["averaged_snapshots"] == steps
    # The training worker exported and verified it for ONNX Runtime, so that inference
    # workers load it from the shared cache instead of converting it themselves.
    from detector import runtime

    record = runtime.cache_dir() / "onnx" / f"{runtime.bundle_key(Path(version.bundle_path))}.json"
    assert json.loads(record.read_text())["max_abs_diff"] <= runtime.PARITY_TOLERANCE

    # The new and the active version were evaluated on the same held-out faces.
    new, active = run.metrics["new"], run.metrics["active"]
    assert new["version"] == version.version and active["version"] == "tiny-1"
    assert new["frame"]["n"] == active["frame"]["n"] == run.metrics["test_faces"] > 0
    # With how much the new one differs in ROC AUC, paired over the same clips.
    diff = run.metrics["auc_difference"]
    if new["frame"]["roc_auc"] is None or active["frame"]["roc_auc"] is None:
        assert diff is None
    else:
        expected = new["frame"]["roc_auc"] - active["frame"]["roc_auc"]
        assert diff["difference"] == pytest.approx(expected)
        assert diff["ci"] is None or diff["ci"][0] <= diff["ci"][1]

    # Training never changes the active version; promotion does, and is picked up.
    assert ModelVersion.objects.get(status="active") == shipped
    registry.promote(version.pk, staff)
    assert analysis_services.get_bundle().meta.version == version.version


@pytest.mark.parametrize("table", ["analysis", "run"])
def test_exactly_one_worker_takes_a_queued_or_silent_job(table, staff):
    """Analyses and training runs share one claim (webapp.jobrow.JobRow.claim)."""
    from datetime import timedelta

    from django.utils import timezone

    from webapp.analyses.models import Analysis

    def fresh(**fields):
        if table == "analysis":
            return make_analysis(staff, **fields)
        return TrainingRun.objects.create(created_by=staff, **fields)

    Row = Analysis if table == "analysis" else TrainingRun
    stale = timedelta(minutes=5)
    queued = fresh(status="queued")
    first, second = Row.objects.get(pk=queued.pk), Row.objects.get(pk=queued.pk)
    assert first.claim(stale) and not second.claim(stale)
    assert (first.status, first.attempts, first.stage) == ("running", 1, "starting")

    live = fresh(status="running", heartbeat=timezone.now(), attempts=1)
    assert not live.claim(stale)

    silent = fresh(status="running", heartbeat=timezone.now() - 2 * stale, attempts=1)
    # Two workers that both read the row as silent: one takes it over.
    a, b = Row.objects.get(pk=silent.pk), Row.objects.get(pk=silent.pk)
    assert a.claim(stale) and not b.claim(stale)
    a.refresh_from_db()
    assert a.attempts == 2 and timezone.now() - a.heartbeat < stale

    done = fresh(status="done")
    assert not done.claim(stale)
