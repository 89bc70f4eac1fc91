"""The one helper that pushes state to browsers. Notifications only: the row is the truth."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def analysis_group(analysis_id: Any) -> str:
    return f"analysis.{analysis_id}"


def publish(group: str, state: dict[str, Any]) -> None:
    """Send `state` to a group. A broker hiccup must never fail the job."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": "state.update", "state": state})
    except Exception:  # noqa: BLE001
        log.warning("could not publish to %s", group, exc_info=True)


def publish_analysis(analysis) -> None:
    publish(analysis_group(analysis.id), analysis.state())


def training_run_group(run_id: Any) -> str:
    return f"training-run.{run_id}"


def publish_training_run(run) -> None:
    publish(training_run_group(run.id), run.state())
