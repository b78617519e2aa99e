"""Automatic measures and the recommended policy on the results page, from real outputs of the small model."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse

from dashboard.automatic import agreement_sentence, clustered_wilson, wilson
from dashboard.models import Rating
from evaluator.models import Comparison, Experiment, Prompt, Variant
from evaluator.scheduling import schedule_experiment
from evaluator.tasks import likelihood_arm
from tests.dashboard.results_data import make_raters, preferred_side
from tests.factories import make_checkpoint, run_generations, scheduled_experiment

DEMO = json.loads((Path(__file__).resolve().parents[2] / "evaluator" / "demo_prompts.json").read_text())


# --------------------------------------------------------------------------- clustered Wilson, pure


def test_wilson_matches_the_closed_form():
    lo, hi = wilson(8, 10)
    z = 1.959963984540054
    p, n = 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))


def test_independent_outputs_lose_only_the_small_sample_degree_of_freedom():
    # One output per prompt: no clustering; the robust variance's m/(m-1) factor leaves n - 1 effective.
    found = clustered_wilson([1, 0, 1, 1, 0, 1, 1, 1], [1] * 8)
    assert found["effective"] == pytest.approx(7)
    assert (found["lo"], found["hi"]) == pytest.approx(wilson(0.75 * 7, 7))


def test_a_perfectly_correlated_prompt_counts_once():
    # Each prompt's 5 outputs agree: 4 prompts, whatever the outputs, carry about 4 outputs' information.
    found = clustered_wilson([5, 0, 5, 5], [5, 5, 5, 5])
    assert found["share"] == 0.75 and found["effective"] == pytest.approx(3.0)


def test_the_clustered_interval_covers_the_true_accuracy_95_times_in_100_when_plain_wilson_does_not():
    """Simulation with known truth: prompts differ in difficulty, each has 8 outputs (seeds)."""
    rng = np.random.default_rng(7)
    truth, covered, covered_plain, runs = 0.6, 0, 0, 600
    for _ in range(runs):
        p = rng.beta(truth * 2, (1 - truth) * 2, size=20)  # per-prompt accuracy, mean 0.6, very uneven
        y = rng.binomial(8, p)
        found = clustered_wilson(y, [8] * 20)
        covered += found["lo"] <= truth <= found["hi"]
        lo, hi = wilson(y.sum(), 160)
        covered_plain += lo <= truth <= hi
    assert covered / runs >= 0.92
    assert covered_plain / runs < 0.85


def test_votes_and_accuracy_are_said_to_agree_or_not_with_how_sure_each_side_is():
    assert agreement_sentence("k=4", True, "k=4", True, True) == (
        "Agree: raters prefer k=4, and it is clearly the most accurate."
    )
    assert agreement_sentence("k=4", False, "k=1", False, True) == (
        "Disagree: raters lean to k=4, but k=1 is the most accurate, not clearly."
    )
    assert "only the votes speak" in agreement_sentence("k=4", True, None, False, False)


# --------------------------------------------------------------------------- end to end


PHILOSOPHY = [p["text"] for p in DEMO if p["category"] == "philosophy"] + [
    "Argument\nPremise 1: If time is real, then change is real.\nConclusion:",
    "Topic: truth\n\nConsider the view that truth is what works.",
]
ROUTINE = [p["text"] for p in DEMO if p["category"] == "routine"][:6]


@pytest.fixture
def voted(tiny_model_path, db):
    """k=1 and k=4 on 16 philosophy and 6 routine prompts, real outputs and likelihoods, made-up votes:
    raters always prefer k=4 on philosophy and split evenly on routine."""
    experiment = scheduled_experiment(
        make_checkpoint(tiny_model_path),
        depths=(1, 4),
        prompts=[("philosophy", t) for t in PHILOSOPHY] + [("routine", t) for t in ROUTINE],
        name="recommend",
        min_seconds_per_vote=0,
    )
    Prompt.objects.filter(category__slug="routine").update(reference_answer=r"\w", scoring_rule="regex")
    Prompt.objects.filter(category__slug="philosophy").update(
        reference_answer="therefore", scoring_rule="contains"
    )
    run_generations(experiment)
    for variant in experiment.variants.all():
        likelihood_arm(experiment.pk, variant.pk)
    rng = random.Random(0)
    ratings = []
    for rater in make_raters(3):
        for comparison in (
            Comparison.objects.ready()
            .filter(experiment=experiment)
            .select_related("prompt__category", "left__variant", "right__variant")
        ):
            prefer = "k=4" if comparison.prompt.category.slug == "philosophy" else rng.choice(["k=1", "k=4"])
            ratings.append(
                Rating(
                    comparison=comparison,
                    rater=rater,
                    verdict=preferred_side(comparison, prefer),
                    seconds=9.0,
                )
            )
    Rating.objects.bulk_create(ratings)
    return experiment


def test_the_results_page_shows_accuracy_measures_likelihood_agreement_and_the_policy(
    voted, admin_user, client
):
    client.force_login(admin_user)
    page = client.get(reverse("results", args=[voted.pk])).content.decode()
    assert "Automatic measures" in page and "Recommended depth policy" in page
    assert "Hit the limit" in page and "NLL / token" in page
    assert "outputs, 16 prompts" in page  # accuracy of philosophy, clustered over its 16 prompts
    assert "--override-kv qwen3moe.expert_used_count=int:4" in page
    assert "--override-kv qwen3moe.expert_used_count=int:1" in page
    assert "num_experts_per_tok" in page
    assert page.count('<p class="agreement">') == 3  # overall, philosophy, routine
    assert f'action="{reverse("follow_up", args=[voted.pk])}"' in page


def test_recommend_policy_prints_json_that_schedules_back_as_an_arm(voted, capsys):
    call_command("recommend_policy", str(voted.pk))
    out = capsys.readouterr().out.splitlines()
    policy = json.loads(out[0])
    assert policy == {"kind": "by_category", "mapping": {"philosophy": 4, "routine": 1}, "default": 4}
    assert any("--hf-overrides '{\"num_experts_per_tok\": 1}'" in line for line in out)
    arm = Variant(checkpoint=voted.checkpoint, name="from the command", depth=policy)
    arm.full_clean()
    arm.save()
    again = Experiment.objects.create(
        name="again", checkpoint=voted.checkpoint, seeds=[0], sampling=voted.sampling
    )
    again.variants.set([arm, Variant.objects.get(name="k=4")])
    again.prompts.set(voted.prompts.all())
    assert schedule_experiment(experiment=again).arms == 2


def test_recommend_policy_auto_reports_its_held_out_accuracy(voted, capsys):
    call_command("recommend_policy", str(voted.pk), "--auto")
    out = capsys.readouterr().out.splitlines()
    policy = json.loads(out[0])
    assert policy["kind"] == "auto" and policy["mapping"] == {"philosophy": 4, "routine": 1}
    assert "held-out prompts placed in their category" in out[1]
    Variant(checkpoint=voted.checkpoint, name="auto arm", depth=policy).full_clean()


def test_the_button_schedules_the_recommendation_against_fixed_d(voted, admin_user, client):
    client.force_login(admin_user)
    response = client.post(reverse("follow_up", args=[voted.pk]))
    follow_up = Experiment.objects.get(name__startswith="Recommended vs fixed 4")
    assert response.status_code == 302 and follow_up.status == Experiment.Status.SCHEDULED
    depths = sorted(json.dumps(v.depth, sort_keys=True) for v in follow_up.variants.all())
    assert depths == sorted(
        [
            json.dumps({"kind": "fixed", "k": 4}, sort_keys=True),
            json.dumps(
                {"default": 4, "kind": "by_category", "mapping": {"philosophy": 4, "routine": 1}},
                sort_keys=True,
            ),
        ]
    )
    assert follow_up.baseline.depth == {"kind": "fixed", "k": 4}
    assert follow_up.prompts.count() == voted.prompts.count()
