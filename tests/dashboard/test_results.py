"""Results pages and the votes CSV: who may see them and what they say."""

import csv
import io

import pytest
from django.urls import reverse

from dashboard.exports import safe_cell
from dashboard.services import next_comparison, submit_rating
from tests.factories import make_checkpoint, run_generations, scheduled_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated_experiment(tiny_model_path, rater):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4))
    run_generations(experiment)
    while (assignment := next_comparison(rater=rater)) is not None:
        submit_rating(
            rater=rater, token=assignment.comparison.token, verdict="right", comment="=HYPERLINK(1)"
        )
    return experiment


def test_results_are_closed_to_raters(client, rater, rated_experiment):
    client.force_login(rater)
    assert client.get(reverse("results", args=[rated_experiment.pk])).status_code == 403
    assert client.get(reverse("export_votes", args=[rated_experiment.pk])).status_code == 403


def test_a_results_viewer_sees_win_rates_per_category(client, viewer, rated_experiment):
    client.force_login(viewer)
    html = client.get(reverse("results", args=[rated_experiment.pk])).content.decode()
    assert "Routine" in html and "Philosophy" in html and "All" in html
    assert "k=1" in html and "k=4" in html


def test_the_votes_csv_has_one_row_per_rating_and_cannot_run_formulas(client, admin_user, rated_experiment):
    client.force_login(admin_user)
    response = client.get(reverse("export_votes", args=[rated_experiment.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == rated_experiment.comparisons.count()
    assert {r["category"] for r in rows} == {"routine", "philosophy"}
    assert all(r["winner"] == r["right_arm"] for r in rows)
    assert all(r["comment"] == "'=HYPERLINK(1)" for r in rows)
    assert all(r["rater"].startswith("rater-") and "bob" not in r["rater"] for r in rows)


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_cells_that_a_spreadsheet_would_run_are_made_text(value):
    assert safe_cell(value) == "'" + value


def test_plain_cells_are_left_alone():
    assert safe_cell("depth 8") == "depth 8"
    assert safe_cell(3) == 3
