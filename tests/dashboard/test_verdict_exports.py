"""The verdicts, length-controlled scores and identical-output counts travel with the scores CSV."""

import csv
import io

import pytest
from django.core.management import call_command

from dashboard.analysis import Exclusions
from dashboard.exports import aggregates_csv
from evaluator.models import Comparison
from tests.dashboard.results_data import bulk_votes, experiment_with_outputs, make_raters

pytestmark = pytest.mark.django_db


@pytest.fixture
def decided(tiny_model_path):
    experiment = experiment_with_outputs(tiny_model_path, depths=(1, 4), raters=3, name="csv")
    same = experiment.comparisons.ready().filter(prompt__category__slug="routine").first()
    Comparison.objects.filter(pk=same.pk).update(is_identical=True)
    bulk_votes(experiment, make_raters(20), prefer="k=4", share=0.85)
    return experiment


def rows(chunks) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO("".join(chunks))))


def test_the_scores_csv_carries_the_verdict_and_length_control(decided):
    overall = [r for r in rows(aggregates_csv(decided)) if r["category"] == "all"]
    assert {r["verdict"] for r in overall} == {"k=4"}
    assert {r["leader"] for r in overall} == {"k=4"} and {r["runner_up"] for r in overall} == {"k=1"}
    assert all(float(r["difference_low"]) > 0 and float(r["p_adjusted"]) <= 0.05 for r in overall)
    assert all(
        r["lc_score"] and float(r["lc_ci_low"]) <= float(r["lc_score"]) <= float(r["lc_ci_high"])
        for r in overall
    )


def test_the_scores_csv_counts_identical_outputs_per_arm(decided):
    routine = {r["arm"]: r for r in rows(aggregates_csv(decided)) if r["category"] == "routine"}
    assert routine["k=4"]["identical_outputs"] == routine["k=1"]["identical_outputs"] == "1"
    assert routine["k=4"]["comparisons"] == "6" and routine["k=4"]["identical_as_ties"] == "0"
    as_ties = rows(aggregates_csv(decided, exclusions=Exclusions(identical_as_ties=True)))
    assert {r["identical_as_ties"] for r in as_ties} == {"1"}


def test_export_results_writes_the_same_scores(decided, tmp_path):
    out = tmp_path / "scores.csv"
    call_command("export_results", str(decided.pk), kind="aggregates", out=str(out), identical_as_ties=True)
    written = list(csv.DictReader(out.open(encoding="utf-8")))
    assert {r["identical_as_ties"] for r in written} == {"1"} and {r["verdict"] for r in written} >= {"k=4"}
