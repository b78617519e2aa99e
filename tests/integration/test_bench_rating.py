"""bench_rating end to end, small: `serve` over HTTP, Locust raters and researchers, integrity as JSON."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from dashboard.models import Rating
from evaluator.models import Experiment
from tests.integration.conftest import database_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_bench_rating_loses_no_vote_and_never_goes_over_k(monkeypatch, tiny_model_path):
    # The server is a separate process: point it at this test's database.
    monkeypatch.setenv("DATABASE_URL", database_url())
    monkeypatch.setenv("DEPTH_ARENA_TINY_MOE_PATH", str(tiny_model_path))
    out = StringIO()
    call_command("bench_rating", raters=5, researchers=2, duration=10, think=[0.2, 0.5], stdout=out)
    report = json.loads(out.getvalue())
    assert report["votes"] > 0, report
    assert report["votes_stored"] >= report["votes"]
    for key in ("failures", "lost", "duplicates", "over_k"):
        assert report[key] == 0, report
    assert not Experiment.objects.filter(name__startswith="bench-rating-").exists()
    assert not Rating.objects.exists()
