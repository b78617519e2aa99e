"""The results page: who may see it, and what it tells a results viewer about each category."""

import re
import xml.etree.ElementTree as ET
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dashboard.services import next_comparison, submit_rating
from evaluator.models import Variant
from tests.dashboard.results_data import bulk_votes, experiment_with_outputs, make_raters

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


@pytest.fixture
def experiment(tiny_model_path):
    return experiment_with_outputs(tiny_model_path, depths=(1, 4), raters=30)


@pytest.fixture
def decided(experiment):
    """Thirty raters who clearly prefer depth 4."""
    bulk_votes(experiment, make_raters(30), prefer="k=4", share=0.85)
    return experiment


def page(client, experiment, query: str = "", **headers) -> str:
    url = reverse("results", args=[experiment.pk]) + (f"?{query}" if query else "")
    response = client.get(url, headers=headers)
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, key: str) -> str:
    match = re.search(rf'<section class="category" id="section-{key}">(.*?)</section>', html, re.S)
    assert match, f"no section {key}"
    return match.group(1)


def plain(html: str) -> str:
    """The text a reader sees: tags dropped, entities decoded, white space collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_results_are_closed_to_raters_and_strangers(client, rater, stranger, experiment):
    for user in (rater, stranger):
        client.force_login(user)
        assert client.get(reverse("results", args=[experiment.pk])).status_code == 403
        assert client.get(reverse("results_list")).status_code == 403


def test_results_need_a_login(client, experiment):
    response = client.get(reverse("results", args=[experiment.pk]))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_the_list_links_every_scheduled_experiment_with_its_votes(client, viewer, decided):
    client.force_login(viewer)
    html = client.get(reverse("results_list")).content.decode()
    assert reverse("results", args=[decided.pk]) in html
    assert decided.name in html


def test_each_category_gets_a_verdict_and_a_scores_table(client, viewer, decided):
    client.force_login(viewer)
    html = page(client, decided)
    for key, title in (("overall", "All categories"), ("routine", "Routine"), ("philosophy", "Philosophy")):
        part = section(html, key)
        text = plain(part)
        assert title in text
        assert "Length controlled:" in text
        if key == "overall":
            assert re.search(r"k=4 is preferred to k=1: \d+ points ahead \(95% interval \d+ to \d+\)\.", text)
        else:
            assert "No clear winner yet: k=4 leads k=1" in text
        assert "fixed k=4, native context" in text  # results viewers see what each arm is
        for heading in (
            "Score",
            "95% interval",
            "Length-controlled score",
            "Rank",
            "Win rate",
            "Votes",
            "Ties",
            "Experts / token",
            "Tokens / s",
        ):
            assert heading in text
        rows = re.findall(r"<tr>\s*<td><strong>(k=\d)</strong>", part)
        assert rows == ["k=4", "k=1"]  # best first


def test_the_page_states_the_error_rate_it_guarantees(client, viewer, decided):
    client.force_login(viewer)
    text = plain(page(client, decided))
    assert "however often this page is read, and across all 3 sections together" in text
    assert "the chance of any false verdict is at most 5%" in text
    assert "at least 10 decisive votes between them" in text
    assert "until 30 prompts lean one way or the other, a per-prompt sign test too" in text


def test_an_undecided_category_says_how_many_votes_are_still_needed(client, viewer, experiment):
    bulk_votes(experiment, make_raters(4), prefer="k=4", share=0.55, otherwise="k=1")
    client.force_login(viewer)
    text = plain(section(page(client, experiment), "overall"))
    assert "No clear winner yet" in text or "Not enough votes yet" in text
    assert re.search(
        r"about \d+ more votes on new prompts(, from about \d+ new raters,)? give a verdict with 80% "
        r"probability if k=\d is truly at least \d+ points ahead"
        r"|are level|a verdict needs|too little to promise",
        text,
    )


def test_the_head_to_head_table_shows_rates_intervals_and_counts(client, viewer, decided):
    client.force_login(viewer)
    part = section(page(client, decided), "overall")
    matrix = re.search(r'<table class="matrix">(.*?)</table>', part, re.S).group(1)
    text = plain(matrix)
    assert re.search(r"k=4 \d+% \(\d+–\d+\) \d+ · \d+ · \d+ —", text), text
    assert "Wilson" in text


def test_position_bias_and_agreement_are_reported(client, viewer, decided):
    client.force_login(viewer)
    text = plain(section(page(client, decided), "overall"))
    assert re.search(r"the left side \(A\) won \d+% of \d+ decisive votes", text)
    assert re.search(r"numbered\): -?\d\.\d\d", text)


def test_raters_appear_under_pseudonyms_only(client, viewer, decided):
    client.force_login(viewer)
    html = page(client, decided)
    raters = re.search(r'<section id="raters">(.*?)</section>', html, re.S).group(1)
    assert len(re.findall(r"<td>rater-[0-9a-f]{10}</td>", raters)) == 30
    assert "rater-0<" not in raters and "rater-29<" not in raters  # the usernames of make_raters


def test_exclusions_default_to_gold_failures_and_flags_and_can_be_changed(client, viewer, experiment):
    raters = make_raters(3)
    bulk_votes(experiment, raters[:1], prefer="k=1", too_fast=True)
    bulk_votes(experiment, raters[1:], prefer="k=4")
    n = experiment.comparisons.ready().count()
    client.force_login(viewer)
    text = plain(page(client, experiment))
    assert f"{3 * n} of {3 * n} preference votes counted, 0 left out" in text
    assert f"Too fast: {n} votes, kept" in text
    assert re.search(r'name="exclude" value="gold_failed" checked', page(client, experiment))

    chosen = plain(page(client, experiment, "exclusions=chosen&exclude=too_fast"))
    assert f"{2 * n} of {3 * n} preference votes counted, {n} left out" in chosen
    assert f"Too fast: {n} votes, left out" in chosen
    assert "Raters who failed gold checks: 0 votes, kept" in chosen


def queries_for(client, experiment) -> int:
    with CaptureQueriesContext(connection) as queries:
        page(client, experiment, **HTMX)
    return len(queries)


def test_the_page_costs_the_same_queries_however_many_votes(client, viewer, experiment):
    client.force_login(viewer)
    bulk_votes(experiment, make_raters(2), prefer="k=4")
    page(client, experiment)  # the routing sums are read once per new output
    bulk_votes(experiment, make_raters(2, prefix="few"), prefer="k=4")
    few = queries_for(client, experiment)
    bulk_votes(experiment, make_raters(20, prefix="more"), prefer="k=1")
    assert queries_for(client, experiment) == few < 30


def test_the_page_draws_its_charts_inline_without_scripts_or_styles(client, viewer, decided):
    client.force_login(viewer)
    html = page(client, decided)
    svgs = re.findall(r"<svg .*?</svg>", html, re.S)
    # Per section: depth curve, speed, a routing map per arm and the difference.
    assert len(svgs) == 3 * 5
    for svg in svgs:
        root = ET.fromstring(svg)
        assert not any("style" in e.attrib for e in root.iter())
    assert "Depth curve, routine: preference vs experts per token" in html
    assert "k=4 minus k=1: routing in philosophy" in html
    assert "<script>" not in html and " style=" not in html and " onclick" not in html


def test_the_routing_difference_follows_the_chosen_arms(client, viewer, tiny_model_path):
    experiment = experiment_with_outputs(tiny_model_path, depths=(1, 2, 4), name="three")
    deep, shallow = (Variant.objects.get(name=n) for n in ("k=4", "k=1"))
    client.force_login(viewer)
    html = page(client, experiment, f"a={deep.pk}&b={shallow.pk}")
    assert "k=1 minus k=4: routing in routine" in html
    # An arm that is not in the experiment falls back to the first two arms.
    assert "k=2 minus k=1: routing in routine" in page(client, experiment, "a=999999&b=1")


def test_htmx_gets_only_the_live_part_with_the_chosen_options(client, viewer, decided):
    client.force_login(viewer)
    html = page(client, decided, "exclusions=chosen&exclude=flagged", **HTMX)
    assert html.lstrip().startswith('<div id="live"')
    assert "<h1>" not in html and "<form" not in html
    assert "exclusions=chosen&amp;exclude=flagged" in html  # the next refresh keeps them
    assert 'hx-trigger="experiment-changed from:body throttle:1s, every 15s"' in html


def test_the_polling_interval_is_a_setting(client, viewer, experiment, settings):
    settings.RESULTS_POLL_SECONDS = 2
    client.force_login(viewer)
    assert "every 2s" in page(client, experiment, **HTMX)


def test_the_bootstrap_rounds_are_a_setting(client, viewer, decided, settings):
    client.force_login(viewer)
    assert "from 1000 bootstrap resamples of prompts" in plain(page(client, decided))
    settings.RESULTS_BOOTSTRAP_ROUNDS = 200
    assert "from 200 bootstrap resamples of prompts" in plain(page(client, decided))


def test_a_new_vote_shows_on_the_next_refresh(client, viewer, rater, experiment):
    client.force_login(viewer)
    assert 'Votes <span class="vote-count">0</span>' in page(client, experiment, **HTMX)
    assignment = next_comparison(rater=rater)
    submit_rating(rater=rater, token=assignment.comparison.token, verdict="left")
    html = page(client, experiment, **HTMX)
    assert 'Votes <span class="vote-count">1</span>' in html
    assert "1 of 1 preference votes counted" in plain(html)


def test_arm_names_are_escaped_everywhere(client, viewer, experiment):
    Variant.objects.filter(name="k=4").update(name='<img src=x onerror="alert(1)">')
    bulk_votes(experiment, make_raters(3), prefer='<img src=x onerror="alert(1)">')
    client.force_login(viewer)
    html = page(client, experiment)
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


@pytest.mark.slow
def test_a_page_with_5000_votes_counts_them_all(client, viewer, tiny_model_path):
    experiment = experiment_with_outputs(tiny_model_path, depths=(1, 2, 4, 8), name="big")
    comparisons = experiment.comparisons.ready().count()
    raters = make_raters(-(-5000 // comparisons))
    votes = bulk_votes(experiment, raters, prefer="k=4", share=0.6)
    assert votes >= 5000
    client.force_login(viewer)
    html = page(client, experiment)
    assert f"{votes} of {votes} preference votes counted" in plain(html)
