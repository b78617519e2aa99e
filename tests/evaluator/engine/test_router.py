"""The automatic depth router: accuracy on held-out demo prompts, stated fallbacks, a JSON round trip."""

import json
from pathlib import Path

import pytest

from evaluator.engine.depth import DepthPolicy
from evaluator.engine.generate import Request
from evaluator.engine.router import CategoryRouter, auto_requests, decide, fit_router

DEMO = json.loads((Path(__file__).resolve().parents[3] / "evaluator" / "demo_prompts.json").read_text())


@pytest.fixture(scope="module")
def demo_fit():
    return fit_router([p["text"] for p in DEMO], [p["category"] for p in DEMO])


def test_it_places_at_least_four_in_five_held_out_demo_prompts_in_their_category(demo_fit):
    assert demo_fit.held_out_n == len(DEMO) and demo_fit.folds == 5
    assert demo_fit.held_out_accuracy >= 0.8
    assert demo_fit.router.held_out_accuracy == demo_fit.held_out_accuracy


def test_it_places_unseen_documents_of_the_corpus_the_model_was_trained_on(demo_fit):
    from evaluator.corpus import generate_corpus

    docs = generate_corpus(seed=987, n_docs=80)
    placed = [demo_fit.router.place(text[:400]).category for _, text in docs]
    assert sum(p == c for p, (c, _) in zip(placed, docs, strict=True)) / len(docs) >= 0.8


def test_a_prompt_it_cannot_place_gets_the_stated_default(demo_fit):
    mapping = {"routine": 1, "philosophy": 8}
    empty = decide(demo_fit.router, mapping, 4, "  ... !!! ")
    assert empty.fallback and empty.k == 4 and empty.category is None
    assert "default k=4" in empty.reason
    dialogue = decide(demo_fit.router, mapping, 4, "User: What is the capital of Peru?\nAssistant:")
    assert (
        dialogue.category == "dialogue" and dialogue.fallback and "no depth in the mapping" in dialogue.reason
    )
    email = decide(demo_fit.router, mapping, 4, "Subject: Invoice 17\n\nDear Ann,\n\nPlease find attached")
    assert (email.category, email.k, email.fallback) == ("routine", 1, False)


def test_an_unsure_router_says_so_instead_of_guessing():
    router = fit_router(["a b c", "d e f", "a b", "d e"], ["x", "y", "x", "y"], folds=2).router
    strict = CategoryRouter(router.classes, router.dim, router.weights, min_confidence=0.99)
    placement = strict.place("a e")
    assert placement.category is None and "below 0.99" in placement.reason


def test_an_auto_policy_round_trips_through_json_and_resolves_from_the_text_only(demo_fit):
    data = {"kind": "auto", "mapping": {"routine": 1, "philosophy": 8}, "default": 4}
    data["router"] = demo_fit.router.to_dict()
    policy = DepthPolicy.from_dict(json.loads(json.dumps(data)))
    assert DepthPolicy.from_dict(policy.to_dict()).to_dict() == policy.to_dict()
    policy.validate(16)
    with pytest.raises(ValueError, match="auto"):
        policy.k_for("routine")
    # The request's own label says philosophy; the router reads the text, an e-mail.
    request = Request(
        key=1, prompt="Subject: Lunch\n\nHi all,\n\nI am collecting orders", seed=0, category="philosophy"
    )
    run_policy, [labelled], [decision] = auto_requests(policy, [request])
    assert run_policy.kind == "by_category"
    assert run_policy.k_for(labelled.category) == decision.k == 1


def test_an_auto_policy_without_a_router_is_refused():
    with pytest.raises(ValueError, match="router"):
        DepthPolicy.from_dict({"kind": "auto", "mapping": {}, "default": 4, "router": {"classes": ["a"]}})


def test_a_prompt_of_unseen_words_is_not_guessed(demo_fit):
    placement = demo_fit.router.place("Xylophone zebras quizzically juxtapose")
    assert placement.category is None and "labelled prompts" in placement.reason
