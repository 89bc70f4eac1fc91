from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.webapp.conftest import make_analysis
from webapp.analyses.models import Analysis, Status

pytestmark = pytest.mark.django_db


def _mp4(astro_clip) -> SimpleUploadedFile:
    return SimpleUploadedFile("holiday clip.mp4", astro_clip.read_bytes(), content_type="video/mp4")


def test_it_sends_anonymous_visitors_to_sign_in(client):
    for url in ("/", "/analyses/new/"):
        resp = client.get(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")


def test_it_creates_a_queued_analysis_and_enqueues_after_commit(
    alice_client, alice, astro_clip, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resp = alice_client.post("/analyses/new/", {"file": _mp4(astro_clip)})
    a = Analysis.objects.get()
    # Redirected to the analysis page; the row is queued and owned by the uploader.
    assert resp.status_code == 302 and resp["Location"] == f"/analyses/{a.id}/"
    assert a.status == Status.QUEUED and a.owner == alice and a.original_name == "holiday clip.mp4"
    # The file went through the storage API under a server-chosen name.
    assert a.original.name.endswith(f"{a.id}/original.mp4")
    assert a.original.size == astro_clip.stat().st_size
    # The Celery task is sent only once the transaction commits.
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("notes.mp4", b"just some text, renamed" * 20, "not a video"),
        ("empty.mp4", b"", "empty"),
        ("page.html", b"<html><script>alert(1)</script></html>", "not a video"),
    ],
)
def test_it_rejects_files_that_are_not_videos_by_content(alice_client, name, content, message):
    resp = alice_client.post(
        "/analyses/new/", {"file": SimpleUploadedFile(name, content)}, follow=True
    )
    assert message in resp.content.decode()
    assert not Analysis.objects.exists()


def test_the_upload_form_takes_a_minimum_face_width(alice_client, astro_clip, settings):
    # The form shows the site's default; empty, it stores none (the default applies when
    # the analysis runs); a number is stored on the row.
    settings.VERITY_MIN_FACE = 72
    page = alice_client.get("/analyses/new/").content.decode()
    assert 'name="min_face"' in page and 'placeholder="72"' in page
    alice_client.post("/analyses/new/", {"file": _mp4(astro_clip), "min_face": ""})
    alice_client.post("/analyses/new/", {"file": _mp4(astro_clip), "min_face": "0"})
    assert [a.min_face for a in Analysis.objects.order_by("created")] == [None, 0]

    # A bad value is refused with the reason, and nothing is created.
    resp = alice_client.post(
        "/analyses/new/", {"file": _mp4(astro_clip), "min_face": "-5"}, follow=True
    )
    assert "a whole number from 0 to 2000" in resp.content.decode()
    # Digits that are not ASCII ("²") are refused the same way, not a server error.
    resp = alice_client.post("/analyses/new/", {"file": _mp4(astro_clip), "min_face": "²"})
    assert resp.status_code == 200 and "a whole number from 0 to 2000" in resp.content.decode()
    assert Analysis.objects.count() == 2


def test_it_refuses_uploads_over_the_size_limit(alice_client, astro_clip, settings):
    settings.VERITY_MAX_UPLOAD_BYTES = 1000
    resp = alice_client.post(
        "/analyses/new/", {"file": _mp4(astro_clip)}, HTTP_ACCEPT="application/json"
    )
    assert resp.status_code == 400 and "limit" in resp.json()["error"]


def test_it_hides_other_users_analyses(client, alice, bob):
    a = make_analysis(alice)
    a.annotated.save("annotated.mp4", ContentFile(b"x" * 10))
    client.force_login(bob)
    # Every page and file of Alice's analysis is a 404 for Bob.
    for suffix in (
        "",
        "state/",
        "video/",
        "original/",
        "report.json",
        "thumbnail.jpg",
        "faces/0.jpg",
    ):
        assert client.get(f"/analyses/{a.id}/{suffix}").status_code == 404, suffix
    for suffix in ("delete/", "cancel/", "rerun/"):
        assert client.post(f"/analyses/{a.id}/{suffix}").status_code == 404, suffix
    # And it is not in his history.
    assert str(a.id) not in client.get("/").content.decode()
    assert Analysis.objects.filter(id=a.id).exists()


