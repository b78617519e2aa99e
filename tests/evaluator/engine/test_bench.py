"""The benchmark's CPU mode (same code as --gpu, tiny model) and the engine-versus-naive comparison."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from evaluator.engine.bench import bench_engine
from evaluator.engine.loading import forget_loaded

from .conftest import SENTENCES

ROOT = Path(__file__).resolve().parents[3]


def test_cpu_small_mode_prints_every_run_beside_its_bound() -> None:
    # `python -m evaluator.engine.bench --cpu-small`, with Django unimportable: the GPU machine has none.
    script = (
        "import sys; sys.modules['django'] = None; from evaluator.engine.bench import main; "
        "sys.exit(main(['--cpu-small', '--new-tokens', '4']))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report = json.loads(completed.stdout)
    assert report["copy_bandwidth_GBps"] > 0
    assert report["experts_implementation"] in {"eager", "grouped_mm", "batched_mm"}
    assert report["skipped"] == []
    runs = {(run["batch"], run["k"], run["context"]): run for run in report["runs"]}
    assert set(runs) == {
        (batch, k, context)
        for batch in (1, 4)
        for k in (2, 4, 8)
        for context in ("native context", "YaRN ×4")
    }
    for (batch, k, _), run in runs.items():
        assert run["tokens_per_s"] > 0 and run["bound_tokens_per_s"] > 0
        assert 0 < run["fraction_of_bound"] == round(run["tokens_per_s"] / run["bound_tokens_per_s"], 4)
        if batch == 1:
            assert run["distinct_experts_per_layer"] == k  # one token reads exactly its k experts
        else:
            assert k <= run["distinct_experts_per_layer"] <= min(batch * k, 16)
    # Reading more experts per token costs bytes: the bound falls as k grows.
    assert (
        runs[(1, 2, "native context")]["bound_tokens_per_s"]
        > runs[(1, 8, "native context")]["bound_tokens_per_s"]
    )


def test_engine_beats_naive_generation_with_the_same_tokens(qwen3_path: Path) -> None:
    prompts = [" ".join(sentence.split()[: 3 + index % 5]) for index, sentence in enumerate(SENTENCES * 4)]
    try:
        report = bench_engine(str(qwen3_path), prompts=prompts, max_new_tokens=8, batch_size=12)
    finally:
        forget_loaded()
    print(json.dumps(report))
    assert report["greedy_match_rate"] == 1.0
    assert report["speedup"] > 1.5  # about 8 here; kept loose because CI machines are shared
    assert report["arm_switch_ms"] < 1.0
    assert report["reload_ms"] > 0
    assert set(report) >= {"naive_tokens_per_s", "engine_tokens_per_s"}
