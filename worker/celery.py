"""The Celery app. Queues by workload, named in one place."""

from __future__ import annotations

import os
from enum import StrEnum

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")


class CeleryQueue(StrEnum):
    INFERENCE = "inference"
    TRAINING = "training"
    DEFAULT = "default"


app = Celery("verity", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(q.value) for q in CeleryQueue]
app.conf.task_routes = {
    "worker.tasks.run_analysis": {"queue": CeleryQueue.INFERENCE.value},
    "worker.tasks.run_training": {"queue": CeleryQueue.TRAINING.value},
}
app.conf.beat_schedule = {
    # Finds jobs whose worker died (or whose message Redis lost) and re-queues or fails them.
    "reap-stale-analyses": {
        "task": "worker.tasks.reap_stale_analyses",
        "schedule": float(os.environ.get("VERITY_REAPER_INTERVAL", "30")),
        "options": {"queue": CeleryQueue.DEFAULT.value, "expires": 60},
    },
}
app.autodiscover_tasks(["worker"])
