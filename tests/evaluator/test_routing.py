"""Routing summaries added up per arm and category: the sums the heatmaps and the TensorBoard export show."""

import numpy as np
import pytest

from evaluator.models import Category, Checkpoint, Experiment, Generation, Prompt, Variant
from evaluator.routing import routing_totals

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(tmp_path) -> Experiment:
    checkpoint = Checkpoint.objects.create(name="ckpt", path=str(tmp_path))
    return Experiment.objects.create(name="e", checkpoint=checkpoint, seeds=[0, 1, 2])


def output(
    experiment, *, arm: str, category: str, seed: int, counts, tokens: int, entropy: float, status="done"
):
    checkpoint = experiment.checkpoint
    variant = Variant.objects.get_or_create(checkpoint=checkpoint, name=arm, defaults={"depth": {"k": 2}})[0]
    slug = Category.objects.get_or_create(slug=category, defaults={"name": category})[0]
    prompt = Prompt.objects.get_or_create(category=slug, text=category)[0]
    return Generation.objects.create(
        experiment=experiment,
        variant=variant,
        prompt=prompt,
        seed=seed,
        status=status,
        routing={"counts": counts, "tokens": tokens, "mean_entropy": entropy},
    )


def test_outputs_are_summed_per_arm_and_category_and_over_all_categories(experiment):
    a = output(
        experiment, arm="k=2", category="routine", seed=0, counts=[[2, 0], [1, 1]], tokens=1, entropy=0.5
    )
    output(experiment, arm="k=2", category="routine", seed=1, counts=[[4, 2], [3, 3]], tokens=3, entropy=1.0)
    b = output(
        experiment, arm="k=2", category="poetry", seed=0, counts=[[0, 2], [2, 0]], tokens=1, entropy=0.0
    )

    totals = routing_totals(experiment=experiment)

    routine = totals[(a.variant_id, a.prompt.category_id)]
    assert routine.counts.tolist() == [[6, 2], [4, 4]] and routine.tokens == 4 and routine.outputs == 2
    assert routine.mean_active_experts == pytest.approx(2.0)
    assert routine.mean_entropy == pytest.approx((0.5 * 1 + 1.0 * 3) / 4)
    assert routine.active_per_layer == [2.0, 2.0]
    np.testing.assert_allclose(routine.share, [[1.5, 0.5], [1.0, 1.0]])
    overall = totals[(a.variant_id, None)]
    assert overall.outputs == 3 and overall.counts.tolist() == [[6, 4], [6, 4]]
    assert (b.variant_id, b.prompt.category_id) in totals


def test_unfinished_outputs_and_outputs_of_another_shape_are_left_out(experiment):
    first = output(experiment, arm="k=2", category="routine", seed=0, counts=[[1, 1]], tokens=1, entropy=0.1)
    output(experiment, arm="k=2", category="routine", seed=1, counts=[[1, 1, 0]], tokens=1, entropy=0.1)
    output(
        experiment,
        arm="k=2",
        category="routine",
        seed=2,
        counts=[[5, 5]],
        tokens=5,
        entropy=0.1,
        status="failed",
    )

    totals = routing_totals(experiment=experiment)

    assert totals[(first.variant_id, first.prompt.category_id)].counts.tolist() == [[1, 1]]
    assert totals[(first.variant_id, None)].outputs == 1
