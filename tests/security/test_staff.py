"""Staff-only pages and endpoints refuse everyone else: the admin, the model pages under
/staff/ and the training API, whatever routes exist when the test runs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from asgiref.sync import sync_to_async
from django.contrib import admin
from django.urls import reverse

from tests.security.test_access import _connect, _session_cookie, walk
from tests.webapp.conftest import make_user

pytestmark = pytest.mark.django_db


def staff_urls() -> list[str]:
    """Every staff route in the URLconf, with 1 for any numeric argument."""
    from django.urls import get_resolver

    urls = []
    for route, name, _callback in walk(get_resolver().url_patterns):
        if "format" in route or not name:
            continue
        if name.startswith("training:") or name.startswith(("training-run-", "model-version-")):
            args = [a or b for a, b in re.findall(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>", route)]
            urls.append(reverse(name, kwargs=dict.fromkeys(args, 1)))
    return urls


def refused(resp, url: str) -> bool:
    # 403, or a redirect away from the page (to a sign-in page).
    if resp.status_code in (401, 403):
        return True
    return resp.status_code == 302 and urlsplit(resp["Location"]).path != url


def test_it_finds_the_staff_routes():
    urls = staff_urls()
    assert "/staff/models/" in urls and any(u.startswith("/api/") for u in urls), urls


def test_it_refuses_staff_pages_and_endpoints_to_other_users(client, alice):
    client.force_login(alice)
    # The admin sends non-staff to its own sign-in page.
    for url in ["/admin/", *(f"/admin/{m._meta.app_label}/" for m in admin.site._registry)]:
        resp = client.get(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/"), url
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert refused(client.get(url), url), url
    # Every staff page and endpoint, read or write: refused.
    for url in staff_urls():
        for method in ("get", "post"):
            resp = getattr(client, method)(url)
            assert refused(resp, url), (url, method, resp.status_code)


def test_it_refuses_staff_pages_and_endpoints_to_anonymous_visitors(client):
    for url in ["/admin/", *staff_urls()]:
        for method in ("get", "post"):
            resp = getattr(client, method)(url)
            assert refused(resp, url), (url, method, resp.status_code)
            if resp.status_code == 302:
                assert "login" in resp["Location"], url


def test_it_lets_staff_in(client):
    # The control: a staff member gets the pages.
    client.force_login(make_user("stella", "pw-stella-123", is_staff=True, is_superuser=True))
    assert client.get("/admin/").status_code == 200
    assert client.get("/staff/models/").status_code == 200


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_refuses_training_websockets_to_non_staff():
    from webapp.live.routing import websocket_urlpatterns

    training = [str(p.pattern) for p in websocket_urlpatterns if "analyses" not in str(p.pattern)]
    alice = await sync_to_async(make_user)("alice")
    cookie = await sync_to_async(_session_cookie)(alice)
    for route in training:
        path = "/" + re.sub(r"<(?:int:)?\w+>", "1", route)
        for c in (cookie, None):
            comm, connected, code = await _connect(path, c)
            assert not connected, (path, c)
            await comm.disconnect()
