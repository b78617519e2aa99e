"""Depth policies: JSON round trips, validation, resolution per prompt, applying them to a loaded model."""

from __future__ import annotations

import json

import pytest
import torch

from evaluator.engine.depth import DepthPolicy, apply_depth
from evaluator.engine.tracing import RoutingTrace

from .conftest import logits


@pytest.mark.parametrize(
    ("policy", "description"),
    [
        (DepthPolicy.fixed(8), "fixed k=8"),
        (DepthPolicy.by_tag({"reasoning": 16, "simple": 4}, 8), "by tag: reasoning→16, simple→4, default 8"),
        (DepthPolicy.by_category({"Philosophy": 16}, 8), "by category: philosophy→16, default 8"),
        (DepthPolicy.dynamic(0.9, 2, 16), "dynamic p=0.9, k 2..16"),
    ],
)
def test_round_trips_through_json_and_describes_itself(policy: DepthPolicy, description: str) -> None:
    assert DepthPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert policy.describe() == description
    policy.validate(128)


def test_from_dict_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="Unknown depth policy kind 'deep'"):
        DepthPolicy.from_dict({"kind": "deep"})
    with pytest.raises(ValueError, match=r"missing: \['k'\]"):
        DepthPolicy.from_dict({"kind": "fixed"})
    with pytest.raises(ValueError, match=r"unknown: \['p'\]"):
        DepthPolicy.from_dict({"kind": "fixed", "k": 8, "p": 0.5})
    with pytest.raises(ValueError, match="integer k"):
        DepthPolicy.from_dict({"kind": "fixed", "k": "8"})
    with pytest.raises(ValueError, match="appears twice"):
        DepthPolicy.by_tag({"Reasoning": 16, "reasoning ": 4}, 8)


def test_validate_names_the_bound_to_respect() -> None:
    with pytest.raises(ValueError, match="k is 200, but it must be between 1 and 128"):
        DepthPolicy.fixed(200).validate(128)
    with pytest.raises(ValueError, match=r"p is 1.5, but it must be in \(0, 1\]"):
        DepthPolicy.dynamic(1.5, 2, 8).validate(128)
    with pytest.raises(ValueError, match=r"k_min \(9\) must not exceed k_max \(8\)"):
        DepthPolicy.dynamic(0.5, 9, 8).validate(128)
    with pytest.raises(ValueError, match="k for 'math' is 0"):
        DepthPolicy.by_tag({"math": 0}, 8).validate(128)


def test_k_for_resolves_categories_and_tags() -> None:
    assert DepthPolicy.fixed(8).k_for("anything", ["x"]) == 8
    assert DepthPolicy.dynamic(0.9, 2, 16).k_for("anything") is None
    by_category = DepthPolicy.by_category({"philosophy": 16, "email": 4}, 8)
    assert by_category.k_for(" Philosophy ") == 16
    assert by_category.k_for("code") == 8
    by_tag = DepthPolicy.by_tag({"reasoning": 16, "simple": 4}, 8)
    assert by_tag.k_for("", ["simple", "Reasoning"]) == 16  # several matches: the deepest
    assert by_tag.k_for("", ["simple"]) == 4
    assert by_tag.k_for("", []) == 8


def test_fixed_depth_sets_every_router_and_restores_bit_for_bit(loaded) -> None:
    before = logits(loaded)
    with apply_depth(loaded, k=8):
        assert all(router.top_k == 8 for router in loaded.routers)
        deeper = logits(loaded)
        with apply_depth(loaded, k=2):  # nested arms restore to the enclosing one
            assert all(router.top_k == 2 for router in loaded.routers)
        assert all(router.top_k == 8 for router in loaded.routers)
    assert all(router.top_k == 4 for router in loaded.routers)
    assert not torch.equal(before, deeper)
    assert torch.equal(before, logits(loaded))


def test_depth_is_restored_when_the_body_raises(qwen3) -> None:
    with pytest.raises(RuntimeError), apply_depth(qwen3, dynamic=DepthPolicy.dynamic(0.5, 1, 8)):
        raise RuntimeError
    assert all(router.top_k == 4 and "forward" not in router.__dict__ for router in qwen3.routers)


def _mean_active(loaded, policy: DepthPolicy) -> tuple[float, list[list[int]]]:
    with apply_depth(loaded, dynamic=policy), RoutingTrace(loaded) as trace:
        logits(loaded)
    summary = trace.summary()
    return summary["mean_active_experts"], summary["counts"]


def test_dynamic_depth_follows_p_within_its_bounds_and_restores(loaded) -> None:
    before = logits(loaded)
    means = [_mean_active(loaded, DepthPolicy.dynamic(p, 2, 10))[0] for p in (0.2, 0.6, 0.9, 1.0)]
    assert means == sorted(means) and means[0] < means[-1]
    assert means[0] == 2.0  # p=0.2 is reached by the top expert or two: k_min holds
    assert means[-1] == 10.0  # p=1 needs every expert: k_max holds
    assert 2.0 < means[1] < 10.0  # in between, the number really varies per token and layer
    assert torch.equal(before, logits(loaded))


def test_dynamic_with_full_mass_equals_fixed_k_max(loaded) -> None:
    # With p=1 every slot of top-k_max is kept: the same experts and weights as a fixed k_max.
    with apply_depth(loaded, k=6):
        fixed = logits(loaded)
    with apply_depth(loaded, dynamic=DepthPolicy.dynamic(1.0, 1, 6)):
        dynamic = logits(loaded)
    torch.testing.assert_close(dynamic, fixed, rtol=1e-5, atol=1e-5)


def test_dynamic_uses_only_the_kept_experts(qwen3) -> None:
    # k_min = k_max = 3 keeps exactly the top 3: the same as a fixed k=3 under another implementation path.
    with apply_depth(qwen3, k=3):
        fixed = logits(qwen3)
    with apply_depth(qwen3, dynamic=DepthPolicy.dynamic(0.01, 3, 3)):
        dynamic = logits(qwen3)
    torch.testing.assert_close(dynamic, fixed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", ["eager", "grouped_mm", "batched_mm"])
def test_dynamic_runs_on_every_experts_implementation(qwen3, implementation: str) -> None:
    previous = qwen3.experts_implementation
    reference = logits(qwen3)
    qwen3.model.set_experts_implementation(implementation)
    try:
        torch.testing.assert_close(logits(qwen3), reference, rtol=1e-4, atol=1e-4)
        mean, counts = _mean_active(qwen3, DepthPolicy.dynamic(0.6, 1, 8))
        assert 1.0 < mean < 8.0
        tokens = len(qwen3.tokenizer("the quick brown fox jumps over the lazy dog")["input_ids"])
        assert sum(map(sum, counts)) == pytest.approx(mean * tokens * len(qwen3.routers), abs=0.01)
    finally:
        qwen3.model.set_experts_implementation(previous)
