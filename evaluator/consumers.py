"""WebSocket consumer of the jobs page: says that a job or a worker changed, for staff only."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from evaluator.events import JOBS_GROUP


def _is_staff(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class JobsConsumer(AsyncJsonWebsocketConsumer):
    """Joins the jobs group; each change is passed on so the page re-fetches its live part."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not await database_sync_to_async(_is_staff)(user):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(JOBS_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(JOBS_GROUP, self.channel_name)

    async def experiment_changed(self, event: dict) -> None:
        await self.send_json({"changed": "experiment"})

    async def jobs_changed(self, event: dict) -> None:
        await self.send_json({"changed": "workers"})
