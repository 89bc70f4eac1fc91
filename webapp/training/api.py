"""REST endpoints of the model registry, staff only (IsAdminUser: 401 without
credentials, 403 for a signed-in user who is not staff)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.training import registry
from webapp.training.forms import RetrainForm
from webapp.training.models import ModelVersion, TrainingRun
from webapp.training.services import cancel_run, start_run


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="version", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "version",
            "name",
            "status",
            "bundle_path",
            "metrics",
            "meta",
            "parent",
            "created_by",
            "created",
            "activated",
        ]
        read_only_fields = fields


class TrainingRunSerializer(serializers.ModelSerializer):
    """The same fields the WebSocket carries (TrainingRun.state)."""

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "status",
            "progress",
            "stage",
            "epoch",
            "curves",
            "metrics",
            "error",
            "log",
            "sources",
            "params",
            "model_version",
            "created",
            "finished",
        ]
        read_only_fields = fields

    def to_representation(self, instance: TrainingRun) -> dict:
        return instance.state()


RetrainRequest = inline_serializer(
    "RetrainRequest",
    {
        "dataset": serializers.CharField(required=False, help_text="Absolute folder path."),
        "layout": serializers.ChoiceField(["auto", "folder", "ffpp"], required=False),
        "compression": serializers.ChoiceField(["c23", "c40", "raw"], required=False),
        "labelled": serializers.BooleanField(required=False),
        "labelled_weight": serializers.FloatField(
            required=False,
            help_text="How much the labelled clips' faces count against the dataset's "
            "(0.1 to 100; default 1).",
        ),
        "epochs": serializers.IntegerField(required=False),
        "input_size": serializers.IntegerField(required=False),
        "fine_tune_from": serializers.IntegerField(required=False, help_text="A version id."),
        "batch_size": serializers.IntegerField(required=False),
        "frames_per_video": serializers.IntegerField(required=False),
        "steps_per_epoch": serializers.IntegerField(required=False),
        "sbi": serializers.BooleanField(required=False),
        "fresh_sbi": serializers.BooleanField(
            required=False, help_text="Self-blended fakes made anew every epoch (implies sbi)."
        ),
        "average_every": serializers.IntegerField(
            required=False, help_text="Ship the mean of the weights after every N-th step."
        ),
    },
)


def _form_data(data) -> dict:
    """Request data over the form's defaults, so an API client sends only what it changes."""
    defaults = {
        name: field.initial
        for name, field in RetrainForm.base_fields.items()
        if field.initial is not None
    }
    return {**defaults, **{k: v for k, v in data.items()}}


class TrainingRunViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    permission_classes = [IsAdminUser]
    serializer_class = TrainingRunSerializer
    queryset = TrainingRun.objects.select_related("model_version")

    @extend_schema(request=RetrainRequest, responses={201: TrainingRunSerializer})
    def create(self, request: Request) -> Response:
        form = RetrainForm(_form_data(request.data))
        if not form.is_valid():
            return Response({"errors": form.errors.get_json_data()}, status=400)
        run = start_run(
            request.user, form.sources(), form.params(), form.cleaned_data["fine_tune_from"]
        )
        return Response(run.state(), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: TrainingRunSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        run = self.get_object()
        if not cancel_run(run, request.user):
            return Response(
                {
                    "error": f"The run is {run.status}; only queued or running runs can be cancelled."
                },
                status=409,
            )
        return Response(run.state())


class ModelVersionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    permission_classes = [IsAdminUser]
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.select_related("parent", "created_by")

    def list(self, request: Request, *args, **kwargs) -> Response:
        registry.ensure_registered()
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses={200: ModelVersionSerializer})
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk=None) -> Response:
        version = self.get_object()
        try:
            version = registry.promote(version.pk, request.user)
        except registry.PromotionError as exc:
            return Response({"error": str(exc)}, status=409)
        return Response(ModelVersionSerializer(version).data)

    @extend_schema(request=None, responses={200: ModelVersionSerializer})
    @action(detail=False, methods=["post"])
    def rollback(self, request: Request) -> Response:
        try:
            version = registry.rollback(request.user)
        except registry.PromotionError as exc:
            return Response({"error": str(exc)}, status=409)
        return Response(ModelVersionSerializer(version).data)
