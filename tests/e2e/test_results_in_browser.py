"""A results viewer in a real browser: the page updates by itself as votes arrive, and obeys the CSP.

pytest-django's live server speaks WSGI only, so the page's WebSocket cannot connect here; what is
tested is the fallback every page relies on too: htmx re-fetching the live part on its timer.
"""

import pytest
from playwright.sync_api import expect

from dashboard.services import next_comparison, submit_rating
from tests.dashboard.results_data import bulk_votes, experiment_with_outputs, make_raters
from tests.e2e.conftest import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def experiment(tiny_model_path):
    return experiment_with_outputs(tiny_model_path, depths=(1, 4), raters=30, name="browser")


def csp_violations(page) -> list[str]:
    """What the browser refused under the Content Security Policy (an inline style or script, an eval)."""
    return [e for e in page.console_errors if "Content Security Policy" in e]


def test_a_new_vote_shows_on_an_open_results_page_without_a_reload(page, viewer, rater, experiment, settings):
    settings.RESULTS_POLL_SECONDS = 1
    log_in(page, "dave", "password-dave")
    page.goto(f"/results/{experiment.pk}/")
    assert page.locator(".vote-count").inner_text() == "0"
    assert page.locator("#section-overall .verdict:not(.length-controlled)").inner_text() == "No votes yet."
    page.evaluate("window.stillTheSamePage = true")  # a reload would forget this

    assignment = next_comparison(rater=rater)
    submit_rating(rater=rater, token=assignment.comparison.token, verdict="left")
    expect(page.locator(".vote-count")).to_have_text("1", timeout=10_000)  # polled every second
    assert page.evaluate("window.stillTheSamePage === true")
    assert "1 of 1 preference votes counted" in page.locator(".exclusions").inner_text()
    assert csp_violations(page) == []


def test_the_charts_render_and_exclusions_change_the_counts(page, viewer, experiment):
    raters = make_raters(11)
    bulk_votes(experiment, raters[:1], prefer="k=1", too_fast=True)
    bulk_votes(experiment, raters[1:], prefer="k=4", share=0.9)
    log_in(page, "dave", "password-dave")
    page.goto(f"/results/{experiment.pk}/")
    verdict = page.locator("#section-overall .verdict:not(.length-controlled)").inner_text()
    assert verdict.startswith("k=4 is preferred")
    charts = page.locator("#section-overall svg.chart")
    assert charts.count() == 5
    box = charts.first.bounding_box()
    assert box["width"] > 300 and box["height"] > 200  # drawn, not collapsed
    assert page.locator("#section-routine svg.chart text", has_text="k=4 1").count() >= 1

    too_fast = page.locator("input[name=exclude][value=too_fast]")
    assert not too_fast.is_checked()
    too_fast.check()
    page.click(".results-options button[type=submit]")
    page.wait_for_url("**exclude=too_fast**")
    fast_votes = experiment.comparisons.ready().count()
    assert f"Too fast: {fast_votes} votes, left out." in page.locator(".exclusions").inner_text()
    assert page.locator("input[name=exclude][value=too_fast]").is_checked()
    assert csp_violations(page) == []
