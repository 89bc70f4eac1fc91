from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.webapp.conftest import make_analysis
from webapp.analyses.models import Analysis, Status

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(alice) -> APIClient:
    c = APIClient()
    token = c.post("/api/auth/token/", {"username": "alice", "password": "pw-alice-123"}).json()[
        "token"
    ]
    c.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return c


def test_it_issues_a_token_for_a_username_and_password(client, alice):
    resp = client.post("/api/auth/token/", {"username": "alice", "password": "pw-alice-123"})
    assert resp.status_code == 200 and len(resp.json()["token"]) == 40
    # Wrong password: no token.
    assert (
        client.post("/api/auth/token/", {"username": "alice", "password": "nope"}).status_code
        == 400
    )


def test_it_refuses_requests_without_a_token(client):
    assert client.get("/api/analyses/").status_code == 401


def test_it_creates_an_analysis_from_a_multipart_upload(
    api, astro_clip, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resp = api.post(
            "/api/analyses/",
            {"file": SimpleUploadedFile("a.mp4", astro_clip.read_bytes())},
            format="multipart",
        )
    assert resp.status_code == 201
    body = resp.json()
    # The contract: these fields, with these meanings.
    assert {
        "id",
        "status",
        "progress",
        "stage",
        "error",
        "verdict",
        "model_version",
        "created",
        "finished",
    } <= body.keys()
    assert body["status"] == "queued" and body["progress"] == 0 and body["verdict"] is None
    assert Analysis.objects.filter(id=body["id"]).exists() and len(callbacks) == 1


def test_it_rejects_a_non_video_with_a_message(api):
    resp = api.post(
        "/api/analyses/", {"file": SimpleUploadedFile("x.mp4", b"hello" * 100)}, format="multipart"
    )
    assert resp.status_code == 400 and "not a video" in resp.json()["error"]
    assert api.post("/api/analyses/", {}, format="multipart").status_code == 400


def test_it_takes_a_minimum_face_width_per_analysis(api, astro_clip):
    def post(**extra):
        clip = SimpleUploadedFile("a.mp4", astro_clip.read_bytes())
        return api.post("/api/analyses/", {"file": clip, **extra}, format="multipart")

    # Given, it is stored on the row and returned; not given, null (the site's default).
    resp = post(min_face="0")
    assert resp.status_code == 201 and resp.json()["min_face"] == 0
    assert Analysis.objects.get(id=resp.json()["id"]).min_face == 0
    resp = post()
    assert resp.status_code == 201 and resp.json()["min_face"] is None

    # Anything but a whole number of pixels from 0 to 2000 is refused with a message, and
    # nothing is created.
    before = Analysis.objects.count()
    for bad in ("-1", "12.5", "abc", "2001"):
        resp = post(min_face=bad)
        assert resp.status_code == 400, bad
        assert "min_face is the narrowest face width to judge" in resp.json()["error"]
    assert Analysis.objects.count() == before


def test_it_lists_only_the_callers_analyses_paginated(api, alice, bob):
    mine = [make_analysis(alice) for _ in range(3)]
    theirs = make_analysis(bob)
    body = api.get("/api/analyses/").json()
    assert body["count"] == 3 and {r["id"] for r in body["results"]} == {str(a.id) for a in mine}
    # Bob's analysis is a 404 for Alice, on every endpoint.
    for suffix in ("", "report/", "video/"):
        assert api.get(f"/api/analyses/{theirs.id}/{suffix}").status_code == 404
    assert api.delete(f"/api/analyses/{theirs.id}/").status_code == 404
    assert Analysis.objects.filter(id=theirs.id).exists()


def test_it_lists_a_page_in_three_queries_without_the_reports(
    api, alice, django_assert_num_queries
):
    for _ in range(25):
        make_analysis(alice, status=Status.DONE, report={"frames": list(range(32))})
    # The token with its user, the count, the page's rows: never one query per row.
    with django_assert_num_queries(3) as queries:
        body = api.get("/api/analyses/?page=2").json()
    assert body["count"] == 25 and len(body["results"]) == 5
    assert all('"report"' not in q["sql"] for q in queries.captured_queries)


def test_it_returns_the_report_and_the_video_with_ranges(api, alice):
    a = make_analysis(
        alice, status=Status.DONE, report={"verdict": {"label": "real"}}, verdict={"label": "real"}
    )
    a.annotated.save("annotated.mp4", ContentFile(b"0123456789"))
    assert api.get(f"/api/analyses/{a.id}/report/").json() == {"verdict": {"label": "real"}}
    resp = api.get(f"/api/analyses/{a.id}/video/", HTTP_RANGE="bytes=2-5")
    assert resp.status_code == 206 and b"".join(resp.streaming_content) == b"2345"
    assert api.get(f"/api/analyses/{a.id}/").json()["verdict"] == {"label": "real"}


def test_it_deletes_an_analysis(api, alice):
    a = make_analysis(alice)
    assert api.delete(f"/api/analyses/{a.id}/").status_code == 204
    assert not Analysis.objects.exists()


def test_it_publishes_an_openapi_schema(client):
    resp = client.get("/api/schema/")
    assert resp.status_code == 200 and b"/api/analyses/" in resp.content
