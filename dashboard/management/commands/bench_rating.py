"""Load bench of a rating study at human pace: Locust raters and researchers against `serve` over HTTP,
then the database checked for lost, duplicate and surplus votes. Prints one JSON object."""

import json
import math
import os
import random
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from http.client import HTTPConnection
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError, connection
from django.db.models import Count, F

from dashboard.models import RaterProfile, Rating
from dashboard.permissions import VIEW_RESULTS, raters_group
from evaluator import jobs, scheduling
from evaluator.engine.generate import Result
from evaluator.models import Category, Checkpoint, Comparison, Experiment, Generation, Prompt, Variant

LOCUSTFILE = Path(__file__).resolve().parents[2] / "bench" / "locustfile.py"
SKIP_SHARE = 0.05
REFRESH_SECONDS = 5
ARM_PAIRS = 6  # four arms, every pair
WORDS = [
    "the",
    "team",
    "will",
    "send",
    "the",
    "report",
    "by",
    "friday",
    "please",
    "review",
    "the",
    "draft",
    "and",
    "note",
    "any",
    "open",
    "question",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, in whole milliseconds' tenths; None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (serve, uvicorn and its workers), while they run."""
    import psutil  # comes with locust

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class Command(BaseCommand):
    help = (
        "Start `serve --no-worker` on a free port, seed an experiment with crafted outputs, let Locust "
        "raters vote at human pace while researchers keep its results page open, check the database, "
        "print JSON."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--raters", type=int, default=50)
        parser.add_argument("--researchers", type=int, default=3)
        parser.add_argument(
            "--duration",
            type=float,
            default=60,
            help="Seconds measured once every simulated person has logged in (default 60).",
        )
        parser.add_argument(
            "--spawn-rate", type=float, default=5, help="People arriving per second (default 5)."
        )
        parser.add_argument(
            "--think",
            type=float,
            nargs=2,
            default=[3, 9],
            metavar=("LOW", "HIGH"),
            help="Seconds a rater reads before each vote, drawn evenly (default 3 9).",
        )
        parser.add_argument("--raters-per-comparison", type=int, default=2)
        parser.add_argument(
            "--port", type=int, default=None, help="Port for the server (default: a free one)."
        )

    def handle(
        self,
        *args,
        raters: int,
        researchers: int,
        duration: float,
        spawn_rate: float,
        think: list[float],
        raters_per_comparison: int,
        port: int | None,
        **options,
    ) -> None:
        if raters < 1 or researchers < 0 or duration <= 0 or spawn_rate <= 0 or raters_per_comparison < 1:
            raise CommandError(
                "--raters, --duration, --spawn-rate and --raters-per-comparison must be positive."
            )
        if not 0 < think[0] <= think[1]:
            raise CommandError("--think LOW HIGH needs 0 < LOW <= HIGH.")
        self.prepare_database()
        run_id = uuid.uuid4().hex[:8]
        people = raters + researchers
        ramp = people / spawn_rate
        # Enough for every rater voting without pause through the ramp and the window, and a half more.
        votes_possible = raters * (ramp + duration) / ((think[0] + think[1]) / 2)
        experiment = self.seed(
            run_id, math.ceil(1.5 * votes_possible / raters_per_comparison) + 10, raters_per_comparison
        )
        password = secrets.token_urlsafe(16)
        rater_names, researcher_names = self.accounts(run_id, raters, researchers, password, experiment)
        port = port or free_port()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                spec = Path(tmp) / "spec.json"
                out = Path(tmp) / "figures.json"
                spec.write_text(
                    json.dumps(
                        {
                            "raters": rater_names,
                            "researchers": researcher_names,
                            "password": password,
                            "experiment": experiment.pk,
                            "think": think,
                            "skip_share": SKIP_SHARE,
                            "refresh_seconds": REFRESH_SECONDS,
                            "duration": duration,
                            "out": str(out),
                        }
                    )
                )
                measured = self.run_load(
                    port, people, researchers, spawn_rate, ramp + duration, spec, Path(tmp)
                )
                if not out.exists():
                    raise CommandError(f"Locust wrote no figures:\n{measured['locust_output']}")
                figures = json.loads(out.read_text())
            report = self.report(experiment, figures, measured, raters, researchers)
        finally:
            self.clean_up(experiment, rater_names + researcher_names)
        self.stdout.write(json.dumps(report, indent=2))

    def prepare_database(self) -> None:
        try:
            connection.ensure_connection()
        except OperationalError as exc:
            name = settings.DATABASES["default"]["NAME"]
            raise CommandError(
                f"Cannot reach the database {name!r} ({exc}). Create it first, e.g. "
                f"`createdb -h 127.0.0.1 -U postgres {name}`, and point DATABASE_URL at it."
            ) from exc
        call_command("migrate", interactive=False, verbosity=0)
        if not (settings.TINY_MOE_PATH / "config.json").exists():
            raise CommandError("The small model is missing: run `python manage.py build_tiny_moe` first.")

    def seed(self, run_id: str, comparisons: int, k: int) -> Experiment:
        """A scheduled experiment of four arms of the small model whose outputs are crafted text: the bench
        measures the web side, not generation."""
        checkpoint = Checkpoint.objects.filter(path=str(settings.TINY_MOE_PATH)).first()
        if checkpoint is None:
            checkpoint = Checkpoint(name=f"bench-{run_id}", path=str(settings.TINY_MOE_PATH))
            checkpoint.full_clean()
            checkpoint.save()
        arms = [
            Variant.objects.get_or_create(
                checkpoint=checkpoint, name=f"bench k={d}", defaults={"depth": {"kind": "fixed", "k": d}}
            )[0]
            for d in (1, 2, 4, 8)
        ]
        category = Category.objects.get_or_create(slug="routine", defaults={"name": "Routine"})[0]
        prompts = Prompt.objects.bulk_create(
            Prompt(category=category, text=f"Dear team, note {i} from the benchmark {run_id}:")
            for i in range(math.ceil(comparisons / ARM_PAIRS))
        )
        experiment = Experiment.objects.create(
            name=f"bench-rating-{run_id}",
            checkpoint=checkpoint,
            seeds=[0],
            sampling={"max_new_tokens": 8, "do_sample": True, "temperature": 1.0},
            raters_per_comparison=k,
            min_seconds_per_vote=0,
            priority=1_000_000,
        )
        experiment.variants.set(arms)
        experiment.prompts.set(prompts)
        scheduling.schedule_experiment(experiment=experiment)
        jobs.store_results(
            experiment_id=experiment.pk,
            results=[self.crafted(g) for g in Generation.objects.filter(experiment=experiment)],
        )
        ready = Comparison.objects.filter(experiment=experiment).ready().count()
        self.stderr.write(f"seeded {ready} ready comparisons × {k} raters")
        return experiment

    @staticmethod
    def crafted(generation: Generation) -> Result:
        """About a hundred words, different for every output, so no pair is identical or nearly so."""
        rng = random.Random(generation.pk)
        text = " ".join(rng.choice(WORDS) for _ in range(100))
        return Result(
            key=generation.pk,
            text=f"Reply {generation.pk}: {text}.",
            prompt_tokens=12,
            new_tokens=130,
            seconds=1.0,
            tokens_per_s=130.0,
            routing=None,
            mean_active_experts=None,
            depth_k=None,
            error=None,
        )

    def accounts(
        self, run_id: str, raters: int, researchers: int, password: str, experiment: Experiment
    ) -> tuple[list[str], list[str]]:
        """Raters (in the raters group, limited to the bench experiment) and researchers who may view
        results, all with one password, hashed once."""
        User = get_user_model()
        hashed = make_password(password)
        rater_users = User.objects.bulk_create(
            User(username=f"bench-{run_id}-rater-{i}", password=hashed) for i in range(raters)
        )
        raters_group().user_set.add(*rater_users)
        profiles = RaterProfile.objects.bulk_create(RaterProfile(user=user) for user in rater_users)
        RaterProfile.experiments.through.objects.bulk_create(
            RaterProfile.experiments.through(raterprofile=profile, experiment=experiment)
            for profile in profiles
        )
        app_label, codename = VIEW_RESULTS.split(".")
        view_results = Permission.objects.get(content_type__app_label=app_label, codename=codename)
        researcher_users = User.objects.bulk_create(
            User(username=f"bench-{run_id}-researcher-{i}", password=hashed) for i in range(researchers)
        )
        view_results.user_set.add(*researcher_users)
        return [u.username for u in rater_users], [u.username for u in researcher_users]

    def run_load(
        self,
        port: int,
        people: int,
        researchers: int,
        spawn_rate: float,
        seconds: float,
        spec: Path,
        tmp: Path,
    ) -> dict:
        """Serve on `port`, run Locust against it, stop the server. Returns wall and CPU seconds."""
        server_log = (tmp / "serve.log").open("w+")
        server = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--no-worker", "--port", str(port)],
            cwd=settings.BASE_DIR,
            # Plain HTTP on loopback: no redirect to HTTPS (a deployment has a TLS proxy in front).
            env={**os.environ, "DJANGO_LOG_LEVEL": "WARNING", "DJANGO_SECURE_SSL_REDIRECT": "0"},
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_for_server(port, server, server_log)
            web_cpu = tree_cpu_seconds(server.pid)
            children_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            locust = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "locust",
                    "-f",
                    str(LOCUSTFILE),
                    "--headless",
                    "--only-summary",
                    "--host",
                    f"http://127.0.0.1:{port}",
                    "--users",
                    str(people),
                    "--spawn-rate",
                    str(spawn_rate),
                    # The locustfile ends the run after its window; this only bounds a run whose logins
                    # never all succeed.
                    "--run-time",
                    f"{math.ceil(3 * seconds + 60)}s",
                    "--exit-code-on-error",
                    "0",
                    *(["Rater", "Researcher"] if researchers else ["Rater"]),
                ],
                cwd=settings.BASE_DIR,
                env={**os.environ, "DEPTH_ARENA_BENCH_SPEC": str(spec)},
                capture_output=True,
                text=True,
            )
            wall = time.monotonic() - started
            web_cpu = tree_cpu_seconds(server.pid) - web_cpu
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            server_log.close()
        return {
            "run_s": round(wall, 1),
            "web_cpu_s": round(web_cpu, 1),
            "locust_cpu_s": round(
                after.ru_utime + after.ru_stime - children_cpu.ru_utime - children_cpu.ru_stime, 1
            ),
            "locust_output": (locust.stdout + locust.stderr)[-3000:],
        }

    def wait_for_server(self, port: int, server: subprocess.Popen, log) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if server.poll() is not None:
                log.seek(0)
                raise CommandError(f"The server stopped:\n{log.read()[-2000:]}")
            try:
                conn = HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/accounts/login/")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.2)
        raise CommandError("The server did not answer within 60 s.")

    def report(
        self, experiment: Experiment, figures: dict, measured: dict, raters: int, researchers: int
    ) -> dict:
        latencies = figures["latencies_ms"]
        window = figures["window"] or []
        duration = window[1] - window[0] if len(window) == 2 else 0.0

        def in_window(name: str) -> list[float]:
            return [
                ms for at, ms in latencies.get(name, []) if len(window) == 2 and window[0] <= at <= window[1]
            ]

        votes = in_window("vote")
        ratings = Rating.objects.filter(comparison__experiment=experiment)
        stored = set(ratings.values_list("rater__username", "comparison__token"))
        accepted = {tuple(vote) for vote in figures["accepted_votes"]}
        return {
            "raters": raters,
            "researchers": researchers,
            "duration_s": round(duration, 1),
            "votes": len(votes),
            "votes_per_s": round(len(votes) / duration, 2) if duration else 0,
            "p50_ms": percentile(votes, 0.50),
            "p95_ms": percentile(votes, 0.95),
            "p99_ms": percentile(votes, 0.99),
            "results_p50_ms": percentile(in_window("results live"), 0.50),
            "results_p95_ms": percentile(in_window("results live"), 0.95),
            "results_page_p95_ms": percentile([ms for _, ms in latencies.get("results page", [])], 0.95),
            "login_p95_ms": percentile([ms for _, ms in latencies.get("log in", [])], 0.95),
            "failures": figures["failures"],
            "failure_examples": figures["failure_examples"],
            "votes_stored": len(stored),
            "lost": len(accepted - stored),
            "lost_examples": sorted(accepted - stored)[:3],
            "duplicates": ratings.values("comparison", "rater")
            .annotate(n=Count("pk"))
            .filter(n__gt=1)
            .count(),
            "over_k": Comparison.objects.filter(experiment=experiment)
            .annotate(n=Count("ratings"))
            .filter(n__gt=F("experiment__raters_per_comparison"))
            .count(),
            "comparisons_left": Comparison.objects.filter(experiment=experiment)
            .ready()
            .filter(ratings_count__lt=F("experiment__raters_per_comparison"))
            .count(),
            "run_s": measured["run_s"],
            "web_cpu_s": measured["web_cpu_s"],
            "locust_cpu_s": measured["locust_cpu_s"],
            "cpu_cores": os.cpu_count(),
            "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        }

    def clean_up(self, experiment: Experiment, usernames: list[str]) -> None:
        """Remove what the bench made; its queued generation jobs are revoked first (the outputs were
        crafted, nothing is left to generate)."""
        scheduling.cancel_experiment(experiment=experiment)
        prompt_ids = list(experiment.prompts.values_list("pk", flat=True))
        Rating.objects.filter(comparison__experiment=experiment).delete()
        experiment.delete()
        Prompt.objects.filter(pk__in=prompt_ids).delete()
        get_user_model().objects.filter(username__in=usernames).delete()
