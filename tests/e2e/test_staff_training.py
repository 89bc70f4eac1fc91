"""Staff retrain and promote in a real browser: real ASGI server, a real Celery worker
on the `training` queue, real Redis and PostgreSQL, Chromium."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import screenshot, sign_in
from tests.e2e.stack import Stack
from tests.media import face_folder
from webapp.training.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.e2e

# A Redis database of this module's own for the broker and the channel layer: workers
# that other tests start on the shared test database consume `training` too.
PRIVATE_REDIS_DB = 14


@pytest.fixture
def training_stack(transactional_db, tmp_path, settings, tiny_model_dir):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VAR_DIR = tmp_path / "var"
    broker = settings.REDIS_URL.rsplit("/", 1)[0] + f"/{PRIVATE_REDIS_DB}"
    s = Stack(
        tmp_path,
        model_dir=str(tiny_model_dir),
        # The Keras runtime: the ONNX export after training is checked by the registry's
        # queue test; skipping it here saves the suite about 20 s.
        extra_env={
            "REDIS_URL": broker,
            "VERITY_VAR_DIR": str(tmp_path / "var"),
            "VERITY_RUNTIME": "keras",
        },
    )
    s.start_web()
    s.start_worker("trainer", queues="training")
    yield s
    s.stop()


def test_it_retrains_and_promotes_from_the_staff_pages(
    training_stack, page, django_user_model, tmp_path
):
    base = training_stack.url
    django_user_model.objects.create_user("sam", password="pw-sam-123", is_staff=True)
    data_dir = face_folder(tmp_path / "faces", 6)

    # Staff find the models page from the menu: the shipped version, active.
    sign_in(page, base, "sam", "pw-sam-123")
    page.click("nav >> text=Models")
    page.wait_for_url(f"{base}/staff/models/")
    row = page.locator("#versions tr[data-version='tiny-1']")
    assert row.get_attribute("data-status") == "active"

    # The Retrain form: a folder of real/ and fake/ faces, one short epoch at 71 px.
    page.click("#retrain-link")
    page.fill("#id_dataset", str(data_dir))
    page.fill("#id_epochs", "1")
    page.fill("#id_input_size", "71")
    page.fill("#id_batch_size", "8")
    page.fill("#id_frames_per_video", "4")
    page.fill("#id_steps_per_epoch", "2")
    screenshot(page, "staff-retrain")
    page.click("#start-training")
    page.wait_for_url(re.compile(r"/staff/models/runs/\d+/$"))
    run = TrainingRun.objects.get()

    # The run page follows the worker over the WebSocket until the run is done.
    # (A selector, not wait_for_function: the site's CSP forbids the eval that needs.)
    page.wait_for_selector(
        "#run-status.done, #run-status.failed, #run-status.cancelled", timeout=300_000
    )
    run.refresh_from_db()
    assert page.evaluate("window.verityRun.state.status") == "done", run.error + run.log
    seen = page.evaluate("window.verityRun.seen")
    assert any(s["status"] == "running" for s in seen), seen
    # The curves are drawn from the epochs that arrived, training and validation.
    assert page.locator("#chart-loss circle.train").count() == 1
    assert page.locator("#chart-accuracy circle.val").count() == 1

    # The new and the active version side by side, on the same held-out faces.
    page.wait_for_selector("#comparison:not([hidden])")
    table = page.inner_text("#comparison-table")
    assert run.model_version.version in table and "tiny-1" in table
    assert "Balanced accuracy" in table
    diff = run.metrics["auc_difference"]
    verdict = page.locator("#comparison-verdict")
    if diff is None:
        assert verdict.is_hidden()
    else:
        shown = f"{abs(diff['difference']):.3f}"
        assert "ROC AUC, new minus active" in verdict.inner_text()
        assert shown in verdict.inner_text()
    # What the sentence says for each kind of interval (a tiny run has too few clips).
    said = page.evaluate(
        """() => [[0.08, [0.02, 0.15]], [-0.05, [-0.09, -0.01]], [0.01, [-0.04, 0.06]],
                  [0.01, null]].map(([d, ci]) =>
                   window.verityRun.aucVerdict({difference: d, ci: ci}))"""
    )
    assert "+0.080" in said[0] and "+0.020 to +0.150" in said[0] and "better" in said[0]
    assert "\u22120.050" in said[1] and "worse" in said[1]
    assert "cannot tell the two apart" in said[2]
    assert "Too few held-out clips" in said[3]
    screenshot(page, "staff-run")

    # Promote: the new version serves, the shipped one is retired.
    page.click("#promote-new")
    page.wait_for_url(f"{base}/staff/models/")
    assert "is now active" in page.inner_text(".messages")
    new = page.locator(f"#versions tr[data-version='{run.model_version.version}']")
    assert new.get_attribute("data-status") == "active"
    assert row.get_attribute("data-status") == "retired"
    assert ModelVersion.objects.get(status="active") == run.model_version
    screenshot(page, "staff-models")

    # Roll back: the shipped version serves again.
    page.click("#rollback-form button")
    page.wait_for_url(f"{base}/staff/models/")
    assert row.get_attribute("data-status") == "active"
    assert ModelVersion.objects.get(status="active").version == "tiny-1"
