"""WebSocket consumers: authenticate, refuse other users' rows, send the current
state on connect, then forward notifications of row changes."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from webapp.live.publish import analysis_group, training_run_group


class AnalysisConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        analysis_id = self.scope["url_route"]["kwargs"]["pk"]
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        state = await self._state(user, analysis_id)
        if state is None:
            # Someone else's analysis, or none: the same refusal, no hint which.
            await self.close(code=4404)
            return
        self.group = analysis_group(analysis_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # A late or reconnecting page is never stale: send the row as it is now.
        await self.send_json(state)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        # The page may ask for a fresh copy (e.g. after its tab was hidden).
        if content.get("type") == "refresh":
            state = await self._state(self.scope["user"], self.scope["url_route"]["kwargs"]["pk"])
            if state is not None:
                await self.send_json(state)

    async def state_update(self, event) -> None:
        await self.send_json(event["state"])

    @database_sync_to_async
    def _state(self, user, analysis_id):
        from webapp.analyses.models import Analysis

        a = Analysis.objects.filter(pk=analysis_id, owner=user).defer("report").first()
        return a.state() if a else None


class TrainingRunConsumer(AsyncJsonWebsocketConsumer):
    """Live progress of a training run, for staff only."""

    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        run_id = self.scope["url_route"]["kwargs"]["pk"]
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not (user.is_active and user.is_staff):
            await self.close(code=4403)
            return
        state = await self._state(run_id)
        if state is None:
            await self.close(code=4404)
            return
        self.group = training_run_group(run_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # A late or reconnecting page is never stale: send the row as it is now.
        await self.send_json(state)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        if content.get("type") == "refresh":
            state = await self._state(self.scope["url_route"]["kwargs"]["pk"])
            if state is not None:
                await self.send_json(state)

    async def state_update(self, event) -> None:
        await self.send_json(event["state"])

    @database_sync_to_async
    def _state(self, run_id):
        from webapp.training.models import TrainingRun

        run = TrainingRun.objects.filter(pk=run_id).select_related("model_version").first()
        return run.state() if run else None
