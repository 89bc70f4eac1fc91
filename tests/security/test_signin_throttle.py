"""Sign-in is throttled (django-axes): five failures for one user name from one address
lock that pair out for 15 minutes, on the sign-in page and the token endpoint alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
TOKEN = "/api/auth/token/"


def sign_in(client: Client, username: str, password: str, **extra):
    return client.post(LOGIN, {"username": username, "password": password}, **extra)


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_it_locks_out_a_user_name_after_five_failures(client, alice, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    # Four failures: the usual message, still allowed to try.
    for _ in range(4):
        resp = sign_in(client, "alice", "wrong")
        assert resp.status_code == 200 and b"didn't match" in resp.content
    # The fifth locks the pair out, with a clear message on the sign-in page.
    resp = sign_in(client, "alice", "wrong")
    assert resp.status_code == 429 and resp["Retry-After"] == "900"
    page = resp.content.decode()
    assert 'id="locked-out"' in page and "Too many failed sign-in attempts" in page
    assert "15 minutes" in page and 'action="/accounts/logout/"' not in page
    assert 'value="alice"' in page and "Forgot your password?" in page
    # Even the right password is refused now.
    resp = sign_in(client, "alice", "pw-alice-123")
    assert resp.status_code == 429 and not signed_in(client)


def test_it_locks_out_only_that_user_name_from_that_address(client, alice, bob):
    for _ in range(5):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice", "pw-alice-123").status_code == 429
    # Another user from the same address signs in.
    other = Client()
    assert sign_in(other, "bob", "pw-bob-123").status_code == 302 and signed_in(other)
    # Alice from another address signs in.
    away = Client(REMOTE_ADDR="203.0.113.9")
    assert sign_in(away, "alice", "pw-alice-123").status_code == 302 and signed_in(away)


def test_it_lets_the_user_in_again_after_the_cool_off(client, alice):
    for _ in range(5):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice", "pw-alice-123").status_code == 429
    # Sixteen minutes later the lock has expired.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    resp = sign_in(client, "alice", "pw-alice-123")
    assert resp.status_code == 302 and signed_in(client)


def test_it_forgets_failures_after_a_successful_sign_in(client, alice):
    for _ in range(4):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice", "pw-alice-123").status_code == 302
    client.post("/accounts/logout/")
    # A fresh count: four more failures do not lock her out.
    for _ in range(4):
        assert sign_in(client, "alice", "wrong").status_code == 200
    assert sign_in(client, "alice", "pw-alice-123").status_code == 302


def test_it_throttles_the_api_token_endpoint_too(client, alice):
    for _ in range(4):
        resp = client.post(TOKEN, {"username": "alice", "password": "wrong"})
        assert resp.status_code == 400
    # The fifth failure, and any try after it, is 429 with the reason and no token.
    resp = client.post(TOKEN, {"username": "alice", "password": "wrong"})
    assert resp.status_code == 429 and "Too many failed sign-in attempts" in resp.json()["detail"]
    assert int(resp["Retry-After"]) == 900
    resp = client.post(TOKEN, {"username": "alice", "password": "pw-alice-123"})
    assert resp.status_code == 429 and "token" not in resp.json()
    # The page shares the count: the same pair is locked out there as well.
    assert sign_in(client, "alice", "pw-alice-123").status_code == 429


def test_it_does_not_get_in_the_way_of_force_login_or_tokens(client, alice):
    # Tests that sign in with force_login, and API clients with a token, are unaffected.
    for _ in range(5):
        sign_in(client, "alice", "wrong")
    client.force_login(alice)
    assert client.get("/").status_code == 200
    from rest_framework.authtoken.models import Token

    key = Token.objects.create(user=alice).key
    assert Client().get("/api/analyses/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
