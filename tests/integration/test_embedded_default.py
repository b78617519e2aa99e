"""The embedded default end to end: SQLite, the file-system broker, a real worker, no other service."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard.management.commands.serve import worker_command
from tests.integration.conftest import ROOT, stop_worker
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow]

SETUP = """
from evaluator.models import Category, Checkpoint, Experiment, Prompt, Variant
from evaluator.scheduling import schedule_experiment
from django.conf import settings
c = Checkpoint(name="tiny", path=str(settings.TINY_MOE_PATH)); c.full_clean(); c.save()
cat = Category.objects.create(slug="routine", name="Routine")
p = Prompt.objects.create(category=cat, text="Dear team,")
e = Experiment.objects.create(name="e", checkpoint=c, seeds=[0], sampling={"max_new_tokens": 8})
arms = [Variant.objects.create(checkpoint=c, name=f"k{k}", depth={"kind": "fixed", "k": k}) for k in (1, 4)]
e.variants.set(arms)
e.prompts.set([p])
print(schedule_experiment(experiment=e))
"""

COUNT = "from evaluator.models import Generation as G; print(G.objects.filter(status='done').count())"


def test_the_embedded_default_runs_the_loop_on_sqlite_and_the_file_broker(tmp_path: Path, tiny_model_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(DEPTH_ARENA_DATA_DIR=str(tmp_path), DEPTH_ARENA_TINY_MOE_PATH=str(tiny_model_path))

    def manage(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    manage("migrate", "--no-input")
    assert "ScheduleReport(generations=2, comparisons=1" in manage("shell", "-c", SETUP)
    assert (tmp_path / "depth-arena.sqlite3").exists()
    worker = subprocess.Popen(
        worker_command(),  # what `serve` starts
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: manage("shell", "-c", COUNT).strip().splitlines()[-1] == "2",
            timeout=180,
            interval=2,
            message="the worker on the file-system broker did not produce both outputs",
        )
    finally:
        stop_worker(worker)
