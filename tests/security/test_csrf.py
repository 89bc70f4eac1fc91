"""CSRF: every form refuses a POST without the token (and accepts it with one)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.webapp.conftest import make_analysis

pytestmark = pytest.mark.django_db

VIDEO_HEAD = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100


def csrf_client(user=None) -> tuple[Client, str]:
    """A browser-like client that enforces CSRF, and the token a page would give it."""
    c = Client(enforce_csrf_checks=True)
    if user is not None:
        c.force_login(user)
    c.get("/accounts/login/" if user is None else "/analyses/new/")
    return c, c.cookies["csrftoken"].value


def signed_in_forms(a) -> list[tuple[str, dict]]:
    return [
        ("/analyses/new/", {"file": SimpleUploadedFile("clip.mp4", VIDEO_HEAD)}),
        (f"/analyses/{a.id}/cancel/", {}),
        (f"/analyses/{a.id}/rerun/", {}),
        (f"/analyses/{a.id}/label/", {"label": "fake"}),
        ("/accounts/profile/", {"action": "create"}),
        (
            "/accounts/password_change/",
            {"old_password": "x", "new_password1": "y", "new_password2": "y"},
        ),
        (f"/analyses/{a.id}/delete/", {}),
        ("/accounts/logout/", {}),
    ]


ANONYMOUS_FORMS = [
    ("/accounts/password_reset/", {"email": "alice@example.com"}),
    (
        "/accounts/signup/",
        {"username": "mallory", "password1": "Zq8!vLx2#pw", "password2": "Zq8!vLx2#pw"},
    ),
    ("/accounts/logout/", {}),
    ("/accounts/login/", {"username": "alice", "password": "pw-alice-123"}),
]


def test_it_refuses_signed_in_forms_posted_without_the_token(alice):
    a = make_analysis(alice, status="done")
    c, _ = csrf_client(alice)
    # Each form, posted from another site (no token): 403, and nothing changes.
    for url, data in signed_in_forms(a):
        assert c.post(url, data).status_code == 403, url
    a.refresh_from_db()
    assert a.status == "done" and a.user_label == ""
    assert c.get("/").status_code == 200, "still signed in: the logout was refused too"
    from rest_framework.authtoken.models import Token

    assert not Token.objects.exists()


def test_it_accepts_signed_in_forms_posted_with_the_token(
    alice, django_capture_on_commit_callbacks
):
    a = make_analysis(alice, status="done")
    c, token = csrf_client(alice)
    # The control: the same posts with the page's token get through.
    with django_capture_on_commit_callbacks(execute=False):
        for url, data in signed_in_forms(a):
            if "rerun" in url:
                continue  # would enqueue a job
            resp = c.post(url, {**data, "csrfmiddlewaretoken": token})
            assert resp.status_code != 403, url


def test_it_refuses_anonymous_forms_posted_without_the_token(alice):
    for url, data in ANONYMOUS_FORMS:
        c, token = csrf_client()
        assert c.post(url, data).status_code == 403, url
        assert c.post(url, {**data, "csrfmiddlewaretoken": token}).status_code != 403, url
    from django.contrib.auth import get_user_model

    # Only the post with the token made an account.
    assert get_user_model().objects.filter(username="mallory").count() == 1


def test_it_refuses_session_authenticated_api_writes_without_the_token(alice):
    a = make_analysis(alice, status="running")
    c, token = csrf_client(alice)
    # The API with a session cookie needs the token too (a token header does not).
    assert c.post(f"/api/analyses/{a.id}/cancel/").status_code == 403
    assert c.delete(f"/api/analyses/{a.id}/").status_code == 403
    assert (
        c.post("/api/analyses/", {"file": SimpleUploadedFile("c.mp4", VIDEO_HEAD)}).status_code
        == 403
    )
    a.refresh_from_db()
    assert a.status == "running"
    assert c.post(f"/api/analyses/{a.id}/cancel/", HTTP_X_CSRFTOKEN=token).status_code == 200
