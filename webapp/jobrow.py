"""The state machine both job tables share: analyses and training runs.

The row is the truth, and its status changes only by a conditional UPDATE, so two
processes (a worker and a cancel, a second delivery of one task, the reaper) can race on a
row and exactly one of them wins (healthchecks' claim-by-update).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

QUEUED = "queued"
RUNNING = "running"


class JobRow(models.Model):
    """Abstract: a model with `status` (including "queued" and "running"), `started`,
    `finished`, `heartbeat`, `stage`, `progress` and `attempts` fields."""

    # Statuses after which the row is finished: entering one stamps `finished`.
    FINISHED_STATUSES: ClassVar[frozenset[str]] = frozenset()

    class Meta:
        abstract = True

    def transition(
        self,
        old: str | tuple[str, ...],
        new: str,
        *,
        where: dict[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """Change status only if it is still `old` (a conditional UPDATE), then record it.
        `where` adds conditions: the lease of the worker that holds the job, or the
        heartbeat a reaper read.

        Returns False when another process got there first: the caller must not act as if
        it owned the job.
        """
        olds = (old,) if isinstance(old, str) else tuple(old)
        if new in self.FINISHED_STATUSES:
            fields.setdefault("finished", timezone.now())
        previous = self.status
        with transaction.atomic():
            rows = type(self)._default_manager.filter(pk=self.pk, status__in=olds, **(where or {}))
            changed = rows.update(status=new, **fields)
            if changed:
                self.record_transition(previous, new, fields)
        if changed:
            self.refresh_from_db()
        return bool(changed)

    def is_silent(self, stale_after: timedelta) -> bool:
        """No sign of life (heartbeat) for longer than `stale_after`, as this row was read."""
        return self.heartbeat is None or timezone.now() - self.heartbeat > stale_after

    def take_for_resend(self) -> bool:
        """For a reaper about to send a queued job's message again: stamp the heartbeat, if
        it is still the one this process read, so of two reapers only one sends."""
        return bool(
            type(self)
            ._default_manager.filter(pk=self.pk, status=QUEUED, heartbeat=self.heartbeat)
            .update(heartbeat=timezone.now())
        )

    def claim(self, stale_after: timedelta, **fields: Any) -> bool:
        """Take the job for this worker: from queued, or from running when its worker has
        been silent longer than `stale_after` (the broker redelivered the task after the
        worker died). Stamps `started`, `heartbeat` and `attempts`; False if another
        process holds it or took it first.

        The takeover is conditional on the heartbeat this process read, so of two
        workers that both saw the row silent, exactly one wins.
        """
        now = timezone.now()
        fields = dict(
            started=now,
            heartbeat=now,
            stage="starting",
            progress=0,
            attempts=F("attempts") + 1,
            **fields,
        )
        if self.transition(QUEUED, RUNNING, **fields):
            return True
        heartbeat = self.heartbeat
        if self.status != RUNNING or not self.is_silent(stale_after):
            return False
        taken = (
            type(self)
            ._default_manager.filter(pk=self.pk, status=RUNNING, heartbeat=heartbeat)
            .update(**fields)
        )
        if taken:
            self.refresh_from_db()
        return bool(taken)

    def record_transition(self, old: str, new: str, fields: dict[str, Any]) -> None:
        """Called inside the transaction of a status change that happened."""
