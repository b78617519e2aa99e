"""Automatic measures through the real worker: scored outputs, overthinking measures, likelihood, auto."""

import pytest

from evaluator import measuring
from evaluator.engine.router import fit_router
from evaluator.models import Generation, Likelihood, Prompt, Variant
from evaluator.scheduling import schedule_experiment
from evaluator.tasks import likelihood_arm
from tests.factories import make_checkpoint, make_experiment, run_generations, scheduled_experiment

pytestmark = pytest.mark.django_db

PROMPTS = [
    ("dialogue", "User: What is 9 plus 8?\nAssistant:"),
    ("routine", "Subject: Thank you\n\nHi Samuel,\n\nThank you for your help with the"),
]


def test_every_output_is_stored_with_its_measures_and_its_reference_score(tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4), prompts=PROMPTS)
    asked = Prompt.objects.get(text__startswith="User: What is 9")
    asked.reference_answer, asked.scoring_rule = "17", "numeric"
    asked.save(update_fields=["reference_answer", "scoring_rule"])
    run_generations(experiment)
    for g in Generation.objects.filter(experiment=experiment):
        assert g.output_tokens is not None and g.output_tokens <= 12
        assert 0.0 <= g.repetition < 1.0
        assert g.hit_limit == (g.new_tokens == 12 and g.output_tokens == 12)
        if g.prompt_id == asked.pk:
            from evaluator.scoring import score

            assert g.reference_correct is score(output=g.text, reference="17", rule="numeric")
        else:
            assert g.reference_correct is None


def test_changing_a_reference_scores_the_stored_outputs_again(tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4), prompts=PROMPTS[:1])
    run_generations(experiment)
    prompt = Prompt.objects.get()
    prompt.reference_answer, prompt.scoring_rule = r"[\s\S]", "regex"  # any character: every output passes
    prompt.save(update_fields=["reference_answer", "scoring_rule"])
    assert measuring.rescore_outputs(prompt=prompt) == 2
    assert set(Generation.objects.values_list("reference_correct", flat=True)) == {True}


def test_the_likelihood_job_scores_each_prompt_once_per_arm(tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4), prompts=PROMPTS)
    Prompt.objects.filter(text__startswith="User:").update(reference_answer="17")
    variants = list(experiment.variants.order_by("pk"))
    assert [likelihood_arm(experiment.pk, v.pk) for v in variants] == [2, 2]
    assert likelihood_arm(experiment.pk, variants[0].pk) == 0  # nothing missing the second time
    rows = Likelihood.objects.filter(experiment=experiment)
    assert rows.count() == 4
    assert all(r.tokens > 0 and r.nll > 0 for r in rows)
    answered = rows.filter(prompt__reference_answer="17")
    assert all(r.answer_tokens >= 1 and r.answer_nll > 0 for r in answered)
    assert {r.depth_k for r in rows} == {1, 4}


def test_an_auto_arm_decides_each_depth_from_the_prompt_text_and_says_why(tiny_model_path):
    checkpoint = make_checkpoint(tiny_model_path)
    texts = [
        "Subject: Lunch\n\nHi all,",
        "Subject: Invoice\n\nDear Paula,",
        "User: Hi\nAssistant:",
        "User: 2+2?\nAssistant:",
    ]
    router = fit_router(texts, ["routine", "routine", "dialogue", "dialogue"], folds=2).router
    auto = Variant.objects.create(
        checkpoint=checkpoint,
        name="auto",
        depth={
            "kind": "auto",
            "mapping": {"routine": 1, "dialogue": 8},
            "default": 4,
            "router": router.to_dict(),
        },
    )
    auto.full_clean()
    prompts = [*PROMPTS, ("philosophy", "Zebras juxtapose quizzically")]
    experiment = make_experiment(checkpoint, depths=(4,), prompts=prompts, name="auto")
    experiment.variants.add(auto)
    schedule_experiment(experiment=experiment)
    run_generations(experiment)
    decided = {
        g.prompt.category.slug: (g.depth_k, g.auto_depth)
        for g in Generation.objects.filter(variant=auto).select_related("prompt__category")
    }
    assert decided["dialogue"][0] == 8 and decided["dialogue"][1]["category"] == "dialogue"
    assert decided["routine"][0] == 1
    k, why = decided["philosophy"]
    assert k == 4 and why["fallback"] is True and "default k=4" in why["reason"]
    assert likelihood_arm(experiment.pk, auto.pk) == 3
    assert set(Likelihood.objects.filter(variant=auto).values_list("depth_k", flat=True)) == {1, 4, 8}
