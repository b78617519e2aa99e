"""Automatic measures in the database: the fields stored with each output, and likelihood rows per arm.

`jobs.store_results` asks `output_fields` what to write beside an output's text (length, repetition,
whether it stopped by itself, whether it gave the prompt's reference answer). The likelihood job reads the
texts still missing for an arm with `missing_likelihood_texts` and writes what it scored with
`store_likelihoods`, once per (experiment, arm, prompt) however often it runs.
"""

from collections.abc import Collection, Iterable
from typing import Any

from django.db import transaction

from evaluator import measures, scoring
from evaluator.engine.likelihood import ReferenceText, Scored
from evaluator.models import Experiment, Generation, Likelihood, Prompt


def references_for(*, generation_ids: Iterable[int]) -> dict[int, tuple[str, str, float | None]]:
    """Per output id, its prompt's (reference answer, rule, tolerance), for outputs whose prompt has one."""
    rows = (
        Generation.objects.filter(pk__in=list(generation_ids))
        .exclude(prompt__reference_answer="")
        .values_list("pk", "prompt__reference_answer", "prompt__scoring_rule", "prompt__tolerance")
    )
    return {pk: (answer, rule, tolerance) for pk, answer, rule, tolerance in rows}


def output_fields(
    *,
    text: str,
    token_ids: tuple[int, ...],
    eos_token_ids: Collection[int],
    max_new_tokens: int | None,
    reference: tuple[str, str, float | None] | None,
) -> dict[str, Any]:
    """The measure fields of one output; a reference that cannot be scored leaves the score empty."""
    fields: dict[str, Any] = {}
    if token_ids and max_new_tokens:
        m = measures.output_measures(
            token_ids=token_ids, eos_token_ids=eos_token_ids, max_new_tokens=max_new_tokens
        )
        fields.update(output_tokens=m.length, repetition=m.repetition, hit_limit=m.hit_limit)
    if reference is not None:
        answer, rule, tolerance = reference
        try:
            fields["reference_correct"] = scoring.score(
                output=text, reference=answer, rule=rule, tolerance=tolerance
            )
        except scoring.ScoringError:
            fields["reference_correct"] = None
    return fields


def rescore_outputs(*, prompt: Prompt) -> int:
    """Score the prompt's stored outputs again after its reference answer or rule changed. Returns outputs."""
    done = Generation.objects.filter(prompt=prompt, status=Generation.Status.DONE)
    if not prompt.reference_answer:
        return done.update(reference_correct=None)
    changed = 0
    with transaction.atomic():
        for pk, text in done.values_list("pk", "text"):
            correct = scoring.score(
                output=text,
                reference=prompt.reference_answer,
                rule=prompt.scoring_rule,
                tolerance=prompt.tolerance,
            )
            changed += Generation.objects.filter(pk=pk).update(reference_correct=correct)
    return changed


def missing_likelihood_texts(*, experiment: Experiment, variant_id: int) -> list[ReferenceText]:
    """The experiment's prompts (with their reference answers) not yet scored under this arm."""
    scored = Likelihood.objects.filter(experiment=experiment, variant_id=variant_id).values("prompt_id")
    prompts = (
        experiment.prompts.exclude(pk__in=scored)
        .select_related("category")
        .order_by("pk")
        .only("pk", "text", "reference_answer", "tags", "category__slug")
    )
    return [
        ReferenceText(
            key=p.pk,
            prefix=p.text,
            continuation=p.reference_answer,
            category=p.category.slug,
            tags=tuple(p.tags or ()),
        )
        for p in prompts
    ]


def store_likelihoods(*, experiment_id: int, variant_id: int, scored: Iterable[Scored]) -> int:
    """Write the scored texts; a row already there (a job run twice) stays as it is. Returns rows written."""
    rows = [
        Likelihood(
            experiment_id=experiment_id,
            variant_id=variant_id,
            prompt_id=s.key,
            tokens=s.tokens,
            nll=s.nll,
            answer_tokens=s.answer_tokens,
            answer_nll=s.answer_nll,
            depth_k=s.depth_k,
            seconds=s.seconds,
        )
        for s in scored
        if s.error is None
    ]
    before = Likelihood.objects.filter(experiment_id=experiment_id, variant_id=variant_id).count()
    Likelihood.objects.bulk_create(rows, ignore_conflicts=True)
    return Likelihood.objects.filter(experiment_id=experiment_id, variant_id=variant_id).count() - before
