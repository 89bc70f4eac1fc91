"""The model registry: versions of the classifier and the runs that trained them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        TRAINING = "training", "Training"
        READY = "ready", "Ready"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"
        FAILED = "failed", "Failed"

    version = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=100, default="verity-xception")
    bundle_path = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.READY, db_index=True
    )
    metrics = models.JSONField(default=dict, blank=True)
    meta = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created = models.DateTimeField(default=timezone.now)
    activated = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            # Exactly one active version: the database enforces "at most one".
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="active"), name="one_active_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.status})"