def test_it_serves_byte_ranges_so_the_player_can_seek(alice_client, alice):
    a = make_analysis(alice)
    a.annotated.save("annotated.mp4", ContentFile(bytes(range(256)) * 4))
    # A range request gets exactly those bytes.
    resp = alice_client.get(f"/analyses/{a.id}/video/", HTTP_RANGE="bytes=100-199")
    assert resp.status_code == 206
    assert resp["Content-Range"] == "bytes 100-199/1024" and resp["Content-Length"] == "100"
    assert b"".join(resp.streaming_content) == (bytes(range(256)) * 4)[100:200]
    # An open-ended range runs to the end; a whole request gets everything.
    resp = alice_client.get(f"/analyses/{a.id}/video/", HTTP_RANGE="bytes=1000-")
    assert resp["Content-Range"] == "bytes 1000-1023/1024"
    assert b"".join(resp.streaming_content) == (bytes(range(256)) * 4)[1000:]
    resp = alice_client.get(f"/analyses/{a.id}/video/")
    assert (
        resp.status_code == 200
        and resp["Accept-Ranges"] == "bytes"
        and resp["Content-Type"] == "video/mp4"
    )
    assert len(b"".join(resp.streaming_content)) == 1024
    # An unsatisfiable range says so.
    assert alice_client.get(f"/analyses/{a.id}/video/", HTTP_RANGE="bytes=5000-").status_code == 416


