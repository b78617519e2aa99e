"""Middleware of the project itself."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class SyncStackMiddleware:
    """Last in MIDDLEWARE, synchronous only: makes Django run the whole middleware stack in one thread.

    Under ASGI, Django runs each async-capable middleware (most are MiddlewareMixin) on the event loop and
    hops to a worker thread and back for each of its process_request and process_response calls: some
    twenty thread switches per request before the view's own. A synchronous-only middleware at the bottom
    makes every middleware above it synchronous too (Django picks the sync mode for a middleware that can do
    both when the handler below it is sync), so a request switches threads a few times instead. Every view
    here is synchronous; WebSockets go through Channels, not through this stack.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)
