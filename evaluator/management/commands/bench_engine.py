"""Benchmark the worker's generation path against one-prompt-at-a-time generate on the small model."""

import json
import random

import torch
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from evaluator.demo import DEMO_PROMPTS
from evaluator.engine.bench import bench_engine


class Command(BaseCommand):
    help = (
        "Print JSON: naive_tokens_per_s (plain model.generate, one prompt at a time), engine_tokens_per_s "
        "(the worker's batched path, same prompts and lengths), speedup, greedy_match_rate, "
        "experts_implementation_decode, arm_switch_ms, reload_ms."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--checkpoint", default=None, help="model folder (default: the small demo model)")
        parser.add_argument("--prompts", type=int, default=32)
        parser.add_argument("--new-tokens", type=int, default=32)
        parser.add_argument("--batch-size", type=int, default=16)

    def handle(
        self, *args, checkpoint: str | None, prompts: int, new_tokens: int, batch_size: int, **options
    ):
        path = checkpoint or str(settings.TINY_MOE_PATH)
        texts = [
            item["text"]
            for item in json.loads(DEMO_PROMPTS.read_text())
            if item["category"] != "long_context"
        ]
        if not texts:
            raise CommandError(f"No demo prompts in {DEMO_PROMPTS}.")
        random.Random(0).shuffle(texts)
        chosen = (texts * (prompts // len(texts) + 1))[:prompts]
        if settings.ENGINE_CPU_THREADS:
            torch.set_num_threads(settings.ENGINE_CPU_THREADS)
        try:
            report = bench_engine(path, prompts=chosen, max_new_tokens=new_tokens, batch_size=batch_size)
        except OSError as exc:
            raise CommandError(
                f"Could not load {path}: {exc}. Run `python manage.py build_tiny_moe` first."
            ) from exc
        report["cpu_threads"] = torch.get_num_threads()
        self.stdout.write(json.dumps(report, indent=2))
