from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import DefaultRouter

from webapp.api.views import AnalysisViewSet, api_docs
from webapp.training.api import ModelVersionViewSet, TrainingRunViewSet

router = DefaultRouter(trailing_slash=True)
router.register("analyses", AnalysisViewSet, basename="analysis")
router.register("training-runs", TrainingRunViewSet, basename="training-run")
router.register("models", ModelVersionViewSet, basename="model-version")

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", api_docs, name="api-docs"),
    path("", include(router.urls)),
]
