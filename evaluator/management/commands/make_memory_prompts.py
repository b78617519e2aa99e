"""manage.py make_memory_prompts: the context-memory suite (needles at 10/50/90% depth, a long output)."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator import memory_suite, presets
from evaluator.management.lookup import by_id_or_name
from evaluator.models import Checkpoint


class Command(BaseCommand):
    help = (
        "Create needle prompts sized to the checkpoint's windows (1/8, 1/2 and 1 of the native window, "
        "2 and 4 times it under YaRN x4) with the fact at 10%%, 50%% and 90%% depth and a reference answer, "
        "plus a long-output prompt, in the long_context category. Running it again changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--checkpoint", required=True, help="id or name of the checkpoint")

    def handle(self, *args, **options) -> None:
        checkpoint = presets.ensure_validated(by_id_or_name(Checkpoint, options["checkpoint"], "checkpoint"))
        try:
            report = memory_suite.create_memory_prompts(checkpoint=checkpoint)
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{'prompt':<12} {'tokens':>8} {'fact at':>8}  window it needs")
        for kind, tokens, depth, window in report.rows:
            where = f"{depth:.0%}" if depth is not None else "–"
            need = "(the answer is the measure)" if window == "answer" else f"{window} tokens"
            self.stdout.write(f"{kind:<12} {tokens:>8,} {where:>8}  {need}")
        self.stdout.write(
            self.style.SUCCESS(f"{report.created} prompts created, {report.existing} already present.")
        )
