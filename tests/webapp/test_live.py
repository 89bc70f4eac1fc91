"""The WebSocket consumer over a real Redis channel layer."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from tests.webapp.conftest import make_analysis
from webapp.live.publish import publish_analysis
from webapp.live.routing import websocket_urlpatterns

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

app = URLRouter(websocket_urlpatterns)


def _communicator(analysis_id, user) -> WebsocketCommunicator:
    c = WebsocketCommunicator(app, f"/ws/analyses/{analysis_id}/")
    c.scope["user"] = user
    return c


@pytest.fixture
def owners(django_user_model):
    return (
        django_user_model.objects.create_user("dora", password="x-pw-1234"),
        django_user_model.objects.create_user("eve", password="x-pw-1234"),
    )


async def test_it_sends_the_current_state_on_connect_then_updates(owners):
    dora, _ = owners
    a = await sync_to_async(make_analysis)(dora, progress=7, stage="detecting", status="running")
    c = _communicator(a.id, dora)
    connected, _ = await c.connect()
    assert connected
    # A late page is never stale: the row as it is now, first.
    first = await c.receive_json_from(timeout=5)
    assert first["status"] == "running" and first["progress"] == 7 and first["stage"] == "detecting"
    # Then each published change.
    a.progress, a.stage = 55, "classifying"
    await sync_to_async(publish_analysis)(a)
    msg = await c.receive_json_from(timeout=5)
    assert msg["progress"] == 55 and msg["stage"] == "classifying" and msg["id"] == str(a.id)
    await c.disconnect()


async def test_it_refuses_other_users_and_anonymous_visitors(owners):
    dora, eve = owners
    a = await sync_to_async(make_analysis)(dora)
    for user in (eve, AnonymousUser()):
        c = _communicator(a.id, user)
        connected, _ = await c.connect()
        assert not connected
        await c.disconnect()
