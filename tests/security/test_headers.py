"""Security headers on every response, no inline script in any page, and production
settings that pass `check --deploy` and refuse to start without a secret key."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.webapp.conftest import make_analysis

ROOT = Path(__file__).resolve().parents[2]


def directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


@pytest.mark.django_db
def test_it_sends_the_security_headers(client, alice):
    a = make_analysis(alice)
    client.force_login(alice)
    for url in ("/accounts/login/", "/", f"/analyses/{a.id}/", f"/analyses/{a.id}/original/"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        # Scripts only from this origin (or a per-response nonce): no inline code, no eval.
        csp = directives(resp["Content-Security-Policy"])
        assert csp["default-src"] == ["'self'"], url
        assert csp["script-src"][0] == "'self'" and all(
            s == "'self'" or s.startswith("'nonce-") for s in csp["script-src"]
        ), csp["script-src"]
        assert csp["style-src"] == ["'self'"] and csp["object-src"] == ["'none'"]
        assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'self'"]
        assert csp["form-action"] == ["'self'"]
        # No framing, no sniffing, no full URLs in the Referer to other sites.
        assert resp["X-Frame-Options"] == "DENY"
        assert resp["X-Content-Type-Options"] == "nosniff"
        assert resp["Referrer-Policy"] == "same-origin"
        assert resp["Cross-Origin-Opener-Policy"] == "same-origin"
    # The API answers carry them too.
    resp = client.get("/api/analyses/")
    assert "Content-Security-Policy" in resp and resp["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_it_serves_the_api_docs_from_this_site_with_no_cdn(client):
    # The Swagger UI's assets are our own static files (a self-hosted site works
    # offline); its start-up script is a separate request, so no inline script runs.
    resp = client.get("/api/docs/")
    assert resp.status_code == 200
    assert (
        b"cdn.jsdelivr.net" not in resp.content
        and b"/static/drf_spectacular_sidecar/" in resp.content
    )
    csp = directives(resp["Content-Security-Policy"])
    assert csp["script-src"] == ["'self'"] or "'unsafe-inline'" not in csp["script-src"]
    assert not any(src.startswith("https://") for src in csp["script-src"])
    assert not re.search(rb"<script>\s*\S", resp.content)
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and b"SwaggerUIBundle" in script.content


INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
INLINE_HANDLER = re.compile(rb"<[^>]+\son[a-z]+\s*=", re.I)


@pytest.mark.django_db
def test_it_has_no_inline_scripts_or_handlers_in_its_pages(client, alice):
    # The policy forbids them, so a page that had one would be broken.
    a = make_analysis(alice, status="done", verdict={"label": "real"}, verdict_label="real")
    client.force_login(alice)
    pages = [
        "/",
        "/analyses/new/",
        f"/analyses/{a.id}/",
        "/accounts/profile/",
        "/accounts/password_change/",
    ]
    anonymous = [
        "/accounts/login/",
        "/accounts/signup/",
        "/accounts/password_reset/",
        "/accounts/password_reset/done/",
        "/accounts/reset/done/",
    ]
    for url in pages:
        body = client.get(url).content
        assert not INLINE_SCRIPT.search(body), url
        assert not INLINE_HANDLER.search(body), url
    client.logout()
    for url in anonymous:
        body = client.get(url).content
        assert not INLINE_SCRIPT.search(body), url
        assert not INLINE_HANDLER.search(body), url


def _production(code: str, secret: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VERITY_"))}
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings.production"
    if secret is not None:
        env["DJANGO_SECRET_KEY"] = secret
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_it_passes_the_deployment_checks_in_production():
    # `check --deploy` with a long random secret: not a single warning.
    done = _production("", secrets.token_urlsafe(64), "manage.py", "check", "--deploy")
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout, done.stdout + done.stderr
    assert "WARNINGS" not in done.stdout + done.stderr


@pytest.mark.slow
def test_it_sends_hsts_in_production():
    code = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "r = Client(HTTP_HOST='localhost').get('/no-such-page/', secure=True)\n"
        "print('hsts=' + r['Strict-Transport-Security'])\n"
        "print('plain=%d' % Client(HTTP_HOST='localhost').get('/no-such-page/').status_code)\n"
    )
    done = _production(code, secrets.token_urlsafe(64))
    assert done.returncode == 0, done.stderr
    out = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    # A year, subdomains included, preload-ready; plain HTTP is redirected to HTTPS.
    assert out["hsts"] == "max-age=31536000; includeSubDomains; preload", done.stdout
    assert out["plain"] == "301"


@pytest.mark.slow
@pytest.mark.parametrize("secret", [None, "", "dev-insecure-verity-key-change-me"])
def test_it_refuses_to_start_production_without_a_secret_key(secret):
    done = _production("import django; django.setup()", secret)
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and "DJANGO_SECRET_KEY" in done.stderr
