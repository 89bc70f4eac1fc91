"""Thin tasks: take an id, call one plain function, record the outcome."""

from __future__ import annotations

from celery import shared_task

from worker.celery import CeleryQueue


@shared_task(
    bind=True,
    name="worker.tasks.run_analysis",
    queue=CeleryQueue.INFERENCE.value,
    acks_late=True,
    reject_on_worker_lost=True,
    # Defaults; each send sets limits scaled to the clip's length (submit.time_limits).
    soft_time_limit=30 * 60,
    time_limit=32 * 60,
)
def run_analysis(self, analysis_id: str) -> str:
    from webapp.analyses.services import DEFERRED, execute_analysis

    outcome = execute_analysis(analysis_id)
    if outcome == DEFERRED:
        # The owner is at their running limit: try again shortly, without holding the
        # worker, and with this delivery's time limits (scaled to the clip's length).
        hard, soft = self.request.timelimit or (None, None)
        run_analysis.apply_async((analysis_id,), countdown=5, time_limit=hard, soft_time_limit=soft)
    return outcome


@shared_task(name="worker.tasks.reap_stale_analyses", queue=CeleryQueue.DEFAULT.value)
def reap_stale_analyses() -> dict[str, int]:
    from webapp.analyses.services import reap_stale
    from webapp.training.services import reap_stale_runs

    # One beat entry for both job tables (its name predates the training reaper).
    counts = reap_stale()
    counts.update({f"training_{k}": v for k, v in reap_stale_runs().items()})
    return counts


@shared_task(
    bind=True,
    name="worker.tasks.run_training",
    queue=CeleryQueue.TRAINING.value,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=12 * 3600,
    time_limit=12 * 3600 + 600,
    max_retries=None,
)
def run_training(self, run_id: int) -> str:
    from webapp.training.services import BUSY, STALE_AFTER, execute_training_run

    outcome = execute_training_run(run_id)
    if outcome == BUSY:
        # Another delivery is training it (or its worker just died): look again once a
        # dead worker's heartbeat would have gone stale.
        raise self.retry(countdown=int(STALE_AFTER.total_seconds()) + 30)
    return outcome
