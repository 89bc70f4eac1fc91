from __future__ import annotations

from rest_framework import serializers

from webapp.analyses.models import Analysis
from webapp.analyses.submit import MAX_MIN_FACE


class AnalysisSerializer(serializers.ModelSerializer):
    file = serializers.FileField(write_only=True, help_text="The video clip (multipart).")
    min_face = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=MAX_MIN_FACE,
        help_text="Faces narrower than this many px are shown but not judged (0 judges every "
        "face). Optional: without it, or null, the site's default (VERITY_MIN_FACE) applies.",
    )
    url = serializers.SerializerMethodField()

    class Meta:
        model = Analysis
        fields = [
            "id",
            "status",
            "progress",
            "stage",
            "error",
            "verdict",
            "model_version",
            "created",
            "finished",
            "original_name",
            "size",
            "duration",
            "url",
            "min_face",
            "file",
        ]
        read_only_fields = [f for f in fields if f not in ("file", "min_face")]

    def get_url(self, obj: Analysis) -> str:
        return f"/analyses/{obj.id}/"
