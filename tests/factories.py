"""Builders for test data that go through the same services as the app."""

from django.utils import timezone

from evaluator import jobs, scheduling
from evaluator.models import Category, Checkpoint, Comparison, Experiment, Generation, Prompt, Variant


def make_checkpoint(path, name: str = "tiny") -> Checkpoint:
    checkpoint = Checkpoint(name=name, path=str(path))
    checkpoint.full_clean()
    checkpoint.save()
    return checkpoint


def make_experiment(
    checkpoint: Checkpoint,
    *,
    depths=(1, 4),
    prompts: list[tuple[str, str]] | None = None,
    seeds=(0,),
    raters: int = 1,
    max_new_tokens: int = 12,
    name: str = "exp",
    **fields,
) -> Experiment:
    variants = [
        Variant.objects.get_or_create(
            checkpoint=checkpoint, name=f"k={k}", defaults={"depth": {"kind": "fixed", "k": k}}
        )[0]
        for k in depths
    ]
    prompt_rows = []
    for slug, text in prompts or [("routine", "Dear team,\n"), ("philosophy", "Premise one:")]:
        category = Category.objects.get_or_create(slug=slug, defaults={"name": slug.title()})[0]
        prompt_rows.append(Prompt.objects.create(category=category, text=text))
    experiment = Experiment.objects.create(
        name=name,
        checkpoint=checkpoint,
        seeds=list(seeds),
        sampling={"max_new_tokens": max_new_tokens, "do_sample": True, "temperature": 1.0},
        raters_per_comparison=raters,
        **fields,
    )
    experiment.variants.set(variants)
    experiment.prompts.set(prompt_rows)
    return experiment


def store_crafted_outputs(experiment: Experiment, texts: dict) -> None:
    """Replace outputs with crafted text, for tests of how hostile or identical text is handled."""
    for g in Generation.objects.filter(experiment=experiment, pk__in=list(texts)):
        text = texts[g.pk]
        Generation.objects.filter(pk=g.pk).update(
            status=Generation.Status.DONE,
            text=text,
            new_tokens=3,
            seconds=0.1,
            tokens_per_s=30.0,
            finished_at=timezone.now(),
        )
    jobs.mark_ready_comparisons(
        experiment_id=experiment.pk, generation_ids=list(experiment.generations.values_list("pk", flat=True))
    )


def ready_comparisons(experiment: Experiment) -> list[Comparison]:
    return list(Comparison.objects.filter(experiment=experiment).ready())


def run_generations(experiment: Experiment) -> None:
    """Produce the experiment's outputs with the real engine, in this process, as the worker task does."""
    from evaluator.tasks import generate_arm

    for variant_id in experiment.variants.values_list("pk", flat=True):
        generate_arm(experiment.pk, variant_id)


def scheduled_experiment(checkpoint: Checkpoint, **kwargs) -> Experiment:
    experiment = make_experiment(checkpoint, **kwargs)
    scheduling.schedule_experiment(experiment=experiment)
    return experiment
