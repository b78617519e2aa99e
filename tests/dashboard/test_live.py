"""Live results over WebSocket (channels_redis): a stored vote reaches every open results page."""

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from config.asgi import application
from dashboard.services import next_comparison, submit_rating
from evaluator import events
from tests.dashboard.results_data import experiment_with_outputs

# The consumer reads the session from another thread: the test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def experiment(tiny_model_path):
    return experiment_with_outputs(tiny_model_path, depths=(1, 4), raters=2, name="live")


def cookie_of(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def socket(experiment_id: int, cookie: bytes = b"") -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, f"/ws/experiments/{experiment_id}/", headers=headers)


def vote(rater) -> None:
    assignment = next_comparison(rater=rater)
    submit_rating(rater=rater, token=assignment.comparison.token, verdict="right")


def test_the_tests_run_over_redis():
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"


def test_a_stored_vote_reaches_an_open_results_socket(viewer, rater, experiment):
    cookie = cookie_of(viewer)

    async def scenario() -> dict:
        communicator = socket(experiment.pk, cookie)
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        await database_sync_to_async(vote)(rater)
        message = await communicator.receive_json_from(timeout=10)
        await communicator.disconnect()
        return message

    assert async_to_sync(scenario)() == {"changed": experiment.pk}


def test_a_burst_of_votes_is_announced_at_once_and_once_more_when_it_ends(
    viewer, rater, second_rater, experiment
):
    cookie = cookie_of(viewer)

    async def scenario() -> tuple[list[dict], bool]:
        communicator = socket(experiment.pk, cookie)
        assert (await communicator.connect(timeout=10))[0]
        await database_sync_to_async(vote)(rater)
        await database_sync_to_async(vote)(second_rater)
        received = [await communicator.receive_json_from(timeout=10) for _ in range(2)]
        quiet = await communicator.receive_nothing(timeout=2 * events.VOTES_COALESCE_SECONDS)
        await communicator.disconnect()
        return received, quiet

    received, quiet = async_to_sync(scenario)()
    assert received == [{"changed": experiment.pk}] * 2
    assert quiet


def test_every_open_page_of_the_experiment_hears_of_a_change_and_no_other(admin_user, viewer, experiment):
    cookies = [cookie_of(admin_user), cookie_of(viewer)]

    async def scenario() -> tuple[list[dict], bool]:
        watching = [socket(experiment.pk, c) for c in cookies]
        elsewhere = socket(experiment.pk + 1000, cookies[0])
        for communicator in [*watching, elsewhere]:
            assert (await communicator.connect(timeout=10))[0]
        await database_sync_to_async(events.experiment_changed)(experiment.pk, ready_comparisons=2)
        received = [await c.receive_json_from(timeout=10) for c in watching]
        quiet = await elsewhere.receive_nothing(timeout=0.5)
        for communicator in [*watching, elsewhere]:
            await communicator.disconnect()
        return received, quiet

    received, quiet = async_to_sync(scenario)()
    assert received == [{"changed": experiment.pk}] * 2
    assert quiet


@pytest.mark.parametrize("who", ["rater", "stranger", "anonymous"])
def test_a_user_without_the_results_permission_is_refused(who, rater, stranger):
    cookie = {"rater": lambda: cookie_of(rater), "stranger": lambda: cookie_of(stranger)}.get(who, bytes)()

    async def scenario() -> tuple[bool, int]:
        return await socket(1, cookie).connect(timeout=10)

    connected, code = async_to_sync(scenario)()
    assert not connected
    assert code == 4403  # live.js stops reconnecting on this code
