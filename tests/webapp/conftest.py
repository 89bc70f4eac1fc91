from __future__ import annotations

import shutil

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    yield
    shutil.rmtree(tmp_path / "media", ignore_errors=True)


def make_user(username: str = "alice", password: str = "pw-alice-123", **kw):
    return get_user_model().objects.create_user(username=username, password=password, **kw)


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob", "pw-bob-123")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def make_analysis(owner, clip_bytes: bytes = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100, **fields):
    from webapp.analyses.models import Analysis

    a = Analysis(owner=owner, original_name=fields.pop("original_name", "clip.mp4"), **fields)
    a.original.save("clip.mp4", ContentFile(clip_bytes), save=False)
    a.save()
    return a


__all__ = ["make_analysis", "make_user", "settings"]
