"""manage.py schedule_experiment: schedule a draft experiment, or create one from a preset and schedule it."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator import presets, scheduling
from evaluator.management.lookup import by_id_or_name
from evaluator.models import Checkpoint, Experiment


class Command(BaseCommand):
    help = (
        "Schedule an experiment: create its outputs and comparisons and queue one job per arm. "
        "Give a draft experiment by id or name, or --preset and --checkpoint to create one from a preset."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("experiment", nargs="?", help="id or name of a draft experiment")
        parser.add_argument(
            "--preset",
            choices=sorted(presets.PRESETS),
            help="create the experiment from this preset ("
            + "; ".join(f"{slug}: {p.title}" for slug, p in presets.PRESETS.items())
            + ")",
        )
        parser.add_argument("--checkpoint", help="id or name of the checkpoint for --preset")
        parser.add_argument("--name", default="", help="name of the experiment --preset creates")
        parser.add_argument(
            "--seeds", default="0", help="seeds for --preset, separated by commas (default: 0)"
        )
        parser.add_argument(
            "--create-only", action="store_true", help="with --preset: create the draft, do not schedule it"
        )

    def handle(self, *args, **options) -> None:
        if options["preset"]:
            if options["experiment"]:
                raise CommandError("Give either an experiment or --preset, not both.")
            experiment = self._from_preset(options)
            if options["create_only"]:
                return
        else:
            if not options["experiment"]:
                raise CommandError("Name the experiment to schedule (id or name), or use --preset.")
            if options["create_only"] or options["checkpoint"]:
                raise CommandError("--checkpoint and --create-only go with --preset.")
            experiment = by_id_or_name(Experiment, options["experiment"], "experiment")
        try:
            report = scheduling.schedule_experiment(experiment=experiment)
        except scheduling.ScheduleError as exc:
            raise CommandError(
                f"{experiment} was not scheduled:\n" + "\n".join(f"  - {p}" for p in exc.problems)
            ) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Scheduled {experiment} (id {experiment.pk}): {report.arms} arms, "
                f"{report.generations} outputs, {report.comparisons} comparisons queued."
            )
        )

    def _from_preset(self, options: dict) -> Experiment:
        if not options["checkpoint"]:
            raise CommandError("--preset needs --checkpoint (id or name).")
        checkpoint = by_id_or_name(Checkpoint, options["checkpoint"], "checkpoint")
        try:
            seeds = [int(s) for s in options["seeds"].replace(" ", "").split(",") if s]
        except ValueError:
            raise CommandError(f"--seeds {options['seeds']!r}: write whole numbers like 0,1,2.") from None
        try:
            experiment = presets.create_from_preset(
                preset=options["preset"], checkpoint=checkpoint, name=options["name"], seeds=seeds
            )
        except presets.PresetError as exc:
            raise CommandError(str(exc)) from exc
        arms = "; ".join(v.describe() for v in experiment.variants.order_by("pk"))
        self.stdout.write(
            f"Created {experiment} (id {experiment.pk}): {experiment.prompts.count()} prompts, arms: {arms}."
        )
        return experiment
