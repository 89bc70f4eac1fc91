from __future__ import annotations

from rest_framework import serializers

from webapp.analyses.models import Analysis


class AnalysisSerializer(serializers.ModelSerializer):
    file = serializers.FileField(write_only=True, help_text="The video clip (multipart).")
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
            "file",
        ]
        read_only_fields = [f for f in fields if f != "file"]

    def get_url(self, obj: Analysis) -> str:
        return f"/analyses/{obj.id}/"
