from __future__ import annotations

from django.urls import path

from webapp.live.consumers import AnalysisConsumer, TrainingRunConsumer

websocket_urlpatterns = [
    path("ws/analyses/<uuid:pk>/", AnalysisConsumer.as_asgi()),
    path("ws/training-runs/<int:pk>/", TrainingRunConsumer.as_asgi()),
]
