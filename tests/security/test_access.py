"""The access matrix: every page, API endpoint, media file and WebSocket of one user's
analysis, against another user and an anonymous visitor.

The routes come from the URLconf itself, so a route added later without an entry here
fails the test instead of going unchecked.
"""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.webapp.conftest import make_analysis, make_user
from webapp.analyses.models import Analysis

# Pages of the analyses app: the methods each accepts. A new route must be added here.
PAGE_METHODS = {
    "analyses:list": ["get"],
    "analyses:upload": ["get", "post"],
    "analyses:detail": ["get"],
    "analyses:state": ["get"],
    "analyses:video": ["get"],
    "analyses:original": ["get"],
    "analyses:report": ["get"],
    "analyses:delete": ["post"],
    "analyses:cancel": ["post"],
    "analyses:rerun": ["post"],
    "analyses:label": ["post"],
    "analyses:thumbnail": ["get"],
    "analyses:track_crops": ["get"],
}
# Extra URL arguments beyond the analysis id.
EXTRA_KWARGS = {"analyses:track_crops": {"track_id": 0}}


def walk(patterns, prefix: str = "", namespace: str = ""):
    """Yield (route, name, callback) for every pattern under `patterns`."""
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            yield from walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), (namespace + p.name) if p.name else None, p.callback


def analysis_routes() -> dict[str, tuple[str, object]]:
    """Every named HTTP route that concerns analyses: the app's pages and the API's."""
    found = {}
    for route, name, callback in walk(get_resolver().url_patterns):
        if "format" in route:  # DRF's ".json" suffix twins of the same views
            continue
        if (name or "").startswith(("analyses:", "analysis-")) or "analyses" in route:
            assert name, f"unnamed route {route!r}: name it so the access matrix can cover it"
            found[name] = (route, callback)
    return found


def api_methods(callback) -> list[str]:
    # A DRF viewset route knows its HTTP methods.
    return sorted(callback.actions)


def takes_pk(route: str) -> bool:
    return "<uuid:pk>" in route or "(?P<pk>" in route


def call(client: Client, method: str, url: str):
    return getattr(client, method)(url)


@pytest.fixture
def routes():
    return analysis_routes()


def test_it_covers_every_analysis_route_in_the_urlconf(routes):
    # Each page route has a row in the matrix, and each API route is a viewset route
    # (whose methods the matrix reads from the route itself).
    pages = {n for n in routes if n.startswith("analyses:")}
    api = {n for n in routes if not n.startswith("analyses:")}
    assert pages == set(PAGE_METHODS), (
        "Add the new page routes to PAGE_METHODS (and check who may call them): "
        f"{sorted(pages ^ set(PAGE_METHODS))}"
    )
    for name in api:
        assert hasattr(routes[name][1], "actions"), f"{name}: not a viewset route"
    # The routes this issue names are all there.
    for name in ("analysis-detail", "analysis-report", "analysis-video", "analysis-cancel"):
        assert name in api, name


@pytest.mark.django_db
def test_it_answers_404_to_another_user_on_every_route(client, finished, bob, routes):
    a = finished
    client.force_login(bob)
    checked = 0
    for name, (route, callback) in routes.items():
        methods = PAGE_METHODS[name] if name.startswith("analyses:") else api_methods(callback)
        if not takes_pk(route):
            continue
        url = reverse(name, kwargs={"pk": a.id, **EXTRA_KWARGS.get(name, {})})
        for method in methods:
            resp = call(client, method, url)
            # Someone else's analysis does not exist, whatever the method: not 403,
            # which would confirm the id.
            assert resp.status_code == 404, (name, method, resp.status_code)
            body = b"".join(resp.streaming_content) if resp.streaming else resp.content
            assert b"alice holiday" not in body, (name, method)
            checked += 1
    assert checked >= 16
    # And nothing happened to Alice's analysis.
    a2 = Analysis.objects.get(id=a.id)
    assert a2.status == "done" and a2.user_label == "" and a2.report is not None


@pytest.mark.django_db
def test_it_serves_the_owner_on_the_same_routes(client, finished, alice, routes):
    # The control: the same GET requests succeed for Alice, so the 404s above are
    # the ownership check, not missing files.
    client.force_login(alice)
    for name, (route, callback) in routes.items():
        methods = PAGE_METHODS[name] if name.startswith("analyses:") else api_methods(callback)
        if "get" not in methods:
            continue
        kwargs = {"pk": finished.id, **EXTRA_KWARGS.get(name, {})} if takes_pk(route) else {}
        resp = client.get(reverse(name, kwargs=kwargs))
        assert resp.status_code == 200, (name, resp.status_code)


