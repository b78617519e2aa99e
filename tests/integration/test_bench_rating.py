"""bench_rating end to end, small: real daphne processes on one port, raters over HTTP, figures as JSON."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from dashboard.models import Rating
from evaluator.models import Experiment
from tests.integration.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("rate", [0, 40])
def test_bench_rating_votes_over_http_and_leaves_nothing_behind(monkeypatch, tiny_model_path, rate):
    # The servers are separate processes: point them at this test's database.
    monkeypatch.setenv("DATABASE_URL", database_url())
    monkeypatch.setenv("DEPTH_ARENA_TINY_MOE_PATH", str(tiny_model_path))
    out = StringIO()
    call_command(
        "bench_rating", raters=4, votes=24, raters_per_comparison=2, rate=rate, web_processes=2, stdout=out
    )
    report = json.loads(out.getvalue())
    assert report["web_processes"] == 2 and report["target_round_trips_per_s"] == (rate or None)
    assert report["votes_sent"] == 24 and report["round_trips"] == 24
    for key in ("errors", "refused_votes", "lost_votes", "duplicate_votes", "comparisons_over_k"):
        assert report[key] == 0, report
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    # What a round trip cost in CPU, read from /proc: the web processes always (Linux); the database where
    # its backends run on this host.
    cpu = report["cpu_ms_per_round_trip"]
    assert cpu["web"] > 0 and cpu["load_generator"] > 0, report
    assert cpu["database"] is None or cpu["database"] > 0, report
    assert 0 < report["machine_cpu_busy"] <= 1 and 0 <= report["machine_cpu_stolen"] < 1
    assert report["cpu_cores"] >= 1
    assert not Experiment.objects.filter(name__startswith="bench-rating-").exists()
    assert not Rating.objects.exists()
