"""Upload to annotated result, end to end: real ASGI server, real Celery worker, real
Redis and PostgreSQL, real Chromium."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import screenshot, sign_in
from tests.media import astronaut_clip
from webapp.analyses.models import Analysis

pytestmark = pytest.mark.e2e


def test_it_takes_a_clip_from_upload_to_a_playing_annotated_video(
    stack, page, django_user_model, tmp_path
):
    django_user_model.objects.create_user("frank", password="pw-frank-123")
    clip = astronaut_clip(tmp_path / "astronaut walk.mp4", 120)

    # Sign in and upload through the page.
    sign_in(page, stack.url, "frank", "pw-frank-123")
    page.goto(f"{stack.url}/analyses/new/")
    screenshot(page, "upload")
    page.set_input_files("#file", str(clip))
    page.click("#upload-submit")
    page.wait_for_url(re.compile(r"/analyses/[0-9a-f-]{36}/$"), timeout=30_000)
    analysis = Analysis.objects.get()
    # Options left alone: the site's default minimum face width applies when it runs.
    assert page.url.endswith(f"/analyses/{analysis.id}/") and analysis.min_face is None

    # Watch the progress bar advance, fed by the WebSocket.
    # Predicates as functions: a bare expression needs eval, which the site's CSP forbids.
    page.wait_for_function("() => window.verity.state.status !== 'queued'", timeout=120_000)
    screenshot(page, "progress")
    page.wait_for_function(
        "() => ['done', 'failed'].includes(window.verity.state.status)", timeout=180_000
    )
    assert page.evaluate("window.verity.state.status") == "done", page.evaluate(
        "window.verity.state.error"
    )
    page.wait_for_selector("#result:not([hidden])", timeout=10_000)
    seen = [s["progress"] for s in page.evaluate("window.verity.seen")]
    assert any(0 < p < 100 for p in seen), seen
    assert seen == sorted(seen), "progress never goes backwards"

    # The verdict and the annotated video, without a reload, and the video plays.
    assert page.inner_text("#verdict") in ("Real", "Fake", "Uncertain")
    page.wait_for_function(
        "() => document.getElementById('player').readyState >= 2", timeout=30_000
    )
    duration = page.evaluate("document.getElementById('player').duration")
    assert duration > 0
    page.evaluate("document.getElementById('player').play()")
    page.wait_for_function(
        "() => document.getElementById('player').currentTime > 0", timeout=15_000
    )
    screenshot(page, "result")

    # The row is the truth: done, with the report and model version.
    analysis.refresh_from_db()
    assert analysis.status == "done" and analysis.report["video"]["frame_count"] == 120
    assert analysis.model_version
