"""Load benchmark of the rating loop: many raters doing real HTTP round trips against the ASGI server."""

import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from http.client import HTTPConnection
from http.cookies import SimpleCookie
from importlib import import_module
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.models import Count, F

from config import web
from config.web import default_processes
from dashboard.models import RaterProfile, Rating
from dashboard.permissions import RATERS_GROUP
from evaluator import services as evaluator_services
from evaluator.models import Category, Checkpoint, Comparison, Experiment, Prompt, Variant
from evaluator.tasks import generate_arm

VOTE_URL = re.compile(r'hx-post="/rate/([A-Za-z0-9_-]+)/vote/"')
CSRF = re.compile(r'"X-CSRFToken": "([^"]+)"')
VERDICTS = ["left", "right", "tie", "both_bad"]
GOAL_ROUND_TRIPS_PER_S = 200
GOAL_P95_MS = 100
ERROR = re.compile(r'<p class="error" role="alert">([^<]*)</p>')


class Rater(threading.Thread):
    """One rater: start a session, then vote on whatever comes next until the shared budget is spent.

    With an interval the rater sends a vote every `interval` seconds on a fixed schedule (an open loop, as
    wrk2 and k6 do): a round trip's latency counts from when it was due, so a server that falls behind shows
    it in the latencies instead of quietly slowing the raters down. Without one, votes go back to back.
    """

    def __init__(
        self,
        port: int,
        session_key: str,
        budget: "Budget",
        verdicts: list[str],
        start: "Start",
        interval: float = 0.0,
        offset: float = 0.0,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.budget, self.verdicts = port, budget, verdicts
        self.start_line, self.interval, self.offset, self.due = start, interval, offset, 0.0
        self.measuring, self.finished = False, 0.0
        self.cookies = {settings.SESSION_COOKIE_NAME: session_key}
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.accepted = 0
        self.refused: list[str] = []

    def request(
        self, conn: HTTPConnection, method: str, path: str, form: dict | None = None, *, htmx: bool = True
    ) -> str:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if htmx:
            headers["HX-Request"] = "true"
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["X-CSRFToken"] = self.csrf
        started = time.perf_counter()
        if self.interval and self.measuring:
            if self.due > started:
                time.sleep(self.due - started)
            started = self.due  # latency counts from when the round trip was due
            self.due += self.interval
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        if self.measuring:
            self.finished = time.perf_counter()
            self.latencies.append(self.finished - started)
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}")
        return text

    def run(self) -> None:
        conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            page = self.request(conn, "GET", "/rate/", htmx=False)  # the full page carries the CSRF token
            self.csrf = CSRF.search(page).group(1)
            page = self.request(conn, "POST", "/rate/session/start/", {"target": "1000"})
            # Every rater has logged in and opened a session (which warms up the servers) before the
            # first vote is due; then the votes are spread evenly over each interval. Only votes count.
            self.due = self.start_line.wait() + self.offset
            self.measuring = True
            i = 0
            while self.budget.take():
                match = VOTE_URL.search(page)
                if match is None:
                    self.budget.give_back()
                    break
                page = self.request(
                    conn, "POST", f"/rate/{match.group(1)}/vote/", {"verdict": self.verdicts[i % 4]}
                )
                refused = ERROR.search(page)
                if refused:
                    self.refused.append(refused.group(1))
                else:
                    self.accepted += 1
                i += 1
        except threading.BrokenBarrierError:
            pass  # another rater failed to set up; its error is the one reported
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self.start_line.abort()  # raters still setting up stop rather than wait for this one
        finally:
            conn.close()


class Start:
    """A start line: every rater waits until all are set up, then all share one start time."""

    def __init__(self, parties: int) -> None:
        self.time = 0.0
        self.barrier = threading.Barrier(parties, action=self._go, timeout=120)

    def _go(self) -> None:
        self.time = time.perf_counter() + 0.2

    def wait(self) -> float:
        self.barrier.wait()
        return self.time

    def abort(self) -> None:
        self.barrier.abort()


