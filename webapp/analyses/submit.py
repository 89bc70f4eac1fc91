"""Creating analyses: shared by the upload page and the REST API."""

from __future__ import annotations

from pathlib import PurePath

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from webapp.analyses.models import ACTIVE, Analysis
from webapp.analyses.validation import RejectedUpload, validate_upload


def safe_display_name(name: str) -> str:
    """The name shown to the user: no directories, no control characters, bounded length."""
    base = PurePath(name.replace("\\", "/")).name
    base = "".join(ch for ch in base if ch.isprintable()).strip() or "upload"
    if len(base) > 200:
        stem, ext = base[: 200 - 10], PurePath(base).suffix[:10]
        base = stem + ext
    return base


MAX_MIN_FACE = 2000


def parse_min_face(value: object) -> int | None:
    """The minimum face width a client asked for: None when it sent none (the site's
    default applies), else a whole number of pixels from 0 to MAX_MIN_FACE."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_MIN_FACE:
        raise RejectedUpload(
            f"min_face is the narrowest face width to judge, in pixels: a whole number from 0 "
            f"to {MAX_MIN_FACE} (0 judges every face), not {text[:20]!r}."
        )
    return int(text)


def create_analysis(user, upload: UploadedFile, min_face: int | None = None) -> Analysis:
    """Validate, store and enqueue. Raises RejectedUpload with a message for people.
    `min_face`: see parse_min_face."""
    validate_upload(upload.file, upload.size or 0, settings.VERITY_MAX_UPLOAD_BYTES)
    with transaction.atomic():
        # Count and insert under the owner's lock: two parallel uploads cannot both see
        # room for one more.
        check_queue_limit(user)
        analysis = Analysis(
            owner=user,
            original_name=safe_display_name(upload.name or "upload"),
            size=upload.size or 0,
            min_face=min_face,
            # A sign of life from the start: the reaper re-sends a queued job whose
            # message was lost (a broker restarted empty) once this is old.
            heartbeat=timezone.now(),
        )
        # Streams the temporary upload file into storage in chunks.
        analysis.original.save(upload.name or "upload", upload, save=False)
        analysis.save()
        analysis.transitions.create(old="", new="queued")
        enqueue(analysis)
    return analysis


# The first key of the PostgreSQL advisory locks that serialise one owner's submissions.
QUEUE_LOCK_NAMESPACE = 0x5645  # "VE"


def lock_owner(user) -> None:
    """Hold the owner's submission lock until the transaction ends. PostgreSQL: an advisory
    lock, which blocks only this user's other submissions (not sign-ins, which update the
    user's row). Other databases: a row lock on the user, where the backend has them."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                # Two int4 keys; a user id past 2**31 shares a lock with another, which
                # only makes their submissions wait for each other.
                "SELECT pg_advisory_xact_lock(%s::integer, %s::integer)",
                [QUEUE_LOCK_NAMESPACE, int(user.pk) % 2**31],
            )
    else:
        list(get_user_model().objects.select_for_update().filter(pk=user.pk))


def check_queue_limit(user) -> None:
    """Refuse one more queued job for a user who has VERITY_MAX_QUEUED_PER_USER waiting or
    running (uploads and re-runs alike). Call it inside the transaction that adds the job:
    it takes the owner's lock first."""
    lock_owner(user)
    active = Analysis.objects.filter(owner=user, status__in=ACTIVE).count()
    if active >= settings.VERITY_MAX_QUEUED_PER_USER:
        raise RejectedUpload(
            f"You already have {active} analyses waiting or running (the limit is "
            f"{settings.VERITY_MAX_QUEUED_PER_USER}). Wait for one to finish or cancel one."
        )


def time_limits(duration: float | None) -> tuple[int, int]:
    """(soft, hard) seconds for a clip: a base for model load and sampling, plus the
    rendering of every frame, which grows with length."""
    soft = int(300 + 3 * (duration or 600))
    return soft, soft + 60


def clip_duration(analysis: Analysis) -> float | None:
    """Best-effort length of the stored clip; None if it cannot be read here (the worker
    will report why)."""
    from detector.errors import DetectorError
    from detector.video import probe

    try:
        return probe(analysis.original.path).duration
    except (DetectorError, NotImplementedError, OSError, ValueError):
        return None


def enqueue(analysis: Analysis) -> None:
    """Send the job once the transaction commits, so the worker can see the row."""
    from worker.tasks import run_analysis

    soft, hard = time_limits(clip_duration(analysis))
    run_analysis.apply_async_on_commit((str(analysis.id),), soft_time_limit=soft, time_limit=hard)


def send(analysis: Analysis) -> None:
    """Send the job now (the reaper's re-sends), with the same limits as `enqueue`."""
    from worker.tasks import run_analysis

    soft, hard = time_limits(clip_duration(analysis))
    run_analysis.apply_async((str(analysis.id),), soft_time_limit=soft, time_limit=hard)


def rerun_analysis(analysis: Analysis) -> None:
    """Queue a finished analysis again with the current model; old results are dropped."""
    from webapp.analyses.models import FINISHED, Status

    if analysis.status not in FINISHED:
        raise RejectedUpload("Only a finished analysis can be re-run.")
    with transaction.atomic():
        check_queue_limit(analysis.owner)
        # Under the lock, and holding the row: a second re-run of the same analysis that
        # waited for the first finds it queued, and leaves its files alone.
        held = Analysis.objects.select_for_update().filter(pk=analysis.pk, status__in=FINISHED)
        if not list(held.values_list("pk", flat=True)):
            raise RejectedUpload("Only a finished analysis can be re-run.")
        # Old results go before the job can be sent (on commit), and only once it fits.
        analysis.delete_result_files()
        if not analysis.transition(
            FINISHED,
            Status.QUEUED,
            progress=0,
            stage="queued",
            error="",
            error_code="",
            verdict=None,
            verdict_label="",
            report=None,
            annotated="",
            thumbnail="",
            finished=None,
            attempts=0,
            heartbeat=timezone.now(),
        ):
            raise RejectedUpload("Only a finished analysis can be re-run.")
        enqueue(analysis)


def delete_analysis(analysis: Analysis) -> None:
    """Delete the row and its files."""
    if analysis.original:
        analysis.original.delete(save=False)
    analysis.delete_result_files()
    analysis.delete()
