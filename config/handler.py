"""Django's ASGI handler with the synchronous request path: middleware and view in one worker thread."""

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import FileResponse, HttpResponse
from django.urls import set_script_prefix


class RequestThread(Executor):
    """One worker thread that serves one request at a time, then the next: reused, not made per request.

    It counts the calls it has not finished, so a thread still busy with a request whose client went
    away (Django cancels the wait, not the call) is never lent to another request before that call
    returns (`when_idle`).
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="django-request")
        self.lock = threading.Lock()
        self.unfinished = 0
        self.on_idle: Callable[[], None] | None = None
        self.streaming = False  # lent outside the pool's count (RequestThreads.set_aside)

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        with self.lock:
            self.unfinished += 1
        future = self.pool.submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)  # before asyncio's own callback: it sees the count right
        return future

    def _finished(self, _: Future) -> None:
        with self.lock:
            self.unfinished -= 1
            callback = self.on_idle if self.unfinished == 0 else None
            if callback is not None:
                self.on_idle = None
        if callback is not None:
            callback()

    @property
    def idle(self) -> bool:
        with self.lock:
            return self.unfinished == 0

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from this thread) once its unfinished calls have returned; now if none."""
        with self.lock:
            if self.unfinished:
                self.on_idle = callback
                return
        callback()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class RequestThreads:
    """At most `size` request threads in a process; a request waits (on the event loop) for a free one.

    This is a WSGI server's thread count (gunicorn's `--threads`). Under load Django's handler runs every
    waiting request in a thread of its own, and those threads queue for the GIL at each of a request's
    database round trips: on the rating loop 25 threads a process served about a quarter fewer votes a
    second than 2 (ARCHITECTURE.md, "Web processes"). Each thread holds a database connection while it
    works, so the count also bounds the connections a process uses.

    A thread still running the call of a request that was given up (its client went away) keeps its
    place until that call returns, so slow calls never add threads beyond the count. A streamed
    response (a CSV export, seconds long) is set aside: its thread leaves the count for the rest of the
    stream, so exports do not hold up the rating pages. Only touched from the event loop.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"A web process needs at least one request thread, not {size}.")
        self.size = size
        self.idle: list[RequestThread] = []
        self.running = 0  # lent out now, or finishing a given-up call
        self.waiting: deque[asyncio.Future] = deque()

    async def acquire(self) -> RequestThread:
        if self.idle:
            self.running += 1
            return self.idle.pop()
        if self.running < self.size:
            self.running += 1
            return RequestThread()
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        try:
            return await waiter  # release() counted it as running
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as this request was given up
            raise

    def release(self, thread: RequestThread) -> None:
        if thread.streaming:  # set aside: no longer counted
            thread.streaming = False
            if thread.idle and len(self.idle) + self.running < self.size:
                self.idle.append(thread)
            else:
                thread.shutdown(wait=False)
            return
        if not thread.idle:  # a given-up call still runs in it: it comes back when that returns
            loop = asyncio.get_running_loop()
            thread.when_idle(lambda: _call_soon(loop, self.release, thread))
            return
        self._hand_over(thread)

    def set_aside(self, thread: RequestThread) -> None:
        """Take `thread` out of the count (its request streams a long response); another takes its place."""
        thread.streaming = True
        self._hand_over(RequestThread() if self.waiting else None)

    def _hand_over(self, thread: RequestThread | None) -> None:
        """A place in the count is free: give it (with `thread`) to the first request waiting, else keep
        `thread` idle."""
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(thread or RequestThread())
                return
        self.running -= 1
        if thread is not None:
            self.idle.append(thread)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable, *args) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed (the server stopped): nothing to do
        loop.call_soon_threadsafe(callback, *args)


class SyncASGIHandler(ASGIHandler):
    """Serves HTTP over ASGI with Django's synchronous request path, as a WSGI server would run it.

    Django's own ASGI handler loads the middleware in async mode. Every middleware and view here is
    synchronous, so a request hopped from the event loop to a worker thread and back around each
    middleware that can run both ways, and again around the view, the request_started signal and the
    response's close: some twenty switches per request. Here the request starts, goes through the whole
    chain (middleware, URL resolving, view) and finishes in one call in a worker thread: one switch there
    and back. The event loop reads the body, sends the response (a streamed one while listening for the
    client going away); WebSockets go through Channels, not through this handler.

    The worker threads are a bounded pool (RequestThreads, `DEPTH_ARENA_WEB_THREADS` per process), not
    one new thread per request as under Django's handler.
    """

    def __init__(self, threads: int | None = None) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.threads = RequestThreads(threads or settings.WEB_THREADS)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = await self.threads.acquire()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send, thread)
        finally:
            self.threads.release(thread)

    async def handle(self, scope, receive, send, thread: RequestThread | None = None) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        response = await sync_to_async(self.respond, thread_sensitive=True)(scope, body_file)
        if not response.streaming:
            await self.send_response(response, send)  # a client gone by now is ignored by the server
            return
        if thread is not None:
            self.threads.set_aside(thread)
        try:
            await self.stream(response, receive, send)
        finally:
            await sync_to_async(response.close, thread_sensitive=True)()
            body_file.close()

    def respond(self, scope, body_file) -> HttpResponse:
        """What Django's handler does around the view, in one call in the request's thread: the request
        starts (signal), is built and answered, and, unless its body is streamed, finishes (the response
        is closed, so the database connection goes back before the bytes go out). Django's ASGI handler
        makes three trips to a worker thread for these steps; this makes one."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
        if not response.streaming:
            response.close()
            body_file.close()
        return response

    async def stream(self, response: HttpResponse, receive, send) -> None:
        """Send a streamed body while listening for the client going away, which stops it (as Django's
        handler does): an export nobody reads is not generated to the end."""
        sending = asyncio.create_task(self.send_response(response, send))
        listening = asyncio.create_task(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait([sending, listening], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listening, sending):
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                    await task
