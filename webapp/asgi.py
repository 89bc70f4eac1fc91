"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")

import django  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.http import HttpRequest, HttpResponseBase  # noqa: E402


class SyncStackHandler(ASGIHandler):
    """Django's ASGI handler, entering the middleware and the view in one trip to a thread.

    Every view and middleware of this site is synchronous. The stock handler loads the
    middleware in async mode, where each of Django's middleware crosses from the event loop
    to a thread and back for its request hook and again for its response hook: about
    twenty crossings a request, 2-5 ms of CPU on this project's 2-core machine, as much as
    a status poll's own work. Loaded in sync mode, the chain runs as under WSGI, in the
    request's thread, entered once.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


django.setup(set_prefix=False)
django_asgi_app = SyncStackHandler()

from webapp.live.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
