"""Coalescing live-update events: the first at once, a burst folded into one, the last never lost."""

import asyncio
import threading
import time

from asgiref.sync import sync_to_async

from evaluator.events import Coalescer
from tests.waiting import run_async


class Sink:
    def __init__(self) -> None:
        self.sent: list[object] = []
        self.done = threading.Event()

    def __call__(self, key: object) -> None:
        self.sent.append(key)
        self.done.set()


def test_the_first_event_goes_out_at_once():
    sink = Sink()
    Coalescer(sink, interval=10)("a")
    assert sink.sent == ["a"]


def test_a_burst_is_folded_into_one_trailing_event():
    sink = Sink()
    coalesce = Coalescer(sink, interval=0.2)
    coalesce("a")
    sink.done.clear()
    for _ in range(50):
        coalesce("a")
    assert len(sink.sent) == 1
    assert sink.done.wait(timeout=5)
    assert sink.sent == ["a", "a"]


def test_keys_are_coalesced_apart():
    sink = Sink()
    coalesce = Coalescer(sink, interval=10)
    coalesce("a")
    coalesce("b")
    coalesce("a")
    assert sink.sent == ["a", "b"]


def test_after_a_quiet_interval_the_next_event_goes_out_at_once_again():
    sink = Sink()
    coalesce = Coalescer(sink, interval=0.05)
    coalesce("a")
    time.sleep(0.1)
    coalesce("a")
    assert len(sink.sent) == 2


def test_from_a_request_thread_the_trailing_event_goes_out_on_the_server_loop():
    sent_sync: list[str] = []
    sent_async: list[tuple[str, int]] = []

    async def send_async(key: str) -> None:
        sent_async.append((key, threading.get_ident()))

    coalesce = Coalescer(sent_sync.append, interval=0.1, send_async=send_async)

    async def server() -> int:
        # Sync code of a request runs in a worker thread, as under the ASGI handler.
        await sync_to_async(coalesce)("a")
        await sync_to_async(coalesce)("a")
        for _ in range(500):  # the trailing event, at most 5 s
            if sent_async:
                break
            await asyncio.sleep(0.01)
        return threading.get_ident()

    loop_thread = run_async(server())
    assert sent_sync == ["a"]
    assert sent_async == [("a", loop_thread)]
