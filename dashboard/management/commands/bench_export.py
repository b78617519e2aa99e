"""Time the votes CSV export on a throwaway experiment of many votes and print rows/s and memory as JSON."""

import json
import secrets
import threading
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from dashboard import exports
from dashboard.models import Rating
from evaluator.models import Category, Checkpoint, Comparison, Experiment, Generation, Prompt, Variant

GOAL_ROWS_PER_S = 100_000
GOAL_PEAK_MB = 300
DEPTHS = (1, 2, 4, 8)
PROMPTS = 200
VERDICTS = ("left", "right", "tie", "both_bad")


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


class PeakSampler(threading.Thread):
    """Samples the resident memory every few milliseconds until stopped; keeps the peak."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, rss_mb(), threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, rss_mb())
        return self.peak


class Command(BaseCommand):
    help = (
        "Seed a throwaway experiment with many votes (COPY on PostgreSQL), time streaming its votes CSV "
        "through the code the download view uses, delete it, and print rows/s and memory as JSON. "
        f"Goals: at least {GOAL_ROWS_PER_S:,} rows/s; memory during the export under {GOAL_PEAK_MB} MB."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--votes", type=int, default=1_000_000, help="Votes to seed (default 1000000).")
        parser.add_argument(
            "--tracemalloc",
            action="store_true",
            dest="python_heap",
            help="Also export a second time under tracemalloc to report the peak of Python allocations "
            "(slow; not timed).",
        )

    def handle(self, *args, votes: int, python_heap: bool, **options) -> None:
        if votes < 1:
            raise CommandError("--votes must be at least 1.")
        tag = f"bench-export-{secrets.token_hex(4)}"
        started = time.perf_counter()
        experiment = self._seed(tag, votes)
        seeded_s = time.perf_counter() - started
        try:
            report = {"votes": votes, "database": connection.vendor, "seed_s": round(seeded_s, 2)}
            report.update(self._time_export(experiment, votes))
            if python_heap:
                report["python_heap_peak_mb"] = round(self._python_peak(experiment), 1)
        finally:
            self._delete(tag, experiment)
        report["goal_rows_per_s"] = GOAL_ROWS_PER_S
        report["goal_peak_mb"] = GOAL_PEAK_MB
        self.stdout.write(json.dumps(report, indent=2))

    # ----------------------------------------------------------------------- measuring

    def _time_export(self, experiment: Experiment, votes: int) -> dict:
        baseline = rss_mb()
        sampler = PeakSampler()
        sampler.start()
        started, cpu_started = time.perf_counter(), time.process_time()
        size = rows = 0
        for chunk in exports.votes_csv(experiment):
            size += len(chunk.encode())
            rows += chunk.count("\r\n")  # the csv module's line end; a newline inside a cell is "\n"
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        peak = sampler.stop()
        rows -= 1  # the header
        if rows != votes:
            raise CommandError(f"The export wrote {rows} rows for {votes} votes.")
        return {
            "rows": rows,
            "csv_mb": round(size / 2**20, 1),
            "export_s": round(seconds, 2),
            "rows_per_s": round(rows / seconds),
            # On a busy machine the wall clock counts other processes' turns too.
            "export_cpu_s": round(cpu, 2),
            "rows_per_cpu_s": round(rows / cpu),
            "rss_before_mb": round(baseline, 1),
            "rss_peak_mb": round(peak, 1),
            "rss_growth_mb": round(peak - baseline, 1),
        }

    def _python_peak(self, experiment: Experiment) -> float:
        tracemalloc.start()
        for _chunk in exports.votes_csv(experiment):
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak / 2**20

    # ----------------------------------------------------------------------- seeding and cleaning up

    def _seed(self, tag: str, votes: int) -> Experiment:
        with transaction.atomic():
            checkpoint = Checkpoint.objects.create(name=tag, path="/nonexistent/bench")
            variants = [
                Variant.objects.create(checkpoint=checkpoint, name=f"k={k}", depth={"kind": "fixed", "k": k})
                for k in DEPTHS
            ]
            category = Category.objects.create(slug=tag, name="Benchmark")
            prompts = Prompt.objects.bulk_create(
                Prompt(category=category, text=f'Prompt {i}: write a note, "quoted", of {i} lines.\nThanks')
                for i in range(PROMPTS)
            )
            experiment = Experiment.objects.create(
                name=tag, checkpoint=checkpoint, seeds=[0], status=Experiment.Status.SCHEDULED
            )
            experiment.variants.set(variants)
            experiment.prompts.set(prompts)
            now = timezone.now()
            generations = Generation.objects.bulk_create(
                Generation(
                    experiment=experiment,
                    variant=v,
                    prompt=p,
                    seed=0,
                    status=Generation.Status.DONE,
                    text=f"output of {v.name}",
                    finished_at=now,
                )
                for v in variants
                for p in prompts
            )
            by_key = {(g.variant_id, g.prompt_id): g for g in generations}
            comparisons = Comparison.objects.bulk_create(
                Comparison(
                    experiment=experiment,
                    prompt=p,
                    seed=0,
                    left=by_key[(a.pk, p.pk)],
                    right=by_key[(b.pk, p.pk)],
                    ready_at=now,
                )
                for i, a in enumerate(variants)
                for b in variants[i + 1 :]
                for p in prompts
            )
            n_raters = -(-votes // len(comparisons))
            User = get_user_model()
            raters = User.objects.bulk_create(
                User(username=f"{tag}-{i}", password="!") for i in range(n_raters)
            )
            self._insert_ratings(
                [c.pk for c in comparisons], [u.pk for u in raters], votes, now - timedelta(days=1)
            )
        if connection.vendor == "postgresql":
            # Autovacuum analyses a table after big changes, in its own time. Without statistics the
            # planner takes the fresh experiment for a small one and picks a plan made for that.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {Rating._meta.db_table}, {Comparison._meta.db_table}")
        return experiment

    def _insert_ratings(self, comparisons: list[int], raters: list[int], votes: int, start) -> None:
        def rows():
            for n in range(votes):
                rater, comparison = divmod(n, len(comparisons))
                yield (
                    comparisons[comparison],
                    raters[rater],
                    VERDICTS[n % 4],
                    "=cmd|' /C calc'!A0"
                    if n % 1000 == 0
                    else ("fine, but long-winded" if n % 7 == 0 else ""),
                    '{"clarity": "left"}' if n % 5 == 0 else "{}",
                    5.0 + n % 40,
                    0.0,
                    n % 50 == 0,
                    None,
                    start + timedelta(milliseconds=n),
                )

        columns = (
            "comparison_id, rater_id, verdict, comment, criteria, seconds, away_seconds, too_fast,"
            " gold_correct, created_at"
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                raw = cursor.cursor  # the psycopg cursor under Django's wrapper
                with raw.copy(f"COPY {Rating._meta.db_table} ({columns}) FROM STDIN") as copy:
                    for row in rows():
                        copy.write_row(row)
            return
        fields = [c.strip() for c in columns.split(",")]
        batch = []
        for row in rows():
            batch.append(Rating(**dict(zip(fields, row, strict=True))))
            if len(batch) == 5000:
                Rating.objects.bulk_create(batch)
                batch = []
        Rating.objects.bulk_create(batch)

    def _delete(self, tag: str, experiment: Experiment) -> None:
        with transaction.atomic():
            Rating.objects.filter(comparison__experiment=experiment).delete()
            experiment.delete()
            Variant.objects.filter(checkpoint__name=tag).delete()
            Checkpoint.objects.filter(name=tag).delete()
            Prompt.objects.filter(category__slug=tag).delete()
            Category.objects.filter(slug=tag).delete()
            get_user_model().objects.filter(username__startswith=f"{tag}-").delete()
        if connection.vendor == "postgresql" and connection.get_autocommit():
            # A million deleted rows stay behind as dead tuples until autovacuum comes by; until then every
            # count over the ratings table (the rating page's progress, the next benchmark) reads them too.
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM ANALYZE {Rating._meta.db_table}, {Comparison._meta.db_table}")
