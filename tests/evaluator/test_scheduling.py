"""schedule_experiment: every row in one transaction, sides at random, a balanced random hand-out order,
problems listed before queueing."""

from collections import Counter

import numpy as np
import pytest
from django.core.exceptions import ValidationError

from evaluator import scheduling
from evaluator.models import Checkpoint, Comparison, Experiment, Generation, Job
from evaluator.scheduling import ScheduleError
from tests.factories import make_checkpoint, make_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def checkpoint(tiny_model_path):
    return make_checkpoint(tiny_model_path)


def test_a_checkpoint_is_validated_and_its_architecture_stored(checkpoint):
    assert checkpoint.family == "qwen3_moe"
    assert checkpoint.num_experts == 16 and checkpoint.default_top_k == 4
    assert checkpoint.native_context >= 1024


def test_a_missing_folder_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ValidationError) as caught:
        Checkpoint(name="gone", path=str(tmp_path / "nowhere")).full_clean()
    assert "path" in caught.value.message_dict
    assert not Checkpoint.objects.exists()


def test_a_folder_without_an_moe_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 2}')
    with pytest.raises(ValidationError) as caught:
        Checkpoint(name="dense", path=str(tmp_path)).full_clean()
    assert "MoE" in str(caught.value) or "expert" in str(caught.value).lower()


def test_scheduling_creates_every_output_and_pair(checkpoint, django_capture_on_commit_callbacks):
    experiment = make_experiment(checkpoint, depths=(1, 2, 4), seeds=(0, 1))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        report = scheduling.schedule_experiment(experiment=experiment)
    assert (report.generations, report.comparisons, report.arms) == (3 * 2 * 2, 3 * 2 * 2, 3)
    assert Generation.objects.filter(experiment=experiment, status="pending").count() == 12
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.SCHEDULED
    assert len(callbacks) == 1  # jobs are queued only once the rows are committed
    for c in Comparison.objects.filter(experiment=experiment).select_related("left", "right"):
        assert (c.left.prompt_id, c.left.seed) == (c.right.prompt_id, c.right.seed) == (c.prompt_id, c.seed)
        assert c.left.variant_id != c.right.variant_id


def test_queueing_creates_one_job_per_arm(checkpoint, django_capture_on_commit_callbacks):
    experiment = make_experiment(checkpoint, depths=(1, 4))
    with django_capture_on_commit_callbacks(execute=True):
        scheduling.schedule_experiment(experiment=experiment)
    assert Job.objects.filter(experiment=experiment, status="queued").count() == 2


@pytest.mark.parametrize(("pairing", "pairs"), [("all_pairs", 6), ("baseline", 3), ("adjacent", 3)])
def test_pairing_rules(checkpoint, pairing, pairs, django_capture_on_commit_callbacks):
    experiment = make_experiment(
        checkpoint, depths=(8, 1, 4, 2), prompts=[("routine", "Hi")], pairing=pairing
    )
    if pairing == "baseline":
        experiment.baseline = experiment.variants.get(name="k=4")
        experiment.save(update_fields=["baseline"])
    with django_capture_on_commit_callbacks(execute=False):
        scheduling.schedule_experiment(experiment=experiment)
    comparisons = Comparison.objects.filter(experiment=experiment).select_related(
        "left__variant", "right__variant"
    )
    names = {frozenset((c.left.variant.name, c.right.variant.name)) for c in comparisons}
    assert len(names) == pairs
    if pairing == "adjacent":
        assert names == {frozenset(p) for p in [("k=1", "k=2"), ("k=2", "k=4"), ("k=4", "k=8")]}
    if pairing == "baseline":
        assert all("k=4" in pair for pair in names)


def test_a_prompt_too_long_for_an_arm_is_reported_before_anything_is_queued(checkpoint):
    long_text = "The courier's code is 4172. " * 400
    experiment = make_experiment(checkpoint, prompts=[("routine", "Hi"), ("long_context", long_text)])
    with pytest.raises(ScheduleError) as caught:
        scheduling.schedule_experiment(experiment=experiment)
    assert any("tokens, over the" in p and "long_context" in p for p in caught.value.problems)
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DRAFT and "tokens, over the" in experiment.schedule_error
    assert not Generation.objects.exists() and not Comparison.objects.exists()


def test_a_depth_above_the_number_of_experts_is_refused(checkpoint):
    experiment = make_experiment(checkpoint, depths=(4, 32))
    with pytest.raises(ScheduleError) as caught:
        scheduling.schedule_experiment(experiment=experiment)
    assert any("k=32" in p for p in caught.value.problems)


def test_an_experiment_is_scheduled_once(checkpoint, django_capture_on_commit_callbacks):
    experiment = make_experiment(checkpoint)
    with django_capture_on_commit_callbacks(execute=False):
        scheduling.schedule_experiment(experiment=experiment)
    with pytest.raises(ScheduleError, match="not a draft"):
        scheduling.schedule_experiment(experiment=experiment)
    assert Generation.objects.filter(experiment=experiment).count() == 4


def hand_out_order(experiment: Experiment) -> list[Comparison]:
    return list(
        Comparison.objects.filter(experiment=experiment)
        .select_related("left", "right", "prompt")
        .order_by("order_key")
    )


def stratum(comparison: Comparison) -> tuple:
    if comparison.is_gold:
        return ("gold",)
    pair = frozenset((comparison.left.variant_id, comparison.right.variant_id))
    return (pair, comparison.prompt.category_id)


@pytest.fixture
def balanced(checkpoint, django_capture_on_commit_callbacks) -> Experiment:
    prompts = [(slug, f"{slug} prompt {i}:") for slug in ("routine", "philosophy") for i in range(10)]
    experiment = make_experiment(checkpoint, depths=(1, 2, 4), prompts=prompts, seeds=(0, 1))
    with django_capture_on_commit_callbacks(execute=False):
        scheduling.schedule_experiment(experiment=experiment)
    return experiment


def test_every_prefix_of_the_hand_out_order_has_each_pair_and_category_in_its_share(balanced):
    order = hand_out_order(balanced)
    sizes = Counter(stratum(c) for c in order)
    assert len(sizes) == 3 * 2 and set(sizes.values()) == {20}

    seen: Counter = Counter()
    for handed_out, comparison in enumerate(order, start=1):
        seen[stratum(comparison)] += 1
        for key, size in sizes.items():
            share = handed_out * size / len(order)
            assert abs(seen[key] - share) <= 1, (handed_out, key, seen[key], share)


def test_the_hand_out_order_is_not_the_order_of_creation(balanced):
    order = [c.pk for c in hand_out_order(balanced)]
    created = sorted(order)
    ranks = np.array([created.index(pk) for pk in order], dtype=float)

    correlation = np.corrcoef(ranks, np.arange(len(order)))[0, 1]  # Spearman: both are ranks

    assert abs(correlation) < 0.5


def test_gold_checks_are_spread_through_the_hand_out_order(checkpoint, django_capture_on_commit_callbacks):
    prompts = [(slug, f"{slug} prompt {i}:") for slug in ("routine", "philosophy") for i in range(6)]
    experiment = make_experiment(checkpoint, depths=(1, 2, 4), prompts=prompts, gold_rate=0.25)
    with django_capture_on_commit_callbacks(execute=False):
        scheduling.schedule_experiment(experiment=experiment)

    order = hand_out_order(experiment)
    gold = [i for i, c in enumerate(order) if c.is_gold]

    assert len(gold) == 9
    assert abs(sum(i < len(order) / 2 for i in gold) - len(gold) / 2) <= 1
