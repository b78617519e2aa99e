"""Django's ASGI handler with the synchronous request path: middleware and view in one worker thread."""

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.http import HttpRequest, HttpResponse


class RequestThread(Executor):
    """One worker thread that serves one request at a time, then the next: reused, not made per request.

    It counts the calls it has not finished, so a thread still busy with a request whose client went
    away (Django cancels the wait, not the call) is never lent to another request.
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="django-request")
        self.lock = threading.Lock()
        self.unfinished = 0

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        with self.lock:
            self.unfinished += 1
        future = self.pool.submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)  # before asyncio's own callback: it sees the count right
        return future

    def _finished(self, _: Future) -> None:
        with self.lock:
            self.unfinished -= 1

    @property
    def idle(self) -> bool:
        with self.lock:
            return self.unfinished == 0

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class SyncASGIHandler(ASGIHandler):
    """Serves HTTP over ASGI with Django's synchronous middleware chain, as a WSGI server would run it.

    Django's own ASGI handler loads the middleware in async mode. Every middleware and view here is
    synchronous, so a request hopped from the event loop to a worker thread and back around each
    middleware that can run both ways, and again around the view: some twenty switches per request,
    then four with a synchronous-only middleware last. Here the whole chain (middleware, URL resolving,
    view) runs in one call in the request's worker thread: one switch there and back. The event loop
    still reads the body, sends the response (streamed responses included) and notices a client that
    went away; WebSockets go through Channels, not through this handler.

    Each request still gets a thread of its own for its synchronous work, as under Django's handler,
    but from a pool of idle ones: Django starts a new thread for every request (and another to join it).
    """

    def __init__(self) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.idle_threads: list[RequestThread] = []  # only touched from the event loop

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self.idle_threads.pop() if self.idle_threads else RequestThread()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            if thread.idle:
                self.idle_threads.append(thread)
            else:
                thread.shutdown(wait=False)  # it ends when the abandoned call returns

    async def get_response_async(self, request: HttpRequest) -> HttpResponse:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
