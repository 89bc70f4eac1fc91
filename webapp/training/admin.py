"""The registry in the Django admin, for looking only: promotion goes through the staff
pages or the API, which keep exactly one version active."""

from __future__ import annotations

from django.contrib import admin

from webapp.training.models import ModelVersion, TrainingRun


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["version", "name", "status", "created", "activated", "created_by"]
    list_filter = ["status"]
    search_fields = ["version", "name"]
    readonly_fields = [f.name for f in ModelVersion._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "stage", "progress", "model_version", "created_by", "created"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in TrainingRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
