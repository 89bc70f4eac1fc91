"""A background thread that touches a job's row while the job runs, so that a recovery
pass can tell a slow step (loading a model, one long epoch) from a dead worker."""

from __future__ import annotations

import logging
import threading

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

log = logging.getLogger(__name__)


class Heartbeat:
    """`with Heartbeat(Model.objects.filter(id=..., status=RUNNING), interval): ...`
    sets `heartbeat=now` on those rows every `interval` seconds until the block ends."""

    def __init__(self, rows: QuerySet, interval: float, name: str) -> None:
        self.rows = rows
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.rows.update(heartbeat=timezone.now())
                except Exception:  # noqa: BLE001 - one missed beat; the next may work
                    log.warning("%s: a beat failed", self._thread.name, exc_info=True)
                    connection.close()  # a broken connection is reopened on the next beat
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
