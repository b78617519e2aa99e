"""manage.py recommend_policy: the depth policy an experiment's votes recommend, as JSON and as settings."""

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dashboard import recommend
from evaluator.engine.router import fit_router
from evaluator.management.lookup import by_id_or_name
from evaluator.models import Experiment


class Command(BaseCommand):
    help = (
        "Print the by_category depth policy an experiment's votes recommend (per category the cheapest arm "
        "not shown worse than the best) as JSON that schedule_experiment accepts as an arm, and one line per "
        "category for llama.cpp, vLLM and transformers. --auto adds a router for unlabelled prompts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("experiment", help="id or name of the experiment")
        parser.add_argument(
            "--auto",
            action="store_true",
            help="print an auto policy instead: a category classifier fit on the experiment's prompts, "
            "with its accuracy on held-out prompts",
        )
        parser.add_argument("--json-only", action="store_true", help="print only the policy's JSON")

    def handle(self, *args, **options) -> None:
        experiment = by_id_or_name(Experiment, options["experiment"], "experiment")
        found = recommend.recommend_policy(experiment=experiment)
        if found is None:
            raise CommandError(f"{experiment} has no votes on arms with one depth per category yet.")
        policy = found.policy
        report = ""
        if options["auto"]:
            prompts = list(experiment.prompts.select_related("category"))
            fit = fit_router([p.text for p in prompts], [p.category.slug for p in prompts])
            policy = {**policy, "kind": "auto", "router": fit.router.to_dict()}
            report = (
                f"# auto router: {fit.held_out_accuracy:.0%} of {fit.held_out_n} held-out prompts placed in "
                f"their category ({fit.folds}-fold cross-validation, {fit.held_out_unplaced} unplaced: they "
                f"get k={found.default_k})"
            )
        self.stdout.write(json.dumps(policy, sort_keys=True))
        if options["json_only"]:
            return
        if report:
            self.stdout.write(report)
        self.stdout.write(f"# rule: {found.rule}")
        for choice, line in found.choices_with_lines:
            self.stdout.write(f"# {choice.title}: k={choice.k} ({choice.arm}; {choice.reason})")
            self.stdout.write(f"#   llama.cpp:    {line['llama_cpp']}")
            self.stdout.write(f"#   vLLM:         {line['vllm']}")
            self.stdout.write(f"#   transformers: {line['transformers']}")
        for note in found.notes:
            self.stdout.write(f"# {note}")
