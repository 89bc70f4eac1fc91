"""Accounts: sign-up, sign-in, sign-out, password change and reset, all in the site's
own pages."""

from __future__ import annotations

import re

import pytest
from django.core import mail

pytestmark = pytest.mark.django_db

BASE_MARK = 'class="brand"'  # the site header from base.html


def test_it_renders_every_account_page_in_the_site_layout(client, alice):
    pages = [
        "/accounts/login/",
        "/accounts/signup/",
        "/accounts/password_reset/",
        "/accounts/password_reset/done/",
        "/accounts/reset/done/",
        "/accounts/reset/MQ/bad-token/",
    ]
    for url in pages:
        resp = client.get(url, follow=True)
        assert resp.status_code == 200 and BASE_MARK in resp.content.decode(), url
    # An invalid reset link says so instead of showing a form.
    assert (
        "no longer works"
        in client.get("/accounts/reset/MQ/bad-token/", follow=True).content.decode()
    )
    client.force_login(alice)
    for url in ("/accounts/profile/", "/accounts/password_change/"):
        resp = client.get(url)
        assert resp.status_code == 200 and BASE_MARK in resp.content.decode(), url


def test_it_signs_up_signs_out_and_signs_in(client, django_user_model):
    # Sign up (with an e-mail, for password resets): signed in at once.
    resp = client.post(
        "/accounts/signup/",
        {
            "username": "nina",
            "email": "nina@example.com",
            "password1": "Qv7!long-pass",
            "password2": "Qv7!long-pass",
        },
    )
    assert resp.status_code == 302 and resp["Location"] == "/"
    assert django_user_model.objects.get(username="nina").email == "nina@example.com"
    assert client.get("/").status_code == 200
    # Sign out: back to the sign-in page, and signed out.
    resp = client.post("/accounts/logout/")
    assert resp.status_code == 302 and resp["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302
    # Sign in again.
    resp = client.post("/accounts/login/", {"username": "nina", "password": "Qv7!long-pass"})
    assert resp.status_code == 302 and resp["Location"] == "/"


def test_it_changes_the_password(client, alice):
    client.force_login(alice)
    resp = client.post(
        "/accounts/password_change/",
        {
            "old_password": "pw-alice-123",
            "new_password1": "Brand-new-pass-42",
            "new_password2": "Brand-new-pass-42",
        },
        follow=True,
    )
    assert resp.status_code == 200 and "Password changed" in resp.content.decode()
    # Still signed in here; the new password works and the old one does not.
    assert client.get("/").status_code == 200
    alice.refresh_from_db()
    assert alice.check_password("Brand-new-pass-42") and not alice.check_password("pw-alice-123")


def test_it_resets_a_forgotten_password_through_the_emailed_link(client, alice):
    alice.email = "alice@example.com"
    alice.save()
    # 1. Ask for a reset: the page says to check the mail, and one e-mail goes out.
    resp = client.post("/accounts/password_reset/", {"email": "alice@example.com"}, follow=True)
    assert "Check your e-mail" in resp.content.decode()
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"] and message.subject == "Reset your Verity password"
    assert "alice" in message.body
    # 2. Follow the link from the e-mail: a form to choose a new password.
    link = re.search(r"https?://[^/\s]+(/accounts/reset/\S+/)", message.body).group(1)
    resp = client.get(link, follow=True)
    assert "Choose a new password" in resp.content.decode()
    form_url = resp.redirect_chain[-1][0] if resp.redirect_chain else link
    # 3. Set the new password.
    resp = client.post(
        form_url,
        {"new_password1": "Fresh-start-2024", "new_password2": "Fresh-start-2024"},
        follow=True,
    )
    assert "Password set" in resp.content.decode()
    # 4. Sign in with it (and no longer with the old one).
    assert (
        client.post(
            "/accounts/login/", {"username": "alice", "password": "pw-alice-123"}
        ).status_code
        == 200
    )
    resp = client.post("/accounts/login/", {"username": "alice", "password": "Fresh-start-2024"})
    assert resp.status_code == 302 and resp["Location"] == "/"
    # The link works once.
    assert "no longer works" in client.get(link, follow=True).content.decode()


def test_it_sends_no_mail_for_an_unknown_address(client, alice):
    # The page reads the same either way: it does not reveal which addresses exist.
    resp = client.post("/accounts/password_reset/", {"email": "nobody@example.com"}, follow=True)
    assert "Check your e-mail" in resp.content.decode() and mail.outbox == []


def test_it_uses_the_console_backend_by_default():
    from webapp.settings import base

    assert base.EMAIL_BACKEND == "django.core.mail.backends.console.EmailBackend"
