"""Plain functions behind the Celery tasks: callable without Celery, which is how
most tests reach them."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import Q, QuerySet
from django.utils import timezone

from detector.errors import Cancelled, DetectorError
from detector.model import ModelBundle
from detector.pipeline import Artifacts, Options, analyse_video
from webapp.analyses.models import FINISHED, Analysis, Status
from webapp.analyses.submit import send
from webapp.heartbeat import Heartbeat
from webapp.live.publish import publish_analysis

log = logging.getLogger(__name__)

DEFERRED = "deferred"
_bundles: dict[tuple[str, float], ModelBundle] = {}


def get_bundle(path: str | None = None) -> ModelBundle:
    """The model, loaded once per process and reloaded when its files change."""
    if path is None:
        from webapp.training.registry import active_bundle_path

        path = active_bundle_path()
    path = str(path)
    meta = Path(path) / "meta.json"
    key = (path, meta.stat().st_mtime if meta.exists() else 0.0)
    if key not in _bundles:
        _bundles.clear()
        bundle = ModelBundle.load(path, runtime=settings.VERITY_RUNTIME)
        bundle.warm_up()
        _bundles[key] = bundle
    return _bundles[key]


def stale_after() -> timedelta:
    return timedelta(seconds=settings.VERITY_STALE_SECONDS)


def reap_stale() -> dict[str, int]:
    """Find jobs nobody is working on and put them right.

    - running, worker silent for VERITY_STALE_SECONDS: re-queued (the worker died), or
      failed with a reason after VERITY_MAX_ATTEMPTS attempts;
    - queued, with no sign of life for as long: sent again (a broker that lost its
      queue, e.g. Redis restarted without persistence). Duplicates are harmless: the
      claim is a conditional update.
    """
    cutoff = timezone.now() - stale_after()
    counts = {"requeued": 0, "failed": 0, "resent": 0}
    for a in Analysis.objects.filter(status=Status.RUNNING, heartbeat__lt=cutoff).defer("report"):
        # Only if its worker is still silent: one that beat since this read keeps the job.
        silent = {"heartbeat": a.heartbeat}
        if a.attempts >= settings.VERITY_MAX_ATTEMPTS:
            if a.transition(
                Status.RUNNING,
                Status.FAILED,
                where=silent,
                error="The analysis failed repeatedly (its worker stopped). Try again later.",
                error_code="too_many_attempts",
                stage="failed",
            ):
                counts["failed"] += 1
                publish_analysis(a)
        elif a.transition(
            Status.RUNNING,
            Status.QUEUED,
            where=silent,
            stage="queued",
            progress=0,
            heartbeat=timezone.now(),
            error="Its worker stopped; queued again.",
        ):
            send(a)
            counts["requeued"] += 1
            publish_analysis(a)
    resend_cutoff = timezone.now() - timedelta(seconds=settings.VERITY_RESEND_QUEUED_SECONDS)
    quiet = Q(heartbeat__lt=resend_cutoff) | Q(heartbeat__isnull=True, created__lt=resend_cutoff)
    for a in Analysis.objects.filter(quiet, status=Status.QUEUED).only(
        "id", "heartbeat", "original"
    ):
        if a.take_for_resend():
            send(a)
            counts["resent"] += 1
    if any(counts.values()):
        log.warning("reaper: %s", counts)
    return counts


class _Progress:
    """Throttled progress: at most a few row updates and messages per second, and a
    check at each one that this worker still holds the job (`mine`: the row while it is
    running under this worker's lease)."""

    def __init__(self, analysis: Analysis, mine: QuerySet, interval: float = 0.5) -> None:
        self.analysis = analysis
        self.mine = mine
        self.interval = interval
        self.last_time = 0.0
        self.last_stage = ""
        self.last_pct = -1

    def __call__(self, stage: str, fraction: float) -> None:
        pct = min(99, int(fraction * 100))
        now = time.monotonic()
        if stage == self.last_stage and (
            pct == self.last_pct or now - self.last_time < self.interval
        ):
            return
        self.last_time, self.last_stage, self.last_pct = now, stage, pct
        a = self.analysis
        changed = self.mine.update(progress=pct, stage=stage, heartbeat=timezone.now())
        if not changed:
            raise Cancelled("The analysis was cancelled.")
        a.progress, a.stage = pct, stage
        publish_analysis(a)


def _local_copy(analysis: Analysis, tmp: Path) -> Path:
    """The upload as a local file: storage may be remote (S3), so copy in chunks."""
    try:
        return Path(analysis.original.path)
    except NotImplementedError:
        dest = tmp / f"input{Path(analysis.original.name).suffix}"
        with analysis.original.open("rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        return dest


def _jpeg(rgb) -> ContentFile:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    return ContentFile(buf.tobytes())


def _save_images(analysis: Analysis, artifacts: Artifacts, lease: str, written: list[str]) -> None:
    """Save the thumbnail and the face strips (named by this worker's lease), appending
    each stored name to `written`."""
    if artifacts.thumbnail is not None:
        analysis.thumbnail.save("thumbnail.jpg", _jpeg(artifacts.thumbnail), save=False)
        written.append(analysis.thumbnail.name)
    for tid, crops in artifacts.track_crops.items():
        strip = np.concatenate(crops, axis=1)
        # A fresh lease per claim: the name is free, so storage keeps it as asked.
        written.append(default_storage.save(analysis.track_crop_name(tid, lease), _jpeg(strip)))


def _delete(names: list[str]) -> None:
    """Delete the files this attempt stored, and only those: the folder may hold the
    results of the attempt that holds the job now."""
    for name in names:
        default_storage.delete(name)


def execute_analysis(analysis_id: str) -> str:
    """Run one analysis and record its outcome; returns the final status.

    1. Load the row; do nothing if it is gone or already finished (a duplicate delivery).
    2. Claim it with a conditional update (only one worker wins).
    3. Run the detector, publishing throttled progress.
    4. Store the report and annotated video through the storage API; mark done.
    Any failure is recorded on the row with a message; nothing escapes to kill the worker.
    """
    try:
        analysis = Analysis.objects.get(id=analysis_id)
    except Analysis.DoesNotExist:
        log.info("analysis %s no longer exists", analysis_id)
        return "missing"
    if analysis.status in FINISHED:
        return analysis.status
    if (
        analysis.attempts >= settings.VERITY_MAX_ATTEMPTS
        and analysis.status == Status.RUNNING
        # A live worker holds it otherwise: this delivery is a duplicate (claim says no).
        and analysis.is_silent(stale_after())
    ):
        analysis.transition(
            Status.RUNNING,
            Status.FAILED,
            where={"heartbeat": analysis.heartbeat},
            error="The analysis failed repeatedly (its worker stopped). Try again later.",
            error_code="too_many_attempts",
        )
        publish_analysis(analysis)
        return analysis.status
    running = Analysis.objects.filter(owner_id=analysis.owner_id, status=Status.RUNNING).exclude(
        id=analysis.id
    )
    if analysis.status == Status.QUEUED and running.count() >= settings.VERITY_MAX_RUNNING_PER_USER:
        # The caller sends it again shortly; the fresh heartbeat tells the reaper that a
        # message for it is alive, so it does not start a second chain of re-sends.
        Analysis.objects.filter(id=analysis.id, status=Status.QUEUED).update(
            heartbeat=timezone.now()
        )
        return DEFERRED
    lease = uuid.uuid4().hex
    if not analysis.claim(stale_after(), error="", lease=lease):
        return analysis.status
    publish_analysis(analysis)
    log.info("analysis %s: started (attempt %s)", analysis.id, analysis.attempts)
    held = {"lease": lease}
    mine = Analysis.objects.filter(id=analysis.id, status=Status.RUNNING, **held)
    written: list[str] = []  # files this attempt stored: all it may delete
    # Touch the row every few seconds, well inside the reaper's staleness window.
    heartbeat = Heartbeat(
        mine, max(1.0, settings.VERITY_STALE_SECONDS / 4), f"heartbeat-{analysis.id}"
    )
    with tempfile.TemporaryDirectory(prefix="verity-") as tmpdir, heartbeat:
        tmp = Path(tmpdir)
        out_video = tmp / "annotated.mp4"
        try:
            bundle = get_bundle()
            mine.update(model_version=bundle.meta.version)
            artifacts = Artifacts()
            report = analyse_video(
                _local_copy(analysis, tmp),
                bundle,
                Options(
                    frames=settings.VERITY_FRAMES,
                    min_face=(
                        settings.VERITY_MIN_FACE if analysis.min_face is None else analysis.min_face
                    ),
                ),
                _Progress(analysis, mine),
                out_video,
                artifacts=artifacts,
            )
            data = report.to_dict()
            if not mine.exists():
                raise Cancelled("The analysis was cancelled.")
            with open(out_video, "rb") as fh:
                analysis.annotated.save("annotated.mp4", File(fh), save=False)
            written.append(analysis.annotated.name)
            _save_images(analysis, artifacts, lease, written)
            done = analysis.transition(
                Status.RUNNING,
                Status.DONE,
                where=held,
                progress=100,
                stage="done",
                report=data,
                verdict=data["verdict"],
                verdict_label=data["verdict"]["label"],
                duration=data["video"]["duration"],
                annotated=analysis.annotated.name,
                thumbnail=analysis.thumbnail.name,
                model_version=bundle.meta.version,
            )
            if not done:
                # Cancelled, or the job went to another worker, while we were saving.
                _delete(written)
        except SoftTimeLimitExceeded:
            analysis.transition(
                Status.RUNNING,
                Status.FAILED,
                where=held,
                error="The analysis took longer than its time limit and was stopped. Try a shorter clip.",
                error_code="time_limit",
                stage="failed",
            )
            _delete(written)
        except Cancelled:
            log.info("analysis %s: cancelled, or no longer this worker's", analysis.id)
            _delete(written)
        except DetectorError as exc:
            log.warning("analysis %s: %s: %s", analysis.id, exc.code, exc)
            analysis.transition(
                Status.RUNNING,
                Status.FAILED,
                where=held,
                error=str(exc),
                error_code=exc.code,
                stage="failed",
            )
        except Exception as exc:  # noqa: BLE001 - record it; the worker lives on
            log.exception("analysis %s: internal error", analysis.id)
            analysis.transition(
                Status.RUNNING,
                Status.FAILED,
                where=held,
                error=f"Verity hit an internal error while analysing this clip ({type(exc).__name__}). It has been logged.",
                error_code="internal_error",
                stage="failed",
            )
    try:
        analysis.refresh_from_db()
    except Analysis.DoesNotExist:  # deleted by its owner while it ran
        log.info("analysis %s was deleted while it ran", analysis_id)
        return "missing"
    publish_analysis(analysis)
    log.info("analysis %s: %s", analysis.id, analysis.status)
    return analysis.status