def test_under_asgi_files_stream_chunk_by_chunk_not_read_whole_first():
    """Django consumes a synchronous iterator whole before sending under ASGI (and warns):
    the site runs under ASGI, so downloads must be async generators there."""
    import asyncio
    import warnings

    from django.core.files.storage import default_storage
    from django.test import AsyncRequestFactory, RequestFactory

    from webapp.analyses.media import CHUNK, serve_file

    data = bytes(range(256)) * (3 * CHUNK // 256) + b"tail"
    name = default_storage.save("results/t/big.bin", ContentFile(data))

    async def consume(resp) -> list[bytes]:
        return [part async for part in resp]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "must consume synchronous iterators" fails it
        whole = serve_file(AsyncRequestFactory().get("/"), name, "application/octet-stream")
        assert whole.is_async
        parts = asyncio.run(consume(whole))
        assert len(parts) == 4 and b"".join(parts) == data
        ranged = serve_file(
            AsyncRequestFactory().get("/", headers={"Range": f"bytes={CHUNK - 2}-{CHUNK + 1}"}),
            name,
            "application/octet-stream",
        )
        assert ranged.status_code == 206 and asyncio.run(consume(ranged)) == [
            data[CHUNK - 2 : CHUNK + 2]
        ]
    # Under WSGI (the test client, runserver) it stays a plain generator.
    sync = serve_file(RequestFactory().get("/"), name, "application/octet-stream")
    assert not sync.is_async and b"".join(sync.streaming_content) == data


def test_a_download_nobody_read_closes_its_file_when_the_response_closes():
    """A player that asks for a range and goes away before the first byte: the server
    closes the response, and the file must close with it, under WSGI and ASGI alike."""
    import os

    from django.core.files.storage import default_storage
    from django.test import AsyncRequestFactory, RequestFactory

    from webapp.analyses.media import serve_file

    name = default_storage.save("results/t/unread.bin", ContentFile(b"x" * 1000))
    path = os.path.realpath(default_storage.path(name))

    def open_fds() -> int:
        fds = os.listdir("/proc/self/fd")
        return sum(1 for fd in fds if _fd_target(fd) == path)

    for factory in (RequestFactory(), AsyncRequestFactory()):
        resp = serve_file(factory.get("/", headers={"Range": "bytes=10-"}), name, "video/mp4")
        assert resp.status_code == 206 and open_fds() == 1
        resp.close()
        assert open_fds() == 0, type(factory).__name__


def _fd_target(fd: str) -> str:
    import os

    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def test_a_file_the_row_names_but_storage_lost_is_a_404_not_a_500(alice_client, alice):
    a = make_analysis(alice, status=Status.DONE)
    a.annotated.save("annotated.mp4", ContentFile(b"video"))
    a.thumbnail.save("thumbnail.jpg", ContentFile(b"jpeg"))
    a.delete_result_files()
    assert alice_client.get(f"/analyses/{a.id}/video/").status_code == 404
    assert alice_client.get(f"/analyses/{a.id}/thumbnail.jpg").status_code == 404


def test_it_downloads_the_original_as_an_attachment_never_inline(alice_client, alice):
    a = make_analysis(alice, original_name="evil.html")
    resp = alice_client.get(f"/analyses/{a.id}/original/")
    assert resp["Content-Type"] == "application/octet-stream"
    assert resp["Content-Disposition"].startswith("attachment")
    assert resp["X-Content-Type-Options"] == "nosniff"
    assert b"".join(resp.streaming_content) == a.original.open("rb").read()
    a.original.close()


def test_it_deletes_an_analysis_and_its_files(alice_client, alice, settings):
    a = make_analysis(alice, status=Status.DONE)
    a.annotated.save("annotated.mp4", ContentFile(b"v"))
    paths = [a.original.path, a.annotated.path]
    resp = alice_client.post(f"/analyses/{a.id}/delete/")
    assert resp.status_code == 302
    assert not Analysis.objects.exists()
    import os

    assert not any(os.path.exists(p) for p in paths)


def test_it_filters_and_searches_the_history(alice_client, alice):
    make_analysis(
        alice,
        original_name="beach.mp4",
        status=Status.DONE,
        verdict={"label": "fake", "confidence": 0.9},
        verdict_label="fake",
    )
    make_analysis(alice, original_name="office.mp4", status=Status.FAILED, error="bad")
    body = alice_client.get("/?q=beach").content.decode()
    assert "beach.mp4" in body and "office.mp4" not in body
    body = alice_client.get("/?status=failed").content.decode()
    assert "office.mp4" in body and "beach.mp4" not in body
    body = alice_client.get("/?verdict=fake").content.decode()
    assert "beach.mp4" in body and "Fake 90%" in body


def test_the_history_pager_keeps_its_filters_encoded(alice_client, alice):
    import re
    from html import unescape
    from urllib.parse import parse_qs, urlsplit

    name = "a&b #1+2.mp4"
    for _ in range(21):
        make_analysis(alice, original_name=name, status=Status.DONE)
    make_analysis(alice, original_name="other.mp4", status=Status.DONE)
    body = alice_client.get("/", {"q": "a&b #1+2", "status": "done"}).content.decode()
    href = unescape(re.search(r'<a href="([^"]+)">Older', body).group(1))
    # The search text survives the round trip whole: '&', '#' and '+' are encoded.
    assert parse_qs(urlsplit(href).query) == {"q": ["a&b #1+2"], "status": ["done"], "page": ["2"]}
    page2 = alice_client.get(href).content.decode()
    # 21 matches at 20 a page: one row on page 2, and still only the matches.
    assert "Page 2 of 2" in page2 and page2.count("<tr data-id=") == 1
    assert "other.mp4" not in page2 and name.replace("&", "&amp;") in page2


def test_the_history_claims_no_confidence_for_an_uncertain_verdict(alice):
    def shown(**verdict) -> str:
        return make_analysis(alice, status=Status.DONE, verdict=verdict).verdict_display

    assert shown(label="fake", confidence=0.81, fake_probability=0.81) == "Fake 81%"
    assert shown(label="real", confidence=0.93, fake_probability=0.07) == "Real 93%"
    # Uncertain: the lean is taken against the bundle's threshold, not 0.5.
    leans = {"label": "uncertain", "confidence": 0.6, "threshold": 0.64}
    assert shown(**leans, fake_probability=0.60) == "Uncertain, leans real"
    assert shown(**leans, fake_probability=0.70) == "Uncertain, leans fake"
    small = {"label": "uncertain", "confidence": 0.0, "fake_probability": 0.9}
    assert shown(**small, note="1 face was under 80 px wide") == "Uncertain (faces too small)"
    assert shown(label="no_face", confidence=0.0, fake_probability=0.0) == "No face found"


def test_it_renders_the_result_page_with_the_current_state(alice_client, alice):
    a = make_analysis(alice, status=Status.RUNNING, progress=42, stage="detecting")
    body = alice_client.get(f"/analyses/{a.id}/").content.decode()
    assert 'id="initial-state"' in body and '"progress": 42' in body and "clip.mp4" in body
    assert alice_client.get(f"/analyses/{a.id}/state/").json()["progress"] == 42


def test_the_history_page_and_the_status_poll_cost_a_fixed_number_of_queries(
    alice_client, alice, django_assert_num_queries
):
    report = {"frames": [{"index": i, "faces": [{"box": [1, 2, 3, 4]}]} for i in range(32)]}
    rows = [
        make_analysis(
            alice,
            original_name=f"clip-{i}.mp4",
            status=Status.DONE,
            verdict={"label": "real", "confidence": 0.9},
            verdict_label="real",
            report=report,
        )
        for i in range(25)
    ]
    # A full page of the history: the session, the user, the count and the page's rows.
    with django_assert_num_queries(4):
        assert alice_client.get("/?page=1").status_code == 200
    # The status poll that an open result page repeats: session, user, the row, and not
    # the row's report.
    with django_assert_num_queries(3) as queries:
        assert alice_client.get(f"/analyses/{rows[0].id}/state/").status_code == 200
    assert '"report"' not in queries.captured_queries[-1]["sql"]
