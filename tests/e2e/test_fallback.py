"""When WebSockets are blocked (a proxy that does not pass upgrades), the result page
falls back to polling the state endpoint and still shows the result without a reload."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import sign_in
from tests.media import astronaut_clip
from webapp.analyses.models import Analysis

pytestmark = pytest.mark.e2e


def test_it_falls_back_to_polling_when_websockets_are_blocked(
    stack, page, django_user_model, tmp_path
):
    django_user_model.objects.create_user("gus", password="pw-gus-12345")
    blocked = []

    def refuse(ws) -> None:
        blocked.append(ws.url)
        ws.close(code=1006)

    page.route_web_socket(re.compile(r"/ws/"), refuse)
    sign_in(page, stack.url, "gus", "pw-gus-12345")
    page.goto(f"{stack.url}/analyses/new/")
    page.set_input_files("#file", str(astronaut_clip(tmp_path / "clip.mp4", 30)))
    page.click("#upload-submit")
    page.wait_for_url(re.compile(r"/analyses/[0-9a-f-]{36}/$"), timeout=30_000)
    polls = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/state/") else None)

    # The result arrives anyway, fetched by polling.
    page.wait_for_selector("#result:not([hidden])", timeout=180_000)
    assert blocked, "the page tried the WebSocket first"
    assert polls, "the page polled the state endpoint"
    assert page.inner_text("#verdict") in ("Real", "Fake", "Uncertain")
    assert Analysis.objects.get().status == "done"
