"""The model registry: versions of the classifier and the runs that trained them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from webapp.jobrow import JobRow


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

    @property
    def headline(self) -> dict[str, Any]:
        """Frame-level metrics on held-out test data when there are some, else validation.

        The shipped bundle carries held_out.all_unseen (sources never trained on): that
        is its honest headline, not its in-domain validation score.
        """
        metrics = self.metrics or {}
        unseen = metrics.get("held_out", {}).get("all_unseen", {}).get("frame")
        if unseen:
            return {"split": "unseen sources", **unseen}
        for split in ("test", "validation"):
            frame = metrics.get(split, {}).get("frame")
            if frame:
                return {"split": split, **frame}
        return {}

    def state(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "name": self.name,
            "status": self.status,
            "bundle_path": self.bundle_path,
            "input_size": self.meta.get("input_size"),
            "threshold": self.meta.get("threshold"),
            "metrics": self.metrics,
            "parent": self.parent.version if self.parent_id and self.parent else None,
            "created_by": self.created_by.get_username() if self.created_by_id else None,
            "created": self.created.isoformat() if self.created else None,
            "activated": self.activated.isoformat() if self.activated else None,
        }


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


RUN_ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
RUN_FINISHED = (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)


class TrainingRun(JobRow):
    """One retraining requested by a staff member. The row is the truth; the page and
    the WebSocket only show it."""

    FINISHED_STATUSES = frozenset(RUN_FINISHED)

    Status = RunStatus

    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # {"dataset": "/path", "layout": "auto|folder|ffpp", "labelled": bool}
    sources = models.JSONField(default=dict, blank=True)
    # {"epochs", "input_size", "batch_size", "frames_per_video", "sbi", "fine_tune_from"}
    params = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    progress = models.PositiveSmallIntegerField(default=0)
    stage = models.CharField(max_length=32, default="queued")
    epoch = models.PositiveIntegerField(default=0)
    # Per-epoch series from Keras: {"loss": [...], "accuracy": [...], "val_loss": [...], ...}
    curves = models.JSONField(default=dict, blank=True)
    # {"test_faces": n, "new": {...}, "active": {...}}: both on the same held-out faces.
    metrics = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"training run {self.id} ({self.status})"

    @property
    def epochs(self) -> int:
        return int(self.params.get("epochs", 0))

    def state(self) -> dict[str, Any]:
        """The public state: what the WebSocket, the REST API and the page carry."""
        mv = self.model_version if self.model_version_id else None
        return {
            "id": self.id,
            "status": self.status,
            "progress": self.progress,
            "stage": self.stage,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "curves": self.curves,
            "metrics": self.metrics,
            "error": self.error,
            "log": self.log[-4000:],
            "sources": self.sources,
            "params": self.params,
            "model_version": mv.version if mv else None,
            "model_version_id": mv.id if mv else None,
            "model_version_status": mv.status if mv else None,
            "created": self.created.isoformat() if self.created else None,
            "finished": self.finished.isoformat() if self.finished else None,
        }

    def append_log(self, line: str) -> None:
        """Append one timestamped line in the database (no read-modify-write race)."""
        from django.db.models import Value
        from django.db.models.functions import Concat

        stamp = timezone.now().strftime("%H:%M:%S")
        text = f"{stamp} {line}\n"
        TrainingRun.objects.filter(id=self.id).update(
            log=Concat("log", Value(text), output_field=models.TextField())
        )
        self.log += text
