"""The ASGI application's HTTP handler: Django's synchronous request path, driven over ASGI."""

import asyncio
import threading

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_started
from django.test import Client

from config.asgi import application, django_asgi_app
from config.handler import RequestThread
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
    assert len(django_asgi_app.idle_threads) == 1


def test_a_thread_still_busy_is_not_idle_until_its_call_returns():
    thread = RequestThread()
    release = threading.Event()
    future = thread.submit(release.wait, 10)
    assert not thread.idle
    release.set()
    assert future.result(timeout=10)
    assert thread.idle
    thread.shutdown()
