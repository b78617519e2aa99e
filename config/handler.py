"""Django's ASGI handler with the synchronous request path: middleware and view in one worker thread."""

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest, HttpResponse


class SyncASGIHandler(ASGIHandler):
    """Serves HTTP over ASGI with Django's synchronous middleware chain, as a WSGI server would run it.

    Django's own ASGI handler loads the middleware in async mode. Every middleware and view here is
    synchronous, so a request hopped from the event loop to a worker thread and back around each
    middleware that can run both ways, and again around the view: some twenty switches per request,
    then four with a synchronous-only middleware last. Here the whole chain (middleware, URL resolving,
    view) runs in one call in the request's worker thread: one switch there and back. The event loop
    still reads the body, sends the response (streamed responses included) and notices a client that
    went away; WebSockets go through Channels, not through this handler.
    """

    def __init__(self) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponse:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
