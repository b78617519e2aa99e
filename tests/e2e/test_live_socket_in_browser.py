"""The results page over a real WebSocket: `serve` runs it, a vote stored by another process updates it.

The page is served by `manage.py serve` (uvicorn with two worker processes) on the test database and the
test Redis; the vote is stored here, in the test process, and reaches the page through channels_redis. The
page's polling fallback is set to ten minutes, so only the WebSocket can bring the vote in time.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings
from django.db import connections

from dashboard.services import next_comparison, submit_rating
from evaluator import events
from tests.dashboard.results_data import experiment_with_outputs
from tests.e2e.conftest import log_in
from tests.integration.conftest import ROOT, database_url
from tests.waiting import http_status, wait_for


def elsewhere(work) -> None:
    """Run `work` in a thread of its own: Playwright's event loop owns this one, and sending to the
    channel layer from a synchronous caller needs a thread without a running loop."""
    errors = []

    def run():
        try:
            work()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not errors, errors


pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def served(tmp_path):
    if not settings.REDIS_URL:
        pytest.skip("a WebSocket across processes needs REDIS_URL (make test sets it)")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_DEBUG": "1",
        "DEPTH_ARENA_RESULTS_POLL_SECONDS": "600",
    }
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--no-worker", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        wait_for(
            lambda: http_status(f"{base}/accounts/login/") == 200, timeout=60, message="serve did not start"
        )
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def test_a_vote_stored_elsewhere_reaches_an_open_page_over_the_websocket(
    browser, served, viewer, rater, tiny_model_path
):
    experiment = experiment_with_outputs(tiny_model_path, depths=(1, 4), raters=3, name="socket")
    context = browser.new_context(base_url=served)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        log_in(page, "dave", "password-dave")
        # Playwright delivers events only while it waits itself, never during a time.sleep: wait through it.
        with page.expect_websocket(timeout=10_000) as opened:
            page.goto(f"/results/{experiment.pk}/")
        socket = opened.value
        assert page.locator(".vote-count").inner_text() == "0"
        assert socket.url.endswith(f"/ws/experiments/{experiment.pk}/")

        def vote():
            assignment = next_comparison(rater=rater)
            submit_rating(rater=rater, token=assignment.comparison.token, verdict="left")  # sends the event

        elsewhere(vote)
        deadline = time.monotonic() + 15
        while page.locator(".vote-count").inner_text() != "1":
            # The socket may have been still connecting when the vote's event went out: say it again.
            assert time.monotonic() < deadline, "the vote did not reach the page over the WebSocket"
            elsewhere(lambda: events.experiment_changed(experiment.pk))
            page.wait_for_timeout(500)
        assert not socket.is_closed()
    finally:
        context.close()
