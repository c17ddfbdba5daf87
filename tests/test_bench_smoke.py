"""The benchmarks run: ``python -m bench --smoke`` exits 0 and prints a ratio line for each benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = (
    "throughput_200",
    "throughput_304",
    "deadline_p95_ms",
    "coalescing_memory_calls",
    "etag_hit_rate",
    "sse_p99_ms",
    "sse_kib_per_stream",
    "sse_streams_after",
    "sse_load_memory_dropped",
    "sse_load_memory_p99_ms",
    "sse_load_memory_status_p95_ms",
    "actions_memory_one_key_executions",
    "actions_memory_distinct_admitted",
    "header_flood_p95_ms",
    "header_flood_guarded_p95_ms",
    "replay_memory_accepted",
    "replay_memory_entries_added",
    "slow_clients_idle_closed_s",
    "slow_clients_status_failures",
    "github_budget_counted_per_hour",
    "github_budget_429",
    "github_budget_missed_pushes",
    "github_budget_unconditional_per_hour",
    "redis_throughput_200",
    "redis_vs_memory_200",
    "redis_throughput_304",
    "redis_vs_memory_304",
    "redis_hung_p95_ms",
    "redis_slow_p95_ms",
    "redis_reset_5xx",
    "real_adapters_p95_ms",
    "real_adapters_max_ms",
)


def test_bench_smoke_prints_every_ratio() -> None:
    """`python -m bench --smoke` finishes within three minutes, exits 0 and prints one ratio line per figure."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ratios = [line for line in done.stdout.splitlines() if line.startswith("ratio ")]
    for name in EXPECTED:
        assert any(line.startswith(f"ratio {name}: ") for line in ratios), f"no ratio line for {name}"
    assert done.stdout.splitlines()[-1].startswith("summary: ")
