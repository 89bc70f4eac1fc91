"""Plain functions behind the training task: callable without Celery.

A run reads its sources, extracts faces at the requested input size, splits them by
group (one clip or identity never straddles splits), trains, and then evaluates the
new bundle and the active one on the same held-out test faces. It never touches the
active version: promotion is a separate, deliberate step (registry.promote).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from detector.errors import Cancelled
from detector.metrics import auc_difference
from detector.model import ModelBundle
from webapp.heartbeat import Heartbeat
from webapp.live.publish import publish_training_run
from webapp.training.models import RUN_FINISHED, ModelVersion, RunStatus, TrainingRun

log = logging.getLogger(__name__)

BUSY = "busy"
# A running run whose heartbeat is older than this has lost its worker.
STALE_AFTER = timedelta(minutes=5)
HEARTBEAT_SECONDS = 30.0
SEED = 1337
LABELLED_SOURCE = "labels:users"


class RunFailed(Exception):
    """A run that cannot go on; the message is shown to staff as the reason."""


# ---- starting and cancelling ---------------------------------------------------------


def start_run(user, sources: dict[str, Any], params: dict[str, Any], parent=None) -> TrainingRun:
    """Create the row and queue the task once it is committed (the worker must see it)."""
    from worker.tasks import run_training

    with transaction.atomic():
        run = TrainingRun.objects.create(
            created_by=user if user and user.is_authenticated else None,
            sources=sources,
            params={**params, "fine_tune_from": parent.version if parent else None},
            parent=parent,
            heartbeat=timezone.now(),
        )
        run.append_log(f"queued by {user.get_username() if user else 'system'}")
        run_training.delay_on_commit(run.id)
    return run


def cancel_run(run: TrainingRun, user=None) -> bool:
    """Stop a queued or running run. The worker notices at its next progress update
    (during extraction) or at the end of the current epoch, and cleans up."""
    who = user.get_username() if user else "staff"
    if not run.transition(
        (RunStatus.QUEUED, RunStatus.RUNNING),
        RunStatus.CANCELLED,
        error=f"Cancelled by {who}. The active model is unchanged.",
        stage="cancelled",
    ):
        return False
    run.append_log(f"cancelled by {who}")
    publish_training_run(run)
    return True


# ---- sources -------------------------------------------------------------------------


def labelled_analyses():
    """Finished analyses whose owner recorded the truth: the clips staff can train on."""
    from webapp.analyses.models import Analysis, Status

    return (
        Analysis.objects.filter(status=Status.DONE)
        .exclude(user_label="")
        .select_related("owner")
        .defer("report")
        .order_by("-labelled_at")
    )


def _labelled_items(tmp: Path) -> list:
    from detector.training import Item

    items = []
    for a in labelled_analyses():
        try:
            path = Path(a.original.path)
        except NotImplementedError:
            # Remote storage (S3): copy the clip here in chunks.
            path = tmp / f"{a.id}{Path(a.original.name).suffix}"
            with a.original.open("rb") as src, open(path, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
        items.append(
            Item(
                str(path),
                1 if a.user_label == "fake" else 0,
                LABELLED_SOURCE,
                f"labels/{a.id}",
                "video",
            )
        )
    return items


def dataset_items(path: str, layout: str = "auto", compression: str = "c23") -> list:
    """Items from a folder on the server: FaceForensics++ layout, or real/ and fake/."""
    from detector.training import ffpp_items, folder_items

    root = Path(path)
    if not root.is_dir():
        raise RunFailed(f"The dataset folder {path} does not exist on the training server.")
    is_ffpp = (root / "original_sequences").is_dir() or (root / "manipulated_sequences").is_dir()
    try:
        if layout == "ffpp" or (layout == "auto" and is_ffpp):
            return ffpp_items(root, compression)
        # The frames of one video and the photos of one person share a split.
        return folder_items(root, group_by="video")
    except ValueError as exc:
        raise RunFailed(str(exc)) from exc


def labelled_weights(sources: dict[str, Any]) -> dict[str, float]:
    """The source weights of a run: the labelled clips' weight, when it is not 1. Their
    self-blends (`sbi:` + their source) weigh the same, so a weight moves a source as a
    whole."""
    w = float(sources.get("labelled_weight") or 1.0)
    if not sources.get("labelled") or w == 1.0:
        return {}
    return {LABELLED_SOURCE: w, f"sbi:{LABELLED_SOURCE}": w}


def gather_items(run: TrainingRun, tmp: Path) -> list:
    items = []
    if run.sources.get("dataset"):
        items += dataset_items(
            run.sources["dataset"],
            run.sources.get("layout", "auto"),
            run.sources.get("compression", "c23"),
        )
    if run.sources.get("labelled"):
        labelled = _labelled_items(tmp)
        if not labelled:
            raise RunFailed("No clip has been labelled by its owner yet.")
        items += labelled
    if not items:
        raise RunFailed("The run has no data source.")
    return items


def split_faces(faces, seed: int = SEED):
    """(train, val, test) by group with split_of. A small data set may leave validation
    or test empty by chance: then one training group is moved there, so the threshold
    and the comparison always have data."""
    from detector.training import split_of

    groups = sorted(set(faces.groups.tolist()))
    if len(groups) < 3:
        raise RunFailed(
            f"Only {len(groups)} distinct clip(s) or image(s): at least 3 are needed to hold "
            "some out for validation and testing."
        )
    assign = {g: split_of(g, seed) for g in groups}
    for needed in ("test", "val"):
        if needed not in assign.values():
            train_groups = [g for g in groups if assign[g] == "train"]
            assign[train_groups[len(train_groups) // 2]] = needed
    split = np.array([assign[g] for g in faces.groups.tolist()])
    return tuple(faces.subset(split == s) for s in ("train", "val", "test"))


# ---- progress ------------------------------------------------------------------------


class _Reporter:
    """Row updates and WebSocket notifications, each one a check for cancellation and for
    ownership: an update finds the row only while it is running under this attempt (a
    worker whose beats stopped may have been taken over by another)."""

    def __init__(self, run: TrainingRun, interval: float = 1.0) -> None:
        self.run = run
        self.attempt = run.attempts
        self.version_id: int | None = None  # the version this attempt made, once it has
        self.interval = interval
        self.last = 0.0

    def update(self, force: bool = True, **fields: Any) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        changed = self.rows().update(heartbeat=timezone.now(), **fields)
        if not changed:
            raise Cancelled("The run was cancelled.")
        for k, v in fields.items():
            setattr(self.run, k, v)
        publish_training_run(self.run)

    def rows(self):
        return TrainingRun.objects.filter(
            id=self.run.id, status=RunStatus.RUNNING, attempts=self.attempt
        )

    def owned(self) -> bool:
        """Still this attempt's run (not deleted, not taken over)?"""
        return TrainingRun.objects.filter(id=self.run.id, attempts=self.attempt).exists()

    def extraction(self, lo: int, hi: int, stage: str) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            pct = lo + int((hi - lo) * done / max(1, total))
            self.update(force=done == total, progress=pct, stage=stage)

        return progress

    def epoch(self, epochs: int) -> Callable[[int, dict[str, float]], None]:
        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            curves = dict(self.run.curves or {})
            for k, v in logs.items():
                # A resumed run starts again after its last saved epoch.
                curves[k] = list(curves.get(k, []))[: epoch - 1] + [float(v)]
            self.update(
                progress=30 + int(60 * epoch / max(1, epochs)),
                stage="training",
                epoch=epoch,
                curves=curves,
            )
            self.run.append_log(
                f"epoch {epoch}/{epochs}: " + " ".join(f"{k}={v:.4f}" for k, v in logs.items())
            )

        return on_epoch