class CpuMeter:
    """CPU time spent in the measured window by the web processes, the database's backends (a PostgreSQL on
    this host) and this process (the raters), how busy the machine's cores were and how much of their time
    the host of a virtual machine gave to other guests: read from /proc, so on Linux only (elsewhere the
    figures are null). Round trips/s on a shared virtual machine follow how much of its cores the host
    grants that hour; CPU per round trip does not count waiting for a core, so it tells apart better what
    the code costs (it still grows when the host runs the cores slowly), and stolen time shows the rest."""

    def __init__(self, web_pids: list[int]) -> None:
        self.web_pids = web_pids
        self.local_database = connection.vendor == "postgresql" and (
            not connection.settings_dict.get("HOST")
            or connection.settings_dict["HOST"] in {"localhost", "127.0.0.1", "::1"}
            or connection.settings_dict["HOST"].startswith("/")
        )
        self.start = self.end = None

    @staticmethod
    def process_seconds(pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    @staticmethod
    def machine_ticks() -> tuple[int, int, int] | None:
        """(all, idle, stolen) ticks of every core since boot. Stolen ticks are those a virtual machine's
        host gave to other guests while this one had work to run."""
        try:
            with open("/proc/stat") as f:
                ticks = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(ticks[:8]), ticks[3] + ticks[4], ticks[7]  # iowait is idle; guests are in user

    def database_seconds(self) -> dict[int, float]:
        if not self.local_database:
            return {}
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            pids = [row[0] for row in cursor.fetchall()]
        return {pid: seconds for pid in pids if (seconds := self.process_seconds(pid)) is not None}

    def snapshot(self) -> dict:
        return {
            "web": {pid: self.process_seconds(pid) for pid in self.web_pids},
            "database": self.database_seconds(),
            "load_generator": time.process_time(),
            "machine": self.machine_ticks(),
        }

    def begin(self) -> None:
        self.start = self.snapshot()

    def finish(self) -> None:
        self.end = self.snapshot()

    def report(self, round_trips: int) -> dict:
        if self.start is None or self.end is None or not round_trips:
            return {
                "cpu_ms_per_round_trip": None,
                "machine_cpu_busy": None,
                "machine_cpu_stolen": None,
                "cpu_cores": os.cpu_count(),
            }
        start, end = self.start, self.end
        web = None
        if all(v is not None for v in (*start["web"].values(), *end["web"].values())):
            web = sum(end["web"][pid] - start["web"][pid] for pid in self.web_pids)
        database = None
        if end["database"]:  # a backend that started in the window counts from zero
            database = sum(end["database"][pid] - start["database"].get(pid, 0.0) for pid in end["database"])
        busy = stolen = None
        if start["machine"] and end["machine"] and end["machine"][0] > start["machine"][0]:
            total, idle, steal = (e - s for s, e in zip(start["machine"], end["machine"], strict=True))
            busy, stolen = round(1 - (idle + steal) / total, 3), round(steal / total, 3)

        def per_round_trip(seconds: float | None) -> float | None:
            return None if seconds is None else round(1000 * seconds / round_trips, 2)

        return {
            "cpu_ms_per_round_trip": {
                "web": per_round_trip(web),
                "database": per_round_trip(database),
                "load_generator": per_round_trip(end["load_generator"] - start["load_generator"]),
            },
            "machine_cpu_busy": busy,
            "machine_cpu_stolen": stolen,
            "cpu_cores": os.cpu_count(),
        }


class Budget:
    def __init__(self, total: int) -> None:
        self.left, self.lock = total, threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True

    def give_back(self) -> None:
        with self.lock:
            self.left += 1


class Command(BaseCommand):
    help = (
        "Start the ASGI server on a free loopback port, seed an experiment with real outputs of the small "
        "model, let N concurrent raters vote over HTTP, stop the server and print JSON figures."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--raters", type=int, default=50)
        parser.add_argument("--votes", type=int, default=5000)
        parser.add_argument("--raters-per-comparison", type=int, default=5)
        parser.add_argument(
            "--rate",
            type=float,
            default=GOAL_ROUND_TRIPS_PER_S,
            help=f"Round trips per second that the raters send together, on a fixed schedule (default "
            f"{GOAL_ROUND_TRIPS_PER_S}, the goal); 0 sends each rater's votes back to back, which "
            "measures the most the server sustains (and then latency is mostly queueing).",
        )
        parser.add_argument(
            "--web-processes",
            type=int,
            default=default_processes(),
            help="daphne processes sharing the port, as `serve` starts them "
            f"(default {default_processes()}).",
        )

    def handle(
        self,
        *args,
        raters: int,
        votes: int,
        raters_per_comparison: int,
        rate: float,
        web_processes: int,
        **options,
    ) -> None:
        if raters < 1 or votes < 1 or web_processes < 1 or rate < 0:
            raise CommandError("--raters, --votes and --web-processes must be at least 1, --rate at least 0.")
        if not (settings.TINY_MOE_PATH / "config.json").exists():
            raise CommandError("The small model is missing: run `python manage.py build_tiny_moe` first.")
        run_id = uuid.uuid4().hex[:8]
        experiment = self.seed(run_id, votes, raters_per_comparison)
        users = self.raters(run_id, raters, experiment)
        web.collect_static_files()
        sockets = web.listen("127.0.0.1", 0, web_processes)
        port = sockets[0].getsockname()[1]
        log = tempfile.TemporaryFile()  # noqa: SIM115 - the servers write to it until they stop
        try:
            servers = web.start_web(
                sockets,
                cwd=settings.BASE_DIR,
                # Plain HTTP on loopback: no redirect to HTTPS (a deployment has a TLS proxy in front).
                env={**os.environ, "DJANGO_LOG_LEVEL": "WARNING", "DJANGO_SECURE_SSL_REDIRECT": "0"},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        finally:
            web.close(sockets)
        try:
            self.wait_for_server(port, servers, log)
            budget = Budget(votes)
            interval = raters / rate if rate else 0.0
            start = Start(raters + 1)  # and this thread, which starts the CPU meter on the line
            meter = CpuMeter([server.pid for server in servers])
            threads = [
                Rater(
                    port,
                    self.session_for(user),
                    budget,
                    VERDICTS[i % 4 :] + VERDICTS[: i % 4],
                    start,
                    interval=interval,
                    offset=interval * i / raters,
                )
                for i, user in enumerate(users)
            ]
            for t in threads:
                t.start()
            try:
                start.wait()
                meter.begin()
            except threading.BrokenBarrierError:
                pass  # a rater failed to set up: its error is reported, no figures
            for t in threads:
                t.join()
            meter.finish()
            # From the start line (every rater logged in, session open) to the last answer.
            ends = [t.finished for t in threads if t.finished]
            elapsed = max(ends) - start.time if ends and start.time else 0.0
        finally:
            web.stop(servers)
            log.close()
        try:
            report = self.report(experiment, threads, elapsed, raters)
            report.update(meter.report(report["round_trips"]))
            report.update(target_round_trips_per_s=rate or None, web_processes=web_processes)
            report.update(goal_round_trips_per_s=GOAL_ROUND_TRIPS_PER_S, goal_p95_ms=GOAL_P95_MS)
        finally:
            self.clean_up(experiment, users)
        self.stdout.write(json.dumps(report, indent=2))

    def seed(self, run_id: str, votes: int, k: int) -> Experiment:
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
        pairs = 6
        # A quarter more, and two: pairs whose outputs come out identical are never shown.
        prompts_needed = -(-votes * 5 // (4 * k * pairs)) + 2
        prompts = [
            Prompt.objects.create(category=category, text=f"Dear team, note {i} from the benchmark {run_id}:")
            for i in range(prompts_needed)
        ]
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
        evaluator_services.schedule_experiment(experiment=experiment)
        for arm in arms:
            generate_arm(experiment.pk, arm.pk)
        ready = Comparison.objects.filter(experiment=experiment).ready().count()
        self.stderr.write(f"seeded {ready} ready comparisons × {k} raters")
        return experiment

    def raters(self, run_id: str, count: int, experiment: Experiment) -> list:
        """Bench raters, limited to the bench experiment so that other work in the database is left alone."""
        group = Group.objects.get_or_create(name=RATERS_GROUP)[0]
        User = get_user_model()
        users = []
        for i in range(count):
            user = User.objects.create_user(f"bench-{run_id}-{i}")
            user.groups.add(group)
            RaterProfile.objects.create(user=user).experiments.set([experiment])
            users.append(user)
        return users

    def session_for(self, user) -> str:
        session = import_module(settings.SESSION_ENGINE).SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = next(
            path for path in settings.AUTHENTICATION_BACKENDS if hasattr(load_backend(path), "get_user")
        )
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        return session.session_key

    def wait_for_server(self, port: int, servers: list[subprocess.Popen], log) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(server.poll() is not None for server in servers):
                log.seek(0)
                raise CommandError(f"The server stopped: {log.read().decode(errors='replace')[-2000:]}")
            try:
                conn = HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/accounts/login/")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                time.sleep(0.2)
        raise CommandError("The server did not start within 60 s.")

    def report(self, experiment: Experiment, threads: list[Rater], elapsed: float, raters: int) -> dict:
        latencies = sorted(x for t in threads for x in t.latencies)
        accepted = sum(t.accepted for t in threads)
        stored = Rating.objects.filter(comparison__experiment=experiment).count()
        duplicates = (
            Rating.objects.filter(comparison__experiment=experiment)
            .values("comparison", "rater")
            .annotate(n=Count("pk"))
            .filter(n__gt=1)
            .count()
        )
        over_k = (
            Comparison.objects.filter(experiment=experiment)
            .annotate(n=Count("ratings"))
            .filter(n__gt=F("experiment__raters_per_comparison"))
            .count()
        )

        def pct(q: float) -> float:
            return (
                round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)
                if latencies
                else 0
            )

        return {
            "raters": raters,
            "votes_sent": accepted,
            "round_trips": len(latencies),
            "seconds": round(elapsed, 2),
            "round_trips_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0,
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else 0,
            "errors": sum(len(t.errors) for t in threads),
            "error_examples": [e for t in threads for e in t.errors][:3],
            # A refused vote is answered with the reason and the next comparison: the rater's time was lost.
            "refused_votes": sum(len(t.refused) for t in threads),
            "refusal_examples": sorted({r for t in threads for r in t.refused})[:3],
            "lost_votes": max(0, accepted - stored),
            "duplicate_votes": duplicates,
            "comparisons_over_k": over_k,
            "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        }

    def clean_up(self, experiment: Experiment, users: list) -> None:
        prompt_ids = list(experiment.prompts.values_list("pk", flat=True))
        Rating.objects.filter(comparison__experiment=experiment).delete()
        experiment.delete()
        Prompt.objects.filter(pk__in=prompt_ids).delete()
        get_user_model().objects.filter(pk__in=[u.pk for u in users]).delete()
