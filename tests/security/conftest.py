from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

# The web tests' fixtures: private MEDIA_ROOT per test, alice and bob.
from tests.webapp.conftest import _media, alice, alice_client, bob, make_analysis, make_user

__all__ = ["_media", "alice", "alice_client", "bob", "make_user"]


@pytest.fixture
def finished(alice):
    """Alice's finished analysis with every file a route can serve, so that a 404 for
    someone else is the ownership check, never a missing file."""
    a = make_analysis(
        alice,
        original_name="alice holiday.mp4",
        status="done",
        progress=100,
        stage="done",
        verdict={"label": "real", "fake_probability": 0.1, "confidence": 0.9, "threshold": 0.5},
        verdict_label="real",
        report={"verdict": {"label": "real"}, "frames": [], "tracks": []},
    )
    a.annotated.save("annotated.mp4", ContentFile(b"\x00\x00\x00\x18ftypisom" + b"v" * 64))
    a.thumbnail.save("thumb.jpg", ContentFile(b"\xff\xd8\xff" + b"t" * 64))
    from django.core.files.storage import default_storage

    default_storage.save(a.track_crop_name(0), ContentFile(b"\xff\xd8\xff" + b"c" * 64))
    return a
