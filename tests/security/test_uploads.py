"""Hostile uploads: file names that try to escape MEDIA_ROOT or break pages, and
HTML or SVG that must never be served inline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.webapp.conftest import make_analysis
from webapp.analyses.models import Analysis
from webapp.analyses.submit import safe_display_name

pytestmark = pytest.mark.django_db

VIDEO_HEAD = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200

HOSTILE_NAMES = [
    "../../etc/passwd.mp4",
    "..\\..\\windows\\win.ini.mp4",
    "/etc/cron.d/evil.mp4",
    "vidéo 日本.mp4",
    "bell\x07 esc\x1b[31m red\x7f del\u202eRTL.mp4",
    "<script>alert(1)</script>.mp4",
    "x" * 320 + ".mp4",
    "é" * 300 + ".mp4",
    ".mp4",
    "....",
]


def test_it_makes_safe_display_names():
    # No directory part, no control or invisible characters, at most 200 characters.
    assert safe_display_name("../../etc/passwd.mp4") == "passwd.mp4"
    assert safe_display_name("..\\..\\windows\\win.ini.mp4") == "win.ini.mp4"
    assert safe_display_name("vidéo 日本.mp4") == "vidéo 日本.mp4"
    assert safe_display_name("a\x00b\nc\x1b\u202e.mp4") == "abc.mp4"
    long = safe_display_name("x" * 320 + ".mp4")
    assert len(long) <= 200 and long.endswith(".mp4")
    assert safe_display_name("\x00\x01") == "upload"
    for name in HOSTILE_NAMES:
        shown = safe_display_name(name)
        assert "/" not in shown and "\\" not in shown and shown.isprintable(), name
        assert 0 < len(shown) <= 200


def _stored_safely(a: Analysis) -> None:
    root = Path(settings.MEDIA_ROOT).resolve()
    stored = Path(a.original.path).resolve()
    # The file lies where the server chose, inside MEDIA_ROOT, whatever the name said.
    assert stored.is_relative_to(root), stored
    assert re.fullmatch(
        rf"uploads/{a.owner_id}/{a.id}/original(\.[a-z0-9]{{1,7}})?", a.original.name
    )
    assert stored.read_bytes() == VIDEO_HEAD
    # The name shown to people is bounded and printable.
    assert a.original_name.isprintable() and 0 < len(a.original_name) <= 200
    assert "/" not in a.original_name and "\\" not in a.original_name


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_it_stores_hostile_names_under_a_server_chosen_path(
    alice_client, name, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        resp = alice_client.post("/analyses/new/", {"file": SimpleUploadedFile(name, VIDEO_HEAD)})
    assert resp.status_code == 302, resp.content[:500]
    a = Analysis.objects.get()
    _stored_safely(a)
    # Nothing landed outside the analysis' own folder.
    files = [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]
    assert files == [Path(a.original.path)]
    # The pages that show the name render it escaped, and the download is named safely.
    for url in ("/", f"/analyses/{a.id}/", "/?q=" + a.original_name[:20]):
        page = alice_client.get(url)
        assert page.status_code == 200 and b"<script>alert(1)" not in page.content, url
    dl = alice_client.get(f"/analyses/{a.id}/original/")
    assert dl.status_code == 200 and dl["Content-Disposition"].startswith("attachment;")
    assert "\n" not in dl["Content-Disposition"] and "/" not in dl["Content-Disposition"]


def test_it_stores_hostile_names_sent_to_the_api(alice, django_capture_on_commit_callbacks):
    api = APIClient()
    api.force_authenticate(alice)
    for name in HOSTILE_NAMES[:4]:
        with django_capture_on_commit_callbacks(execute=False):
            resp = api.post("/api/analyses/", {"file": SimpleUploadedFile(name, VIDEO_HEAD)})
        assert resp.status_code == 201, resp.content
        _stored_safely(Analysis.objects.get(id=resp.json()["id"]))


HTML_AND_SVG = [
    ("page.html", b"<!doctype html><html><script>alert(document.cookie)</script></html>"),
    ("page.mp4", b"<html><body onload=alert(1)>" + b" " * 600),
    (
        "image.svg",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    ),
    ("image.mp4", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
    # Text that by chance has "ftyp" where an MP4 box type would be.
    ("sneaky.mp4", b"<b>\nftypisom<script>alert(1)</script>"),
]


@pytest.mark.parametrize("name,content", HTML_AND_SVG)
def test_it_rejects_html_and_svg_by_content(alice_client, alice, name, content):
    # The page and the API both refuse them, whatever the extension says.
    resp = alice_client.post(
        "/analyses/new/",
        {"file": SimpleUploadedFile(name, content)},
        HTTP_ACCEPT="application/json",
    )
    assert resp.status_code == 400 and "not a video" in resp.json()["error"]
    api = APIClient()
    api.force_authenticate(alice)
    resp = api.post("/api/analyses/", {"file": SimpleUploadedFile(name, content)})
    assert resp.status_code == 400
    assert not Analysis.objects.exists()


def test_it_never_serves_an_upload_inline(alice_client, alice):
    # A polyglot that passes the sniffing (binary MP4 head, HTML after it) is stored...
    polyglot = VIDEO_HEAD + b"<html><script>alert(document.cookie)</script></html>"
    a = make_analysis(alice, polyglot, original_name="page.html")
    resp = alice_client.get(f"/analyses/{a.id}/original/")
    # ...but only ever downloaded: a neutral type, as an attachment, no sniffing,
    # and a policy that would run no script even if a browser rendered it.
    assert resp["Content-Type"] == "application/octet-stream"
    assert resp["Content-Disposition"].startswith("attachment;")
    assert resp["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in resp["Content-Security-Policy"]
    assert b"".join(resp.streaming_content) == polyglot
    # The other files carry their own fixed types and no sniffing either.
    for suffix, ctype in (("video/", "video/mp4"), ("thumbnail.jpg", "image/jpeg")):
        from django.core.files.base import ContentFile

        field = a.annotated if suffix == "video/" else a.thumbnail
        field.save("f", ContentFile(b"<html><script>alert(1)</script>"))
        resp = alice_client.get(f"/analyses/{a.id}/{suffix}")
        assert resp["Content-Type"] == ctype and resp["X-Content-Type-Options"] == "nosniff"
