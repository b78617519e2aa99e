"""Demo data: task categories, prompts, arms of the small model at depth 1, 2, 4 and 8, a draft experiment."""

import json
from pathlib import Path

from django.db import transaction

from evaluator.models import Category, Checkpoint, Experiment, Prompt, Variant

DEMO_PROMPTS = Path(__file__).resolve().parent / "demo_prompts.json"
DEMO_CATEGORIES = [
    ("routine", "Routine", "E-mails, templates and short requests: a good answer is short and correct."),
    ("dialogue", "Dialogue", "A conversation turn: helpful, on topic, natural."),
    ("philosophy", "Philosophy", "Reasoning about an argument: premises, objections, conclusions."),
    ("long_context", "Long context", "A long document, then a question that needs a fact from it."),
]


def ensure_demo_data(*, checkpoint_path: Path) -> Experiment:
    """Create the demo categories, prompts, arms at depth 1, 2, 4 and 8, and a draft experiment."""
    with transaction.atomic():
        categories = {}
        for order, (slug, name, description) in enumerate(DEMO_CATEGORIES):
            categories[slug], _ = Category.objects.get_or_create(
                slug=slug, defaults={"name": name, "description": description, "order": order}
            )
        for item in json.loads(DEMO_PROMPTS.read_text()):
            Prompt.objects.get_or_create(
                category=categories[item["category"]],
                text=item["text"],
                defaults={
                    "tags": item.get("tags", []),
                    "reference_answer": item.get("reference_answer", ""),
                    "scoring_rule": item.get("scoring_rule", "contains"),
                },
            )
        checkpoint = Checkpoint.objects.filter(name="tiny-moe").first()
        if checkpoint is None:
            checkpoint = Checkpoint(name="tiny-moe", path=str(checkpoint_path))
            checkpoint.full_clean()
            checkpoint.save()
        variants = []
        for k in (1, 2, 4, 8):
            variant, _ = Variant.objects.get_or_create(
                checkpoint=checkpoint,
                name=f"tiny k={k}",
                defaults={"depth": {"kind": "fixed", "k": k}, "context": {"kind": "native"}},
            )
            variants.append(variant)
        experiment, created = Experiment.objects.get_or_create(
            name="Demo: expert depth 1 / 2 / 4 / 8",
            defaults={
                "checkpoint": checkpoint,
                "seeds": [0],
                "sampling": {"max_new_tokens": 48, "do_sample": True, "temperature": 0.8, "top_p": 0.95},
                "guidelines": "Pick the output that continues the text better for its task. "
                "Short and right beats long and wandering.",
            },
        )
        if created:
            experiment.variants.set(variants)
            experiment.prompts.set(Prompt.objects.filter(category__in=categories.values()))
    return experiment