# ---- the run -------------------------------------------------------------------------


def _version_name(run: TrainingRun) -> str:
    return f"{timezone.now():%Y%m%d-%H%M%S}-run{run.id}"


def models_dir() -> Path:
    return Path(settings.VAR_DIR) / "models"


def evaluate_bundle(bundle, faces) -> tuple[dict[str, Any], Any]:
    """The bundle's metrics on `faces`, and its scores (labels, scores, clips)."""
    from detector.training import evaluate_scores

    scores = bundle.predict(faces.x)
    return evaluate_scores(faces, scores, bundle.meta.threshold), (
        faces.y,
        scores,
        faces.video_ids,
    )


def _evaluate_active(
    active: ModelVersion, test_items: list, test_faces, frames: int
) -> tuple[dict[str, Any], Any]:
    """The active bundle on the same held-out clips, re-cropped at its own input size."""
    from detector.training import extract_faces

    out: dict[str, Any] = {"version": active.version}
    scored = None
    try:
        bundle = ModelBundle.load(active.bundle_path)
        faces = test_faces
        if bundle.input_size != test_faces.x.shape[1]:
            faces = extract_faces(test_items, bundle.input_size, frames)
        metrics, scored = evaluate_bundle(bundle, faces)
        out.update(metrics)
    except Exception as exc:  # noqa: BLE001 - the comparison is informative, not essential
        log.warning("could not evaluate the active version %s", active.version, exc_info=True)
        out["error"] = f"The active version could not be evaluated: {exc}"
    return out, scored