@pytest.mark.django_db
def test_it_keeps_other_users_rows_out_of_lists(client, finished, bob):
    make_analysis(bob, original_name="bob own.mp4")
    client.force_login(bob)
    # Bob's history page and API list show his analysis only.
    page = client.get("/").content
    assert b"bob own.mp4" in page and b"alice holiday" not in page
    listing = client.get("/api/analyses/").json()
    assert [r["original_name"] for r in listing["results"]] == ["bob own.mp4"]
    assert client.get("/?q=alice").content.count(b"alice holiday") == 0


@pytest.mark.django_db
def test_it_sends_anonymous_visitors_away_from_every_route(client, finished, routes):
    a = finished
    checked = 0
    for name, (route, callback) in routes.items():
        is_page = name.startswith("analyses:")
        methods = PAGE_METHODS[name] if is_page else api_methods(callback)
        kwargs = {"pk": a.id, **EXTRA_KWARGS.get(name, {})} if takes_pk(route) else {}
        url = reverse(name, kwargs=kwargs)
        for method in methods:
            resp = call(client, method, url)
            if is_page:
                # Pages: to the sign-in page, coming back here afterwards.
                assert resp.status_code == 302, (name, method, resp.status_code)
                assert resp["Location"].startswith("/accounts/login/?next="), (name, method)
            else:
                # The API: 401 (no credentials; the token scheme is announced).
                assert resp.status_code in (401, 403), (name, method, resp.status_code)
            checked += 1
    assert checked >= 21
    assert Analysis.objects.get(id=a.id).status == "done"


@pytest.mark.django_db
def test_it_refuses_an_api_token_of_another_user(finished, bob):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=bob).key}")
    # Bob's token opens none of Alice's analysis.
    for suffix in ("", "report/", "video/"):
        assert api.get(f"/api/analyses/{finished.id}/{suffix}").status_code == 404, suffix
    assert api.post(f"/api/analyses/{finished.id}/cancel/").status_code == 404
    assert api.delete(f"/api/analyses/{finished.id}/").status_code == 404
    assert Analysis.objects.filter(id=finished.id).exists()
    # A made-up token is refused outright.
    api.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert api.get("/api/analyses/").status_code == 401


# WebSockets: through the real ASGI application (origin check, cookies, sessions).


def ws_routes() -> list[str]:
    from webapp.live.routing import websocket_urlpatterns

    return [str(p.pattern) for p in websocket_urlpatterns]


def test_it_covers_every_analysis_websocket():
    analysis_ws = [r for r in ws_routes() if "analyses" in r]
    # One analysis WebSocket, checked below; a new one must be added to these tests.
    assert analysis_ws == ["ws/analyses/<uuid:pk>/"], analysis_ws


def _session_cookie(user) -> str:
    c = Client()
    c.force_login(user)
    return f"sessionid={c.cookies['sessionid'].value}"


async def _connect(path: str, cookie: str | None):
    from webapp.asgi import application

    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await comm.connect(timeout=5)
    return comm, connected, code


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_refuses_the_websocket_to_another_user_and_to_anonymous():
    alice = await sync_to_async(make_user)("alice")
    bob = await sync_to_async(make_user)("bob", "pw-bob-123")
    a = await sync_to_async(make_analysis)(alice, status="running", progress=5)
    path = f"/ws/analyses/{a.id}/"
    assert re.fullmatch(r"/ws/analyses/[0-9a-f-]{36}/", path)

    # The owner, with her session cookie, gets the current state.
    comm, connected, _ = await _connect(path, await sync_to_async(_session_cookie)(alice))
    assert connected
    assert (await comm.receive_json_from(timeout=5))["progress"] == 5
    await comm.disconnect()

    # Bob, signed in, is refused as if the analysis did not exist.
    comm, connected, code = await _connect(path, await sync_to_async(_session_cookie)(bob))
    assert not connected and code == 4404
    await comm.disconnect()

    # No session, or a forged one: refused as anonymous.
    for cookie in (None, "sessionid=forged-session-key"):
        comm, connected, code = await _connect(path, cookie)
        assert not connected and code == 4401, cookie
        await comm.disconnect()

    # Another site's page cannot open it with the owner's cookie (origin check).
    from webapp.asgi import application

    comm = WebsocketCommunicator(
        application,
        path,
        headers=[
            (b"origin", b"http://evil.example"),
            (b"cookie", (await sync_to_async(_session_cookie)(alice)).encode()),
        ],
    )
    connected, _ = await comm.connect(timeout=5)
    assert not connected
    await comm.disconnect()
