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


def test_cpu_small_mode_prints_every_row_beside_its_bound() -> None:
    # `python -m evaluator.engine.bench --cpu-small`, with Django unimportable: the GPU machine has none.
    script = (
        "import sys; sys.modules['django'] = None; from evaluator.engine.bench import main; "
        "sys.exit(main(['--cpu-small', '--new-tokens', '4', '--long-new-tokens', '40', '--repeats', '1']))"
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
    assert report["experts_implementation"] == report["experts_implementation_decode"][0]
    assert report["experts_implementation_decode"] == ["depth_arena_grouped_mm"]  # grouped while decoding
    assert report["skipped"] == []
    rows = {(row["batch"], row["arm"]): row for row in report["decode"]}
    dynamic = report["settings"]["dynamic"]
    arms = ["fixed k=2", "fixed k=4", "fixed k=8", f"dynamic p={dynamic['p']:g}, k 1..8"]
    assert set(rows) == {(batch, arm) for batch in (1, 4) for arm in arms}
    for (batch, _), row in rows.items():
        assert row["tokens_per_s"] > 0 and row["bound_tokens_per_s"] > 0
        assert 0 < row["fraction_of_bound"] == round(row["tokens_per_s"] / row["bound_tokens_per_s"], 4)
        assert row["compute_experts_per_token"] == row["mean_active_experts"]
        if batch == 1 and row["k"]:
            assert row["distinct_experts_per_layer"] == row["k"]  # one token reads exactly its k experts
    assert 1 <= rows[(4, arms[-1])]["mean_active_experts"] < 8  # dynamic: fewer than k_max
    # Reading more experts per token costs bytes: the bound falls as k grows.
    assert rows[(1, "fixed k=2")]["bound_tokens_per_s"] > rows[(1, "fixed k=8")]["bound_tokens_per_s"]
    assert [row["prompt_tokens"] for row in report["prefill"]] == [256, 1024, 2040]
    assert all(row["first_token_seconds"] > 0 and row["kv_cache_bytes"] > 0 for row in report["prefill"])
    assert report["long_generation"]["new_tokens"] == 40
    assert report["trace_overhead"]["bare_tokens_per_s"] > 0
    assert report["checks"] == {
        "greedy_batched_equals_alone": "4/4",
        "samples_independent_of_batch": True,
        "greedy_rows_decoded_for_2_prompts_x_3_seeds": 2,
        "greedy_seeds_share_one_text": True,
        "dynamic_compute_equals_active": True,
    }
    assert report["targets"]["longest_prefill_completes"]["met"] is True


def test_engine_beats_naive_generation_with_the_same_tokens(qwen3_path: Path) -> None:
    prompts = [" ".join(sentence.split()[: 3 + index % 5]) for index, sentence in enumerate(SENTENCES * 4)]
    try:
        report = bench_engine(str(qwen3_path), prompts=prompts, max_new_tokens=8, batch_size=12, device="cpu")
    finally:
        forget_loaded()
    print(json.dumps(report))
    assert report["greedy_match_rate"] == 1.0
    assert report["speedup"] > 1.5  # about 8 here; kept loose because CI machines are shared
    assert report["arm_switch_ms"] < 1.0
    assert report["reload_ms"] > 0
    assert report["experts_implementation_decode"] == ["depth_arena_grouped_mm"]
    assert set(report) >= {"naive_tokens_per_s", "engine_tokens_per_s"}
