"""The state machine both job tables share: analyses and training runs.

The row is the truth, and its status changes only by a conditional UPDATE, so two
processes (a worker and a cancel, a second delivery of one task, the reaper) can race on a
row and exactly one of them wins (healthchecks' claim-by-update).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models, transaction
from django.utils import timezone


class JobRow(models.Model):
    """Abstract: a model with a `status` field and a `finished` time."""

    # Statuses after which the row is finished: entering one stamps `finished`.
    FINISHED_STATUSES: ClassVar[frozenset[str]] = frozenset()

    class Meta:
        abstract = True

    def transition(self, old: str | tuple[str, ...], new: str, **fields: Any) -> bool:
        """Change status only if it is still `old` (a conditional UPDATE), then record it.

        Returns False when another process got there first: the caller must not act as if
        it owned the job.
        """
        olds = (old,) if isinstance(old, str) else tuple(old)
        if new in self.FINISHED_STATUSES:
            fields.setdefault("finished", timezone.now())
        previous = self.status
        with transaction.atomic():
            rows = type(self)._default_manager.filter(pk=self.pk, status__in=olds)
            changed = rows.update(status=new, **fields)
            if changed:
                self.record_transition(previous, new, fields)
        if changed:
            self.refresh_from_db()
        return bool(changed)

    def record_transition(self, old: str, new: str, fields: dict[str, Any]) -> None:
        """Called inside the transaction of a status change that happened."""
