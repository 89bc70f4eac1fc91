"""WebSocket consumers: authenticate, refuse rows the user may not see, send the current
state on connect, then forward notifications of row changes."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.live.publish import analysis_group, training_run_group


class RowConsumer(AsyncJsonWebsocketConsumer):
    """One database row's live state. Subclasses say who may watch, how to read the
    row, and which group carries its notifications."""

    group: str | None = None

    def allowed(self, user) -> bool:
        return True

    def group_for(self, pk) -> str:
        raise NotImplementedError

    def read_state(self, user, pk) -> dict[str, Any] | None:
        """The row's state, or None if it does not exist for this user (sync)."""
        raise NotImplementedError

    async def _state(self) -> dict[str, Any] | None:
        return await database_sync_to_async(self.read_state)(
            self.scope["user"], self.scope["url_route"]["kwargs"]["pk"]
        )

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not self.allowed(user):
            await self.close(code=4403)
            return
        # Subscribe before reading the row: a change published in between is then
        # delivered after the state below, never lost (a final "done" included).
        group = self.group_for(self.scope["url_route"]["kwargs"]["pk"])
        await self.channel_layer.group_add(group, self.channel_name)
        state = await self._state()
        if state is None:
            # Someone else's row, or none: the same refusal, no hint which.
            await self.channel_layer.group_discard(group, self.channel_name)
            await self.close(code=4404)
            return
        self.group = group
        await self.accept()
        # A late or reconnecting page is never stale: send the row as it is now.
        await self.send_json(state)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        # The page may ask for a fresh copy (e.g. after its tab was hidden).
        if content.get("type") == "refresh":
            state = await self._state()
            if state is not None:
                await self.send_json(state)

    async def state_update(self, event) -> None:
        await self.send_json(event["state"])


class AnalysisConsumer(RowConsumer):
    def group_for(self, pk) -> str:
        return analysis_group(pk)

    def read_state(self, user, pk):
        from webapp.analyses.models import Analysis

        a = Analysis.objects.filter(pk=pk, owner=user).defer("report").first()
        return a.state() if a else None


class TrainingRunConsumer(RowConsumer):
    """Live progress of a training run, for staff only."""

    def allowed(self, user) -> bool:
        return user.is_active and user.is_staff

    def group_for(self, pk) -> str:
        return training_run_group(pk)

    def read_state(self, user, pk):
        from webapp.training.models import TrainingRun

        run = TrainingRun.objects.filter(pk=pk).select_related("model_version").first()
        return run.state() if run else None
