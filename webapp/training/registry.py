"""Which model bundle is in service, and the moves between versions.

Promotion and rollback are one transaction each: the previous active version is retired
and the new one activated together, and the partial unique index `one_active_model`
refuses a second active row whatever happens. Workers read the active path once per
analysis (services.get_bundle), so a new analysis uses the new version without a
restart and an analysis in flight finishes with the bundle it started with.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone


class PromotionError(Exception):
    """A promotion or rollback that cannot be done; the message says why."""


def active_bundle_path() -> str:
    """The active ModelVersion's bundle, or the bundle shipped with Verity."""
    from webapp.training.models import ModelVersion

    active = (
        ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).only("bundle_path").first()
    )
    if active and active.bundle_path:
        return active.bundle_path
    return settings.VERITY_MODEL_DIR


def read_meta(path: str | Path) -> dict:
    """meta.json of a bundle, or {} when there is none (a bundle not built yet)."""
    try:
        return json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def ensure_registered():
    """Register the shipped bundle (settings.VERITY_MODEL_DIR) on first use, and make it
    active when nothing is, so the list is never empty and exactly one version serves."""
    from webapp.training.models import ModelVersion

    path = str(settings.VERITY_MODEL_DIR)
    shipped = ModelVersion.objects.filter(bundle_path=path).first()
    meta = read_meta(path)

    def free_version() -> str:
        version = str(meta.get("version") or "default")
        if ModelVersion.objects.filter(version=version).exclude(bundle_path=path).exists():
            version = f"{version}-shipped"
        return version

    if shipped is not None and meta and shipped.meta.get("version") != meta.get("version"):
        shipped = _replace_upgraded(shipped, free_version(), meta)
    if shipped is None:
        version = free_version()
        try:
            with transaction.atomic():
                shipped = ModelVersion.objects.create(
                    version=version,
                    name=str(meta.get("name") or "verity-xception"),
                    bundle_path=path,
                    status=ModelVersion.Status.READY,
                    metrics=meta.get("metrics") or {},
                    meta={k: v for k, v in meta.items() if k != "metrics"},
                )
        except IntegrityError:
            # Two first visits at once: the other one registered it.
            shipped = ModelVersion.objects.get(version=version)
    if not ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).exists():
        try:
            with transaction.atomic():
                ModelVersion.objects.filter(pk=shipped.pk).update(
                    status=ModelVersion.Status.ACTIVE, activated=timezone.now()
                )
        except IntegrityError:
            pass  # another request activated a version meanwhile: that one serves
    shipped.refresh_from_db()
    return shipped


def _replace_upgraded(old, version: str, meta: dict):
    """An upgrade replaced the shipped files under the registered path (say v2.0 by v2.1),
    and workers already load the new ones. The old row keeps its history and metrics but
    loses its bundle path (its files are gone, so it can no longer be promoted); a new row
    describes the files that are there now, active if the old one was."""
    from webapp.training.models import ModelVersion

    try:
        with transaction.atomic():
            old = ModelVersion.objects.select_for_update().get(pk=old.pk)
            if old.bundle_path != str(settings.VERITY_MODEL_DIR):
                return ModelVersion.objects.get(bundle_path=str(settings.VERITY_MODEL_DIR))
            was_active = old.status == ModelVersion.Status.ACTIVE
            old.bundle_path = ""
            if was_active:
                old.status = ModelVersion.Status.RETIRED
            old.save(update_fields=["bundle_path", "status"])
            return ModelVersion.objects.create(
                version=version,
                name=str(meta.get("name") or old.name),
                bundle_path=str(settings.VERITY_MODEL_DIR),
                status=ModelVersion.Status.ACTIVE if was_active else ModelVersion.Status.READY,
                activated=timezone.now() if was_active else None,
                metrics=meta.get("metrics") or {},
                meta={k: v for k, v in meta.items() if k != "metrics"},
                parent=old if str(meta.get("parent")) == str(old.meta.get("version")) else None,
            )
    except (IntegrityError, ModelVersion.DoesNotExist):
        # Another request did the same at the same time: use the row it made.
        return ModelVersion.objects.get(bundle_path=str(settings.VERITY_MODEL_DIR))


PROMOTABLE = ("ready", "retired", "active")


def promote(version_id: int, user=None):
    """Make `version_id` the active version; the previous one is retired. Atomic."""
    from webapp.training.models import ModelVersion

    try:
        with transaction.atomic():
            # Lock the rows involved so two promotions queue up instead of racing.
            target = ModelVersion.objects.select_for_update().get(pk=version_id)
            list(ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.ACTIVE))
            if target.status not in PROMOTABLE:
                raise PromotionError(
                    f"Version {target.version} is {target.status}; only a ready or retired "
                    "version can be promoted."
                )
            if target.status == ModelVersion.Status.ACTIVE:
                return target
            if not target.bundle_path:
                raise PromotionError(
                    f"Version {target.version}'s files were replaced by an upgrade of the "
                    "shipped model; it can no longer be served."
                )
            if not (Path(target.bundle_path) / "meta.json").exists():
                raise PromotionError(
                    f"Version {target.version} has no bundle at {target.bundle_path}."
                )
            # Retire first: the unique index is checked at each statement.
            ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).update(
                status=ModelVersion.Status.RETIRED
            )
            target.status = ModelVersion.Status.ACTIVE
            target.activated = timezone.now()
            target.save(update_fields=["status", "activated"])
    except IntegrityError as exc:
        raise PromotionError("Another promotion happened at the same time; try again.") from exc
    return target


def previous_version():
    """The version that was active before the current one (the latest activated retired)."""
    from webapp.training.models import ModelVersion

    # A row whose files an upgrade replaced (no path) cannot serve: skip it.
    return (
        ModelVersion.objects.filter(status=ModelVersion.Status.RETIRED, activated__isnull=False)
        .exclude(bundle_path="")
        .order_by("-activated")
        .first()
    )


def rollback(user=None):
    """Re-activate the previously active version."""
    prev = previous_version()
    if prev is None:
        raise PromotionError("There is no previous version to roll back to.")
    return promote(prev.pk, user)