def execute_training_run(run_id: int) -> str:
    """Run one training job and record its outcome; returns the final status.

    1. Load the row; do nothing if it is gone or finished; claim it (one worker wins).
    2. Build items from the sources and extract faces at the requested input size.
    3. Split by group; train, updating the row and publishing after every epoch.
    4. Save the bundle; evaluate it and the active version on the same test faces.
    5. The new version is `ready`; the run is `done`. On any failure or a cancel the
       version is `failed`, the run says why, and the active version is untouched.
    """
    run = TrainingRun.objects.filter(id=run_id).select_related("parent").first()
    if run is None:
        return "missing"
    if run.status in RUN_FINISHED:
        return run.status
    if run.attempts >= settings.VERITY_MAX_ATTEMPTS and run.is_silent(STALE_AFTER):
        # Its workers keep dying (killed for memory, most likely): stop trying.
        _give_up(run)
        return run.status
    if not run.claim(STALE_AFTER):
        return BUSY
    publish_training_run(run)
    run.append_log(f"started (attempt {run.attempts})")
    work = work_dir(run)
    reporter = _Reporter(run)
    try:
        heartbeat = Heartbeat(reporter.rows(), HEARTBEAT_SECONDS, f"train-hb-{run.id}")
        with heartbeat, tempfile.TemporaryDirectory(prefix="verity-train-") as tmp:
            _train(run, reporter, Path(tmp), work)
    except Cancelled:
        if reporter.owned():  # else deleted or taken over: not this attempt's to record
            run.refresh_from_db()
            run.append_log("stopped: cancelled")
            if run.status == RunStatus.RUNNING:
                run.transition(RunStatus.RUNNING, RunStatus.CANCELLED, error="Cancelled.")
    except Exception as exc:  # noqa: BLE001 - record it; the worker lives on
        from celery.exceptions import SoftTimeLimitExceeded

        if isinstance(exc, RunFailed):
            reason = str(exc)
        elif isinstance(exc, SoftTimeLimitExceeded):
            reason = "The run took longer than its time limit and was stopped."
        else:
            log.exception("training run %s: internal error", run.id)
            reason = f"Training failed with an internal error ({type(exc).__name__}: {exc})."
        if reporter.owned():
            run.append_log(f"failed: {reason}")
            run.transition(
                RunStatus.RUNNING,
                RunStatus.FAILED,
                error=f"{reason} The active model is unchanged.",
                stage="failed",
            )
    finally:
        current = TrainingRun.objects.filter(id=run.id).first()
        if current is not None and current.attempts != reporter.attempt:
            # Another worker took the run over (this one's beats had stopped): its row,
            # version and work folder are that attempt's; only what this one made goes.
            _discard_version(
                reporter.version_id, f"Attempt {reporter.attempt} lost the run to another."
            )
        else:
            if current is None or current.status != RunStatus.DONE:
                # Whatever was made is not a usable version; the active one keeps serving.
                _discard_version(
                    reporter.version_id or (current and current.model_version_id),
                    (current and current.error) or "The run was deleted.",
                )
            shutil.rmtree(work, ignore_errors=True)
    if current is None:  # deleted by staff while it ran, cleaned up all the same
        log.info("training run %s was deleted while it ran", run_id)
        return "missing"
    if current.attempts != reporter.attempt:
        log.warning("training run %s: attempt %s was taken over", run_id, reporter.attempt)
        return current.status
    run.refresh_from_db()
    publish_training_run(run)
    log.info("training run %s: %s", run.id, run.status)
    return run.status


def work_dir(run: TrainingRun) -> Path:
    """Where a run keeps its checkpoints and state between attempts."""
    return Path(settings.VAR_DIR) / "training" / f"run-{run.id}"


