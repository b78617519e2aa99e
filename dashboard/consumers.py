"""WebSocket consumers: tell an open results page that its experiment changed."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.selectors import can_view_results
from evaluator.events import experiment_group


class ExperimentConsumer(AsyncJsonWebsocketConsumer):
    """Joins the experiment's group; each change is passed on so the page re-fetches its live part."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(can_view_results)(user):
            await self.close(code=4403)
            return
        self.group = experiment_group(int(self.scope["url_route"]["kwargs"]["experiment_id"]))
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def experiment_changed(self, event: dict) -> None:
        await self.send_json({"changed": event["experiment"]})
