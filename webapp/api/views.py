from __future__ import annotations

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.analyses.media import serve_file
from webapp.analyses.models import ACTIVE, Analysis, Status
from webapp.analyses.submit import create_analysis, delete_analysis, parse_min_face
from webapp.analyses.validation import RejectedUpload
from webapp.api.serializers import AnalysisSerializer

# The Swagger UI is served from our own static files (drf-spectacular-sidecar: a
# self-hosted site must not depend on a CDN); its page has an inline <style> and its
# start-up script is a separate request (the split view), so only style is widened.
api_docs = csp_update({"style-src": [UNSAFE_INLINE]})(
    SpectacularSwaggerSplitView.as_view(url_name="api-schema")
)


class AnalysisViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = AnalysisSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Analysis.objects.none()
        # Ownership is the queryset: another user's id is simply not found (404).
        return Analysis.objects.filter(owner=self.request.user).defer("report")

    def create(self, request: Request) -> Response:
        f = request.FILES.get("file")
        if f is None:
            return Response({"error": "Send the clip as the multipart field 'file'."}, status=400)
        try:
            analysis = create_analysis(
                request.user, f, parse_min_face(request.data.get("min_face"))
            )
        except RejectedUpload as exc:
            return Response({"error": str(exc)}, status=400)
        return Response(AnalysisSerializer(analysis).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: Analysis) -> None:
        if instance.status in ACTIVE:
            instance.transition(ACTIVE, Status.CANCELLED, error="Deleted by its owner.")
        delete_analysis(instance)

    @extend_schema(responses={200: dict})
    @action(detail=True, methods=["get"])
    def report(self, request: Request, pk=None) -> HttpResponse:
        analysis = Analysis.objects.get(pk=self.get_object().pk)
        if analysis.report is None:
            return JsonResponse({"error": "The report is not ready."}, status=404)
        return JsonResponse(analysis.report)

    @extend_schema(responses={(200, "video/mp4"): bytes, (206, "video/mp4"): bytes})
    @action(detail=True, methods=["get"])
    def video(self, request: Request, pk=None) -> HttpResponse:
        analysis = self.get_object()
        if not analysis.annotated:
            return JsonResponse({"error": "The annotated video is not ready."}, status=404)
        return serve_file(request._request, analysis.annotated, "video/mp4")

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        analysis = self.get_object()
        if not analysis.transition(
            ACTIVE, Status.CANCELLED, error="Cancelled by its owner.", stage="cancelled"
        ):
            return Response(
                {
                    "error": f"The analysis is {analysis.status}; only queued or running ones can be cancelled."
                },
                status=409,
            )
        from webapp.live.publish import publish_analysis

        publish_analysis(analysis)
        return Response(AnalysisSerializer(analysis).data)
