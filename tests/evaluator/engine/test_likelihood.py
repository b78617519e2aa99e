"""Teacher-forced likelihood under an arm: equal to a plain forward's cross-entropy, batched or alone."""

import pytest
import torch

from evaluator.engine.context import ContextConfig
from evaluator.engine.depth import DepthPolicy, apply_depth
from evaluator.engine.likelihood import ReferenceText, score_texts

TEXTS = [
    ReferenceText("fox", "the quick brown fox jumps over the", "lazy dog"),
    ReferenceText("mail", "please send the report to the team before friday"),
    ReferenceText("count", "one two three four five six", "seven"),
]


def _plain_nll(loaded, text: ReferenceText, k: int) -> tuple[float, float | None]:
    ids = loaded.tokenizer(text.prefix, add_special_tokens=True)["input_ids"]
    answer = (
        loaded.tokenizer(" " + text.continuation, add_special_tokens=False)["input_ids"]
        if text.continuation
        else []
    )
    x = torch.tensor([ids + answer])
    with apply_depth(loaded, k=k), torch.no_grad():
        logits = loaded.model(input_ids=x).logits[0, :-1]
    per_token = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none")
    return float(per_token.sum()), float(per_token[-len(answer) :].sum()) if answer else None


@pytest.mark.parametrize("k", [1, 4, 16])
def test_batched_scores_equal_a_plain_forward_at_the_same_depth(loaded, k):
    scored = score_texts(
        loaded, texts=TEXTS, depth=DepthPolicy.fixed(k), context=ContextConfig.native(), batch_size=3
    )
    assert [s.key for s in scored] == ["fox", "mail", "count"]
    for text, s in zip(TEXTS, scored, strict=True):
        nll, answer_nll = _plain_nll(loaded, text, k)
        assert s.nll == pytest.approx(nll, rel=1e-4)
        assert s.depth_k == k and s.error is None
        if answer_nll is None:
            assert s.answer_nll is None and s.answer_tokens == 0
        else:
            assert s.answer_nll == pytest.approx(answer_nll, rel=1e-4)


def test_depth_changes_the_likelihood_and_the_routers_are_restored(qwen3):
    before = [router.top_k for router in qwen3.routers]
    shallow, deep = (
        score_texts(qwen3, texts=TEXTS[:1], depth=DepthPolicy.fixed(k), context=ContextConfig.native())[0]
        for k in (1, 8)
    )
    assert shallow.nll != pytest.approx(deep.nll)
    assert [router.top_k for router in qwen3.routers] == before


def test_a_text_longer_than_allowed_is_reported_not_cut(qwen3):
    [s] = score_texts(
        qwen3, texts=TEXTS[:1], depth=DepthPolicy.fixed(4), context=ContextConfig.native(), max_tokens=4
    )
    assert s.error and "over the 4" in s.error and s.tokens == 0


def test_an_auto_policy_must_be_resolved_per_text_first(qwen3):
    from evaluator.engine.router import fit_router

    router = fit_router(["a b c", "d e f", "a b", "d e"], ["x", "y", "x", "y"], folds=2).router
    policy = DepthPolicy.from_dict(
        {"kind": "auto", "mapping": {"x": 2}, "default": 4, "router": router.to_dict()}
    )
    with pytest.raises(ValueError, match="auto"):
        score_texts(qwen3, texts=TEXTS, depth=policy, context=ContextConfig.native())
