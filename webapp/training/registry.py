"""Which model bundle is in service."""

from __future__ import annotations

from django.conf import settings


def active_bundle_path() -> str:
    """The active ModelVersion's bundle, or the bundle shipped with Verity."""
    from webapp.training.models import ModelVersion

    active = (
        ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).only("bundle_path").first()
    )
    if active and active.bundle_path:
        return active.bundle_path
    return settings.VERITY_MODEL_DIR
