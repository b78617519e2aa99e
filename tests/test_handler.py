"""The ASGI application's HTTP handler: Django's synchronous request path, driven over ASGI."""

import asyncio
import threading

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_finished, request_started
from django.test import Client

from config.asgi import application, django_asgi_app
from config.handler import RequestThread, RequestThreads
from tests.factories import make_checkpoint, make_experiment
from tests.waiting import run_async

pytestmark = pytest.mark.django_db(transaction=True)  # the handler's thread has its own connection


def request(method: str, path: str, *, cookie: str = "", body: bytes = b"") -> dict:
    """One request through the ASGI application, the way daphne drives it; the body is read to its end."""
    headers = [(b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    if body:
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 40000),
    }

    async def send() -> dict:
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
        start = await communicator.receive_output(10)
        assert start["type"] == "http.response.start"
        chunks = []
        while True:
            message = await communicator.receive_output(10)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await communicator.wait(10)
        return {
            "status": start["status"],
            "headers": start["headers"],
            "body": b"".join(chunks),
            "parts": chunks,
        }

    return run_async(send())


def header(response: dict, name: bytes) -> bytes | None:
    return {key.lower(): value for key, value in response["headers"]}.get(name)


def test_the_middleware_chain_and_the_view_run_synchronously():
    assert not asyncio.iscoroutinefunction(django_asgi_app._middleware_chain)


def test_a_page_goes_through_every_middleware():
    response = request("GET", "/accounts/login/")
    assert response["status"] == 200
    assert b"<form" in response["body"]
    assert header(response, b"x-frame-options") == b"DENY"
    assert b"default-src 'self'" in header(response, b"content-security-policy")
    assert b"csrftoken=" in header(response, b"set-cookie")


def test_a_post_without_its_csrf_token_is_refused():
    assert request("POST", "/accounts/login/", body=b"username=a&password=b")["status"] == 403


def test_an_unknown_address_is_a_404_and_a_login_redirect_stays_a_redirect():
    assert request("GET", "/no-such-page/")["status"] == 404
    response = request("GET", "/rate/")
    assert response["status"] == 302 and header(response, b"location").startswith(b"/accounts/login/")


def test_a_csv_export_streams_through_the_handler(viewer, tiny_model_path):
    experiment = make_experiment(make_checkpoint(tiny_model_path), name="streamed")
    client = Client()
    client.force_login(viewer)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    response = request("GET", f"/results/{experiment.pk}/votes.csv", cookie=cookie)
    assert response["status"] == 200, response
    assert header(response, b"content-type").startswith(b"text/csv")
    assert response["body"].startswith(b"experiment,")
    assert django_asgi_app.threads.running == 0 and django_asgi_app.threads.idle


def test_requests_reuse_an_idle_worker_thread():
    threads: list[int] = []

    def record(**kwargs) -> None:
        threads.append(threading.get_ident())

    request_started.connect(record)
    try:
        for _ in range(3):
            assert request("GET", "/accounts/login/")["status"] == 200
    finally:
        request_started.disconnect(record)
    assert len(threads) == 3 and len(set(threads)) == 1
    assert len(django_asgi_app.threads.idle) == 1


def test_a_request_starts_is_answered_and_finishes_in_one_thread():
    """Django's handler went to a worker thread three times a request (the request_started signal, the
    view, the response's close); here the three run in one call, so in one thread, in that order."""
    seen: list[tuple[str, int]] = []

    def started(**kwargs) -> None:
        seen.append(("started", threading.get_ident()))

    def finished(**kwargs) -> None:
        seen.append(("finished", threading.get_ident()))

    request_started.connect(started)
    request_finished.connect(finished)
    try:
        assert request("GET", "/accounts/login/")["status"] == 200
    finally:
        request_started.disconnect(started)
        request_finished.disconnect(finished)
    assert [name for name, _ in seen] == ["started", "finished"]
    assert seen[0][1] == seen[1][1] != threading.get_ident()


def test_at_most_size_threads_are_lent_and_a_request_waits_for_a_free_one():
    async def scenario() -> None:
        threads = RequestThreads(2)
        first, second = await threads.acquire(), await threads.acquire()
        third = asyncio.ensure_future(threads.acquire())
        await asyncio.sleep(0.05)
        assert not third.done()  # both threads are lent: the third request waits
        threads.release(first)
        assert await asyncio.wait_for(third, 5) is first
        threads.release(second)
        threads.release(first)
        assert threads.running == 0 and len(threads.idle) == 2
        for thread in threads.idle:
            thread.shutdown()

    run_async(scenario())


