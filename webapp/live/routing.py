from __future__ import annotations

from django.urls import path

from webapp.live.consumers import AnalysisConsumer

websocket_urlpatterns = [
    path("ws/analyses/<uuid:pk>/", AnalysisConsumer.as_asgi()),
]
