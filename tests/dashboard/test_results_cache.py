"""The results page serves one computation to every open page and says how fresh it is."""

import re

import pytest
from django.urls import reverse

from dashboard.services import next_comparison, submit_rating
from tests.dashboard.results_data import experiment_with_outputs

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
COMPUTED_AT = re.compile(r'Results computed at <time datetime="([^"]+)"')


@pytest.fixture
def experiment(tiny_model_path):
    return experiment_with_outputs(tiny_model_path, name="cached")


def computed_at(response) -> str:
    return COMPUTED_AT.search(response.content.decode()).group(1)


def vote(rater) -> None:
    assignment = next_comparison(rater=rater)
    submit_rating(rater=rater, token=assignment.page.token, verdict="left")


def test_pages_share_one_computation_while_nothing_changes(client, viewer, experiment, settings):
    settings.RESULTS_REFRESH_SECONDS = 3600
    client.force_login(viewer)
    url = reverse("results", args=[experiment.pk])
    first = client.get(url)
    assert "from every vote and output so far" in first.content.decode()
    assert computed_at(client.get(url, headers=HTMX)) == computed_at(first)


def test_new_votes_are_counted_at_the_next_computation_and_the_page_says_when(
    client, viewer, rater, experiment, settings
):
    settings.RESULTS_REFRESH_SECONDS = 3600
    client.force_login(viewer)
    url = reverse("results", args=[experiment.pk])
    before = client.get(url)
    vote(rater)
    stale = client.get(url, headers=HTMX).content.decode()
    assert "newer votes or outputs arrived" in stale
    assert "load delay:" in stale  # the page asks again when the next computation is due
    assert COMPUTED_AT.search(stale).group(1) == computed_at(before)

    settings.RESULTS_REFRESH_SECONDS = 0
    fresh = client.get(url, headers=HTMX)
    assert computed_at(fresh) != computed_at(before)
    assert "from every vote and output so far" in fresh.content.decode()
    assert "<strong>1</strong> of 1 preference votes counted" in fresh.content.decode()


def test_each_choice_of_exclusions_is_computed_on_its_own(client, viewer, rater, experiment, settings):
    settings.RESULTS_REFRESH_SECONDS = 3600
    client.force_login(viewer)
    url = reverse("results", args=[experiment.pk])
    vote(rater)
    default = client.get(url).content.decode()
    chosen = client.get(url, {"exclusions": "chosen", "exclude": "too_fast"}).content.decode()
    assert "Too fast: 0 votes, kept" in default
    assert "Too fast: 0 votes, left out" in chosen


def test_a_slow_computation_is_repeated_less_often(settings):
    from django.utils import timezone

    from dashboard.selectors import StoredResults

    settings.RESULTS_REFRESH_SECONDS = 5
    quick = StoredResults(results=None, computed_at=timezone.now(), fingerprint=(), compute_seconds=0.2)
    slow = StoredResults(results=None, computed_at=timezone.now(), fingerprint=(), compute_seconds=3.0)
    assert quick.refresh_after() == 5
    assert slow.refresh_after() == 15