def _discard_version(version_id: int | None, reason: str) -> None:
    """A version a run made but did not finish: failed, with its files removed (only
    those under models_dir(): never a folder it did not create)."""
    made = ModelVersion.objects.filter(id=version_id).first() if version_id else None
    if made is None or made.status != ModelVersion.Status.TRAINING:
        return
    made.status = ModelVersion.Status.FAILED
    made.meta = {**made.meta, "error": reason}
    made.save(update_fields=["status", "meta"])
    if Path(made.bundle_path).parent == models_dir():
        shutil.rmtree(made.bundle_path, ignore_errors=True)


def _give_up(run: TrainingRun) -> None:
    reason = (
        f"The run stopped {run.attempts} times without finishing (its worker died, "
        "perhaps out of memory). The active model is unchanged."
    )
    if run.transition(
        (RunStatus.QUEUED, RunStatus.RUNNING), RunStatus.FAILED, error=reason, stage="failed"
    ):
        run.append_log(f"failed: {reason}")
        _discard_version(run.model_version_id, reason)
        shutil.rmtree(work_dir(run), ignore_errors=True)
        publish_training_run(run)


def reap_stale_runs() -> dict[str, int]:
    """Training runs nobody is working on (the analyses' reaper does the same for clips):

    - running, silent for STALE_AFTER: failed with a reason on its last attempt, else
      queued again and sent (its message may be gone: acked when a hard time limit
      killed it, or lost with Redis); it resumes from its last saved epoch;
    - queued, silent for VERITY_RESEND_QUEUED_SECONDS: sent again (a lost message).
      Duplicates are harmless: the claim is a conditional update.
    """
    from worker.tasks import run_training

    counts = {"failed": 0, "requeued": 0, "resent": 0}
    stale = timezone.now() - STALE_AFTER
    for run in TrainingRun.objects.filter(status=RunStatus.RUNNING, heartbeat__lt=stale):
        if run.attempts >= settings.VERITY_MAX_ATTEMPTS:
            _give_up(run)
            counts["failed"] += 1
        elif run.transition(
            RunStatus.RUNNING, RunStatus.QUEUED, stage="queued", heartbeat=timezone.now()
        ):
            run.append_log("its worker stopped: queued again")
            run_training.apply_async((run.id,))
            counts["requeued"] += 1
            publish_training_run(run)
    resend = timezone.now() - timedelta(seconds=settings.VERITY_RESEND_QUEUED_SECONDS)
    for run in TrainingRun.objects.filter(status=RunStatus.QUEUED, heartbeat__lt=resend):
        if run.take_for_resend():
            run_training.apply_async((run.id,))
            counts["resent"] += 1
    if any(counts.values()):
        log.warning("training reaper: %s", counts)
    return counts