def test_a_request_given_up_while_waiting_takes_no_thread_with_it():
    async def scenario() -> None:
        threads = RequestThreads(1)
        lent = await threads.acquire()
        waiting = asyncio.ensure_future(threads.acquire())
        await asyncio.sleep(0.05)
        waiting.cancel()
        threads.release(lent)
        assert threads.running == 0 and threads.idle == [lent]
        assert await threads.acquire() is lent
        lent.shutdown()

    run_async(scenario())


def test_a_thread_still_running_a_given_up_call_keeps_its_place_until_the_call_returns():
    """A request given up while its view still runs (the client went away) must not free a place for a
    new thread: slow calls would then pile up threads, each holding a database connection."""

    async def scenario() -> None:
        threads = RequestThreads(1)
        busy = await threads.acquire()
        release = threading.Event()
        busy.submit(release.wait, 10)  # a view still running for a client that went away
        threads.release(busy)
        assert threads.running == 1 and not threads.idle
        next_request = asyncio.ensure_future(threads.acquire())
        await asyncio.sleep(0.05)
        assert not next_request.done()  # the place is still taken
        release.set()
        assert await asyncio.wait_for(next_request, 5) is busy  # and the thread comes back with it
        threads.release(busy)
        assert threads.running == 0 and threads.idle == [busy]
        busy.shutdown()

    run_async(scenario())


def test_a_request_given_up_just_after_a_thread_was_handed_to_it_gives_the_thread_back():
    async def scenario() -> None:
        threads = RequestThreads(1)
        lent = await threads.acquire()
        waiting = asyncio.ensure_future(threads.acquire())
        await asyncio.sleep(0.05)
        threads.release(lent)  # hands the thread to the waiting request...
        waiting.cancel()  # ...which is given up before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert threads.running == 0 and threads.idle == [lent]
        lent.shutdown()

    run_async(scenario())


def test_a_streamed_response_leaves_the_count_while_it_streams():
    async def scenario() -> None:
        threads = RequestThreads(1)
        exporting = await threads.acquire()
        waiting = asyncio.ensure_future(threads.acquire())
        await asyncio.sleep(0.05)
        threads.set_aside(exporting)  # its response turned out to be a long stream
        other = await asyncio.wait_for(waiting, 5)
        assert other is not exporting and threads.running == 1
        threads.release(exporting)  # the stream ended
        threads.release(other)
        assert threads.running == 0 and len(threads.idle) == 1
        exporting.shutdown()
        other.shutdown()

    run_async(scenario())


def test_a_pool_without_threads_is_refused():
    with pytest.raises(ValueError, match="at least one request thread"):
        RequestThreads(0)


def test_a_thread_still_busy_is_not_idle_until_its_call_returns():
    thread = RequestThread()
    release = threading.Event()
    future = thread.submit(release.wait, 10)
    assert not thread.idle
    release.set()
    assert future.result(timeout=10)
    assert thread.idle
    thread.shutdown()


def test_a_streamed_body_stops_when_the_client_goes_away():
    from django.http import StreamingHttpResponse

    closed = threading.Event()

    async def endless():
        try:
            while True:
                yield b"row\n"
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    async def scenario() -> int:
        sent: list[dict] = []
        gone = asyncio.Event()

        async def send(message: dict) -> None:
            sent.append(message)
            if len(sent) == 3:
                gone.set()

        async def receive() -> dict:
            await gone.wait()
            return {"type": "http.disconnect"}

        await asyncio.wait_for(django_asgi_app.stream(StreamingHttpResponse(endless()), receive, send), 5)
        return len(sent)

    assert run_async(scenario()) < 10
    assert closed.wait(5)


def test_the_web_server_leaves_form_bodies_to_django():
    """Twisted would parse every urlencoded POST body into request.args, which daphne never reads."""
    from twisted.web.test.requesthelper import DummyChannel

    from config.daphne_server import HTTPFactory, WebRequest

    class Server:
        def protocol_connected(self, protocol) -> None:
            pass

    factory = HTTPFactory(Server())
    assert factory.buildProtocol(None).requestFactory is WebRequest
    channel = DummyChannel()
    channel.factory = factory
    request = WebRequest(channel)
    assert request._parsePOSTFormSubmission is False
