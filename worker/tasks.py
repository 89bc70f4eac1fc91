"""Thin tasks: take an id, call one plain function, record the outcome."""

from __future__ import annotations

from celery import shared_task

from worker.celery import CeleryQueue


@shared_task(
    name="worker.tasks.run_analysis",
    queue=CeleryQueue.INFERENCE.value,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=30 * 60,
    time_limit=32 * 60,
)
def run_analysis(analysis_id: str) -> str:
    from webapp.analyses.services import execute_analysis

    return execute_analysis(analysis_id)