def _train(run: TrainingRun, reporter: _Reporter, tmp: Path, work: Path) -> ModelVersion:
    from detector.training import (
        FaceSet,
        TrainConfig,
        extract_faces,
        planned_faces,
        save_curves,
        train,
    )
    from webapp.training.registry import ensure_registered

    p = run.params
    size = int(p.get("input_size", 160))
    epochs = int(p.get("epochs", 5))
    frames = int(p.get("frames_per_video", 16))

    # 1. Sources and faces.
    reporter.update(stage="reading sources", progress=1)
    items = gather_items(run, tmp)
    run.append_log(f"{len(items)} files from the sources")
    faces = extract_faces(
        items,
        size,
        frames,
        progress=reporter.extraction(2, 30, "extracting faces"),
        detect_images=not p.get("aligned", False),
    )
    if not len(faces):
        raise RunFailed("No face was found in any of the source files.")

    # 2. Split by group; self-blended fakes only from training faces, after the split.
    tr, va, te = split_faces(faces, SEED)
    fresh = None
    if p.get("sbi") or p.get("fresh_sbi"):
        from detector.sbi import FreshBlends, self_blended_set

        if p.get("fresh_sbi"):  # made anew for every epoch, from the training reals
            fresh = FreshBlends(tr, SEED)
        else:
            tr = FaceSet.concat([tr, self_blended_set(tr, SEED)])
        if len(va) and not (va.y == 1).any():
            va = FaceSet.concat([va, self_blended_set(va, SEED + 1)])
    if len(set(tr.y.tolist())) < 2 and not fresh:  # fresh blends (if any) are the fakes
        raise RunFailed(
            "The training faces are all of one class: add real and fake data "
            "(or tick 'add self-blended fakes')."
        )
    # Weights only for sources training has: the split may leave no labelled clip there.
    present = set(planned_faces(tr, fresh is not None)[1].tolist())
    weights = {k: w for k, w in labelled_weights(run.sources).items() if k in present}
    if weights:
        run.append_log(f"source weights: {weights}")
    test_groups = set(te.groups.tolist())
    test_items = [it for it in items if it.group in test_groups]
    run.append_log(f"faces: train {len(tr)}, validation {len(va)}, test {len(te)} (split by clip)")

    # 3. The version row, then training. An earlier attempt's unfinished version goes.
    _discard_version(run.model_version_id, f"Superseded by attempt {run.attempts}.")
    name = _version_name(run)
    out_dir = models_dir() / name
    version = ModelVersion.objects.create(
        version=name,
        status=ModelVersion.Status.TRAINING,
        bundle_path=str(out_dir),
        parent=run.parent,
        created_by=run.created_by,
        meta={"input_size": size},
    )
    reporter.version_id = version.id
    TrainingRun.objects.filter(id=run.id).update(model_version=version)
    run.model_version = version
    reporter.update(stage="training", progress=30)
    config = TrainConfig(
        input_size=size,
        epochs=epochs,
        batch_size=int(p.get("batch_size", 16)),
        steps_per_epoch=p.get("steps_per_epoch") or None,
        patience=int(p.get("patience", 3)),
        average_every=p.get("average_every") or None,
        source_weights=weights,
        seed=SEED,
        fine_tune_from=run.parent.bundle_path if run.parent else None,
        extra={"run": run.id, "sources": run.sources},
    )
    bundle, history = train(
        tr,
        va,
        config,
        work,
        reporter.epoch(epochs),
        name="verity-xception",
        version=name,
        fresh=fresh,
    )

    # 4. Evaluate the new and the active version on the same held-out faces; save.
    reporter.update(stage="evaluating", progress=92)
    new_metrics, new_scored = evaluate_bundle(bundle, te)
    bundle.meta.metrics["test"] = new_metrics
    bundle.meta.parent = run.parent.version if run.parent else None
    bundle.save(out_dir)
    try:
        save_curves(history, new_scored[:2] if len(te) else None, out_dir / "curves")
    except Exception:  # noqa: BLE001 - pictures for people; the numbers are in the row
        log.warning("could not draw curves for run %s", run.id, exc_info=True)
    if settings.VERITY_RUNTIME != "keras":
        # Export and verify the ONNX runtime here, on the training worker: inference
        # workers then find it in the shared cache instead of converting it themselves.
        try:
            ModelBundle.load(out_dir, runtime="onnx")
        except Exception as exc:  # noqa: BLE001 - optional: never costs a finished run
            log.warning("version %s will run on Keras: %s", name, exc)
    active = ensure_registered()
    active = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first() or active
    active_metrics, active_scored = _evaluate_active(active, test_items, te, frames)
    comparison = {
        "test_faces": int(len(te)),
        "test_clips": len(test_groups),
        "new": {"version": name, **new_metrics},
        "active": active_metrics,
        # New minus active ROC AUC, with a paired bootstrap interval over the test clips:
        # whether the new version is better beyond what these few clips can tell.
        "auc_difference": auc_difference(new_scored, active_scored) if active_scored else None,
    }

    # 5. Record: the version is ready to be promoted; the run is done.
    meta = bundle.meta.to_dict()
    metrics = meta.pop("metrics")
    with transaction.atomic():
        # Lock the row as this attempt's: a takeover's claim waits until this commits.
        if not reporter.rows().select_for_update().exists():
            raise Cancelled("The run was cancelled or taken over while it was being saved.")
        ModelVersion.objects.filter(id=version.id, status=ModelVersion.Status.TRAINING).update(
            status=ModelVersion.Status.READY, metrics=metrics, meta=meta
        )
        if not run.transition(
            RunStatus.RUNNING,
            RunStatus.DONE,
            progress=100,
            stage="done",
            metrics=comparison,
            curves={k: [float(x) for x in v] for k, v in history.items()},
        ):
            raise Cancelled("The run was cancelled while it was being saved.")
    run.append_log(f"done: version {name} is ready to promote")
    version.refresh_from_db()
    return version
