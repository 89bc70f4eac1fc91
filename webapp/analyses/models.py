"""The Analysis row is the truth about a job; WebSocket messages only notify of changes."""

from __future__ import annotations

import uuid
from pathlib import PurePath
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from detector.verdict import uncertain_text
from webapp.jobrow import JobRow


def upload_path(instance: Analysis, filename: str) -> str:
    # Never trust the client's name on disk: keep only a short safe extension.
    ext = PurePath(filename).suffix.lower()[:8]
    if not ext[1:].isalnum():
        ext = ""
    return f"uploads/{instance.owner_id}/{instance.id}/original{ext}"


def result_path(instance: Analysis, filename: str) -> str:
    return f"results/{instance.owner_id}/{instance.id}/{filename}"


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class UserLabel(models.TextChoices):
    REAL = "real", "Real"
    FAKE = "fake", "Fake"


ACTIVE = (Status.QUEUED, Status.RUNNING)
VERDICT_LABELS = {
    "fake": "Fake",
    "real": "Real",
    "uncertain": "Uncertain",
    "no_face": "No face found",
}
FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)


class Analysis(JobRow):
    FINISHED_STATUSES = frozenset(FINISHED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="analyses"
    )
    original = models.FileField(upload_to=upload_path, max_length=300)
    original_name = models.CharField(max_length=255)
    size = models.BigIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    progress = models.PositiveSmallIntegerField(default=0)
    stage = models.CharField(max_length=32, default="queued")
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    verdict = models.JSONField(null=True, blank=True)
    verdict_label = models.CharField(max_length=16, blank=True, default="", db_index=True)
    report = models.JSONField(null=True, blank=True)
    annotated = models.FileField(upload_to=result_path, max_length=300, blank=True)
    thumbnail = models.FileField(upload_to=result_path, max_length=300, blank=True)
    duration = models.FloatField(null=True, blank=True)
    model_version = models.CharField(max_length=64, blank=True, default="")
    # Faces narrower than this (px) are shown but not judged; null: the site's
    # VERITY_MIN_FACE when the analysis runs.
    min_face = models.PositiveSmallIntegerField(null=True, blank=True)
    # The truth as the owner knows it, for retraining: "", "real" or "fake".
    user_label = models.CharField(
        max_length=8, choices=UserLabel.choices, blank=True, default="", db_index=True
    )
    labelled_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True, default="")
    # A fresh token per claim: a worker updates the row only while it still holds it, so
    # a worker that lost the job (re-queued by the reaper, cancelled and re-run) cannot
    # overwrite or delete the work of the one that has it now.
    lease = models.CharField(max_length=32, blank=True, default="")
    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["owner", "-created"])]

    def __str__(self) -> str:
        return f"{self.original_name} ({self.status})"

    @property
    def verdict_display(self) -> str:
        if not self.verdict:
            return ""
        label = VERDICT_LABELS.get(self.verdict.get("label", ""), "")
        if self.verdict.get("label") == "no_face":
            return label
        if self.verdict.get("label") == "uncertain":
            if not self.verdict.get("confidence"):
                return f"{label} (faces too small)" if self.verdict.get("note") else label
            return uncertain_text(
                float(self.verdict.get("fake_probability", 0)),
                float(self.verdict.get("threshold", 0.5)),
            )
        return f"{label} {round(100 * float(self.verdict.get('confidence', 0)))}%"

    def delete_result_files(self) -> None:
        """Delete every file the worker produced for this analysis."""
        from django.core.files.storage import default_storage

        prefix = result_path(self, "")
        try:
            _dirs, files = default_storage.listdir(prefix)
        except (FileNotFoundError, NotImplementedError):
            return
        for name in files:
            default_storage.delete(prefix + name)

    def track_crop_name(self, track_id: int, lease: str | None = None) -> str:
        """Where a track's face strip is stored: named by the lease of the worker that
        made it (by default the row's, which is the finishing worker's), so a worker that
        lost the job midway never overwrites or deletes the new holder's strips. Rows
        finished before leases existed keep their plain names."""
        lease = self.lease if lease is None else lease
        suffix = f"-{lease}" if lease else ""
        return result_path(self, f"track-{int(track_id)}{suffix}.jpg")

    def state(self) -> dict[str, Any]:
        """The public state: the same fields the WebSocket and the REST API carry."""
        return {
            "id": str(self.id),
            "status": self.status,
            "progress": self.progress,
            "stage": self.stage,
            "error": self.error,
            "verdict": self.verdict,
            "model_version": self.model_version,
            "created": self.created.isoformat() if self.created else None,
            "finished": self.finished.isoformat() if self.finished else None,
        }

    def record_transition(self, old: str, new: str, fields: dict[str, Any]) -> None:
        Transition.objects.create(
            analysis_id=self.id, old=old, new=new, reason=fields.get("error", "")[:500]
        )


class Transition(models.Model):
    """Every status change, for audit and debugging (healthchecks' Flip)."""

    analysis = models.ForeignKey(Analysis, on_delete=models.CASCADE, related_name="transitions")
    old = models.CharField(max_length=16)
    new = models.CharField(max_length=16)
    reason = models.CharField(max_length=500, blank=True, default="")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "id"]
