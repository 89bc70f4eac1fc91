"""Bad input through the real path: uploaded through the site's API to a real worker.
Each ends refused, failed or no_face with a message a person understands; the worker
survives and the next job runs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import requests

from tests.detector.test_bad_inputs import _audio_only
from tests.media import astronaut, astronaut_clip, moving_frames, write_clip
from tests.reliability.conftest import wait_for
from webapp.analyses.models import Analysis

pytestmark = pytest.mark.e2e


def _corpus(d):
    good = astronaut_clip(d / "good.mp4", 20)
    data = good.read_bytes()
    files = {}
    files["zero bytes"] = ("empty.mp4", b"")
    files["truncated"] = ("truncated.mp4", data[: len(data) // 3])
    files["wrong extension"] = ("actually-mp4.avi", data)
    files["polyglot"] = ("polyglot.mp4", data[:32] + b"<html><script>alert(1)</script></html>" * 40)
    ok, jpg = cv2.imencode(".jpg", astronaut()[:, :, ::-1])
    files["still image"] = ("photo.mp4", jpg.tobytes())
    files["audio only"] = ("voice.m4a", _audio_only(d / "audio.m4a").read_bytes())
    files["one frame"] = ("one.mp4", write_clip(d / "one.mp4", moving_frames(1)).read_bytes())
    big = np.full((4320, 7680, 3), 90, np.uint8)
    files["huge dimensions"] = ("8k.mp4", write_clip(d / "8k.mp4", [big], fps=1).read_bytes())
    tiny = [np.full((32, 32, 3), (i * 7) % 255, np.uint8) for i in range(3000)]
    files["long clip of tiny size"] = (
        "tiny-long.mp4",
        write_clip(d / "tiny.mp4", tiny, fps=30).read_bytes(),
    )
    corrupted = bytearray(data)
    mid = len(corrupted) // 2
    corrupted[mid : mid + 4000] = bytes(range(256)) * 15 + bytes(160)
    files["corrupted in the middle"] = ("corrupted.mp4", bytes(corrupted))
    return files


def test_every_bad_upload_ends_with_a_clear_outcome_and_the_worker_survives(
    fast_stack, django_user_model, tmp_path
):
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_user("ivy", password="pw-ivy-12345")
    headers = {"Authorization": f"Token {Token.objects.create(user=user).key}"}
    worker = fast_stack.start_worker("w1")
    outcomes = {}
    for case, (name, content) in _corpus(tmp_path).items():
        resp = requests.post(
            f"{fast_stack.url}/api/analyses/",
            headers=headers,
            files={"file": (name, content)},
            timeout=60,
        )
        if resp.status_code == 400:
            # Refused at the door, with a reason.
            outcomes[case] = ("refused", resp.json()["error"])
            continue
        assert resp.status_code == 201, (case, resp.text)
        a = Analysis.objects.get(id=resp.json()["id"])

        def finished(a=a):
            a.refresh_from_db()
            return a.status in ("done", "failed", "cancelled")

        wait_for(finished, 180, f"{case} to finish")
        outcomes[case] = (a.status if a.status == "failed" else a.verdict_label, a.error)
        # The worker process never died.
        assert worker.poll() is None, f"the worker died on {case}"

    # Each outcome is an honest one, with words for people when it failed.
    for case, (outcome, message) in outcomes.items():
        assert outcome in ("refused", "failed", "no_face", "real", "fake", "uncertain"), (
            case,
            outcome,
        )
        if outcome in ("refused", "failed"):
            assert len(message) > 15 and message[0].isupper(), (case, message)
    assert outcomes["zero bytes"][0] == "refused" and "empty" in outcomes["zero bytes"][1]
    assert outcomes["still image"][0] == "refused"
    assert (
        outcomes["audio only"] == ("failed", outcomes["audio only"][1])
        and "no video track" in outcomes["audio only"][1]
    )
    assert outcomes["truncated"][0] == "failed" and outcomes["polyglot"][0] == "failed"
    assert outcomes["long clip of tiny size"][0] == "no_face"
    assert outcomes["wrong extension"][0] in ("real", "fake", "uncertain")
    assert outcomes["one frame"][0] in ("real", "fake", "uncertain")

    # And the next good job still runs.
    with open(astronaut_clip(tmp_path / "next.mp4", 10), "rb") as fh:
        resp = requests.post(
            f"{fast_stack.url}/api/analyses/",
            headers=headers,
            files={"file": ("next.mp4", fh)},
            timeout=60,
        )
    nxt = Analysis.objects.get(id=resp.json()["id"])
    wait_for(lambda: (nxt.refresh_from_db(), nxt.status == "done")[1], 120, "the next job")
