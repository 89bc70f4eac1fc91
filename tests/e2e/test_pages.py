"""The pages in a real Chromium against the real stack: history (filters, search,
delete), the result page (the video seeks, the chart seeks the video) and the API
token page. Finished analyses are made directly, with the real pipeline's files."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import screenshot, sign_in
from tests.media import astronaut_clip
from tests.webapp.conftest import make_analysis
from webapp.analyses import services
from webapp.analyses.models import Analysis, Status

pytestmark = pytest.mark.e2e


@pytest.fixture
def csp_violations(page):
    """Console reports of anything the Content-Security-Policy blocked: must stay empty."""
    seen: list[str] = []
    page.on(
        "console",
        lambda msg: seen.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return seen


@pytest.fixture
def hana(django_user_model):
    return django_user_model.objects.create_user("hana", password="pw-hana-123")


def finished_analysis(owner, tmp_path, monkeypatch, name: str = "astronaut.mp4") -> Analysis:
    """A clip run through the real pipeline (tiny untrained model) in this process."""
    # Nobody listens for its progress, and Playwright's event loop owns this thread.
    monkeypatch.setattr(services, "publish_analysis", lambda analysis: None)
    clip = astronaut_clip(tmp_path / name, 30)
    a = make_analysis(owner, clip.read_bytes(), original_name=name)
    assert services.execute_analysis(str(a.id)) == Status.DONE
    a.refresh_from_db()
    return a


def listed(page) -> list[str]:
    return page.locator("table.list tbody tr td:nth-child(2) a").all_inner_texts()


def filter_by(page, **fields) -> None:
    for field, value in fields.items():
        if field == "q":
            page.fill("#q", value)
        else:
            page.select_option(f"#{field}", value)
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")


def test_it_filters_searches_and_deletes_in_the_history(
    tiny_model_dir, stack, page, hana, tmp_path, monkeypatch, csp_violations
):
    real = finished_analysis(hana, tmp_path, monkeypatch)
    rows = {
        "beach day.mp4": {"status": "done", "verdict_label": "real", "duration": 4.0},
        "party night.mp4": {"status": "done", "verdict_label": "fake", "duration": 12.5},
        "interview.mp4": {"status": "failed", "error": "This file has no video stream."},
        "waiting room.mp4": {"status": "queued"},
    }
    confidence = {"real": 0.93, "fake": 0.88}
    for name, fields in rows.items():
        if "verdict_label" in fields:
            label = fields["verdict_label"]
            fields["verdict"] = {"label": label, "confidence": confidence[label]}
        make_analysis(hana, original_name=name, **fields)

    sign_in(page, stack.url, "hana", "pw-hana-123")
    # Every analysis is listed, newest first, the real one with its thumbnail.
    assert listed(page) == [*reversed(rows), "astronaut.mp4"]
    thumb = page.locator(f'tr[data-id="{real.id}"] img.thumb')
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=thumb.element_handle()
    )
    screenshot(page, "history")

    # Filter by status, then by verdict, then search by name.
    filter_by(page, status="failed")
    assert listed(page) == ["interview.mp4"]
    filter_by(page, status="", verdict="fake")
    assert listed(page) == ["party night.mp4"]
    assert "Fake 88%" in page.inner_text('tr:has-text("party night.mp4")')
    filter_by(page, verdict="", q="BEACH")
    assert listed(page) == ["beach day.mp4"]
    filter_by(page, q="nothing like this")
    assert listed(page) == [] and "match these filters" in page.inner_text("main")

    # Delete asks first: dismissing keeps the row...
    page.goto(f"{stack.url}/")
    page.once("dialog", lambda d: d.dismiss())
    page.click('button[aria-label="Delete party night.mp4"]')
    page.wait_for_timeout(300)
    assert "party night.mp4" in listed(page)
    # ...accepting removes it, from the page and the database.
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation():
        page.click('button[aria-label="Delete party night.mp4"]')
    assert "party night.mp4" not in listed(page) and len(listed(page)) == 4
    assert "Analysis deleted." in page.inner_text(".messages")
    assert not Analysis.objects.filter(original_name="party night.mp4").exists()
    assert csp_violations == []


def test_it_seeks_the_video_and_jumps_to_a_point_of_the_chart(
    tiny_model_dir, stack, page, hana, tmp_path, monkeypatch, csp_violations
):
    a = finished_analysis(hana, tmp_path, monkeypatch)
    sign_in(page, stack.url, "hana", "pw-hana-123")
    page.goto(f"{stack.url}/analyses/{a.id}/")
    page.wait_for_selector("#result:not([hidden])", timeout=15_000)
    # Predicates as functions: a bare expression needs eval, which the CSP forbids.
    page.wait_for_function(
        "() => document.getElementById('player').readyState >= 1", timeout=30_000
    )

    # The video seeks (Range requests): set currentTime and wait for `seeked`.
    at = page.evaluate(
        """() => new Promise((resolve) => {
            const v = document.getElementById('player');
            v.addEventListener('seeked', () => resolve(v.currentTime), {once: true});
            v.currentTime = 0.8;
        })"""
    )
    assert at == pytest.approx(0.8, abs=0.05)

    # The chart has one point per sampled frame with a face; clicking one moves the
    # video to that point's time.
    points = page.locator("#chart circle.pt")
    assert points.count() >= 5
    page.evaluate(
        """() => { window.seeks = 0;
            document.getElementById('player').addEventListener('seeked', () => window.seeks++); }"""
    )
    for k in (points.count() // 3, points.count() - 1):
        target = float(points.nth(k).get_attribute("data-t"))
        before = page.evaluate("window.seeks")
        points.nth(k).click()
        page.wait_for_function(f"() => window.seeks > {before}", timeout=10_000)
        now = page.evaluate("document.getElementById('player').currentTime")
        assert now == pytest.approx(target, abs=0.05), (k, target, now)
    screenshot(page, "result-seek")
    assert csp_violations == []


def test_a_fake_verdict_resting_only_on_small_faces_says_so(
    tiny_model_dir, stack, page, hana, tmp_path, monkeypatch, csp_violations
):
    a = finished_analysis(hana, tmp_path, monkeypatch)
    sign_in(page, stack.url, "hana", "pw-hana-123")

    def shown_with(box: list[int]) -> tuple[str, str]:
        # The same report, judged fake on its one face, with that face's box set.
        report = a.report
        report["verdict"]["label"] = "fake"
        report["tracks"] = [{**report["tracks"][0], "label": "fake", "box": box}]
        Analysis.objects.filter(id=a.id).update(report=report)
        page.goto(f"{stack.url}/analyses/{a.id}/")
        page.wait_for_selector("#result:not([hidden])", timeout=15_000)
        return page.inner_text("#verdict-help"), page.inner_text("#tracks")

    help_text, tracks = shown_with([100, 100, 150, 150])  # 50 px wide
    assert "under 80 px wide" in help_text and "small face (50 px)" in tracks
    help_text, tracks = shown_with([100, 100, 300, 300])  # 200 px wide
    assert help_text == "At least one face looks manipulated." and "small face" not in tracks
    assert csp_violations == []


def test_a_clip_whose_faces_are_too_small_to_judge_says_so(
    tiny_model_dir, stack, page, hana, tmp_path, monkeypatch, settings, csp_violations
):
    # The real pipeline, with the minimum face width set above the astronaut's face.
    settings.VERITY_MIN_FACE = 120  # the astronaut's face is about 90 px wide
    a = finished_analysis(hana, tmp_path, monkeypatch)
    assert a.verdict_label == "uncertain" and a.report["options"]["min_face"] == 120
    sign_in(page, stack.url, "hana", "pw-hana-123")
    page.goto(f"{stack.url}/analyses/{a.id}/")
    page.wait_for_selector("#result:not([hidden])", timeout=15_000)

    # The verdict says why, instead of "too close to its threshold"; the face says it too.
    assert page.inner_text("#verdict") == "Uncertain"
    assert page.inner_text("#confidence").startswith("Not judged · fake probability")
    # The options it ran with are on the page.
    assert page.inner_text("#model-version") == (
        "Model tiny tiny-1 · 32 frames sampled · faces 120 px and wider judged"
    )
    help_text = page.inner_text("#verdict-help")
    assert help_text == "Every face is under 120 px wide: too small for the model to judge."
    tracks = page.inner_text("#tracks")
    width = a.report["tracks"][0]["box"][2] - a.report["tracks"][0]["box"][0]
    assert "Too small" in tracks and f"too small to judge ({width} px)" in tracks
    # The chart draws its frames grey: scored, not judged.
    fills = page.eval_on_selector_all(
        "#chart circle.pt", "cs => cs.map(c => c.getAttribute('fill'))"
    )
    assert fills and set(fills) == {"#9ca3af"}
    screenshot(page, "result-too-small")
    # The history says so too.
    page.goto(f"{stack.url}/")
    assert "Uncertain (faces too small)" in page.inner_text("table.list")

    # A Real verdict that left a small face out says what it rests on.
    report = a.report
    report["tracks"].append(
        {**report["tracks"][0], "id": 1, "label": "real", "note": "", "box": [0, 0, 200, 200]}
    )
    left_out = "1 face was under 120 px wide and not judged."
    report["verdict"].update(label="real", note=left_out, confidence=0.9)
    Analysis.objects.filter(id=a.id).update(report=report)
    page.goto(f"{stack.url}/analyses/{a.id}/")
    page.wait_for_selector("#result:not([hidden])", timeout=15_000)
    assert page.inner_text("#verdict-help") == (
        "No face big enough to judge shows signs of manipulation the model can see. " + left_out
    )
    assert page.inner_text("#confidence").startswith("Confidence 90%")

    # An uncertain verdict claims no confidence ("70%" would read as "70% sure"): it says
    # which way the score leans.
    report["verdict"].update(
        label="uncertain", note="", fake_probability=0.7, threshold=0.64, confidence=0.7
    )
    for t in report["tracks"]:
        t["note"] = ""
    Analysis.objects.filter(id=a.id).update(report=report)
    page.goto(f"{stack.url}/analyses/{a.id}/")
    page.wait_for_selector("#result:not([hidden])", timeout=15_000)
    assert page.inner_text("#confidence") == (
        "Leans fake, too close to call · fake probability 0.70 (threshold 0.64)"
    )
    assert csp_violations == []


def test_it_creates_shows_once_and_revokes_an_api_token(stack, page, hana, csp_violations):
    from rest_framework.authtoken.models import Token

    sign_in(page, stack.url, "hana", "pw-hana-123")
    page.goto(f"{stack.url}/accounts/profile/")
    assert page.is_visible("#no-token")

    # Create a token: it is shown once, on this page.
    with page.expect_navigation():
        page.click("button:has-text('Create token')")
    key = page.inner_text("#new-token").strip()
    assert re.fullmatch(r"[0-9a-f]{40}", key)
    assert Token.objects.get(user=hana).key == key
    screenshot(page, "token")
    api = page.request.get(f"{stack.url}/api/analyses/", headers={"Authorization": f"Token {key}"})
    assert api.status == 200

    # Seen again later, it is not shown: only replace or revoke.
    page.goto(f"{stack.url}/accounts/profile/")
    assert page.locator("#new-token").count() == 0 and key not in page.content()
    assert page.is_visible("button:has-text('Revoke token')")

    # Revoke it: gone from the page, the database and the API.
    with page.expect_navigation():
        page.click("button:has-text('Revoke token')")
    assert page.is_visible("#no-token")
    assert not Token.objects.filter(user=hana).exists()
    api = page.request.get(f"{stack.url}/api/analyses/", headers={"Authorization": f"Token {key}"})
    assert api.status == 401
    assert csp_violations == []


def test_it_renders_the_api_docs_offline_from_its_own_files(stack, page, hana, csp_violations):
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(stack.url) else None)
    sign_in(page, stack.url, "hana", "pw-hana-123")
    page.goto(f"{stack.url}/api/docs/")
    # Swagger UI draws the schema: the analyses endpoints are listed.
    page.wait_for_selector("text=/api/analyses/", timeout=30_000)
    assert page.is_visible(".swagger-ui")
    assert outside == [] and csp_violations == []
