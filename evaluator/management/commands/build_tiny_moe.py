"""manage.py build_tiny_moe: train the project's small MoE (corpus, tokenizer, model) and save it."""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluator.tiny import TINY_TRAINED_TOP_K, build_tiny_moe, tiny_moe_exists


class Command(BaseCommand):
    help = (
        "Build the small trained Qwen3-MoE used by the demo and the tests: a generated corpus, a BPE "
        "tokenizer and a model trained at depth "
        f"{TINY_TRAINED_TOP_K}, on the CPU in a minute or two. Does nothing if the folder already holds a "
        "model, unless --force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--seed", type=int, default=0, help="seed of corpus, data order and weights (default 0)"
        )
        parser.add_argument("--force", action="store_true", help="rebuild even if the folder holds a model")
        parser.add_argument("--out", help="folder to write (default: settings.TINY_MOE_PATH)")

    def handle(self, *args, **options) -> None:
        out = Path(options["out"]) if options["out"] else Path(self._default_path())
        if tiny_moe_exists(out) and not options["force"]:
            self.stdout.write(f"{out} already holds a model; use --force to rebuild it.")
            return
        self.stdout.write(f"Building the tiny MoE into {out} (seed {options['seed']}) ...")
        try:
            report = build_tiny_moe(
                out, seed=options["seed"], log=lambda message: self.stdout.write(f"  {message}")
            )
        except Exception as exc:
            raise CommandError(f"Building the tiny MoE failed: {exc}") from exc
        perplexity = report["perplexity"]
        for depth in (1, report["trained_top_k"], 2 * report["trained_top_k"]):
            note = " (trained depth)" if depth == report["trained_top_k"] else ""
            self.stdout.write(f"validation perplexity at depth {depth}{note}: {perplexity[str(depth)]:.3f}")
        self.stdout.write(self.style.SUCCESS(f"Built {out} in {report['seconds']:.1f} s."))
        self.stdout.write(json.dumps(report))

    @staticmethod
    def _default_path() -> Path:
        return getattr(settings, "TINY_MOE_PATH", settings.BASE_DIR / "var" / "models" / "tiny-moe")
