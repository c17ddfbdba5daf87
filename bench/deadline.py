"""Benchmark 2: status latency under 100 concurrent clients while github hangs forever and vercel answers in
2 s (scripted adapters, one uvicorn worker). Bar: p95 < 500 ms (the deadline is 450 ms)."""

from __future__ import annotations

import asyncio

from bench._common import (
    Outcome,
    bench_server,
    keepalive_latencies,
    percentile,
    report,
)
from bench._server import STATUS_PATH

BAR_MS = 500.0


async def _clients(port: int, clients: int, seconds: float) -> tuple[list[float], int]:
    return await keepalive_latencies(port, STATUS_PATH, clients=clients, seconds=seconds)


def _process(port: int, clients: int, seconds: float) -> tuple[list[float], int]:
    return asyncio.run(_clients(port, clients, seconds))


def run(smoke: bool = False) -> list[Outcome]:
    import multiprocessing

    clients, seconds, processes = (20, 1.5, 2) if smoke else (100, 10.0, 4)
    with (
        bench_server("deadline") as (port, _pid),
        multiprocessing.get_context("fork").Pool(processes) as pool,
    ):
        # Clients spread over processes, so a burst of answers is not queued behind one client loop.
        parts = pool.starmap(_process, [(port, clients // processes, seconds)] * processes)
    latencies = [x for part in parts for x in part[0]]
    bad = sum(part[1] for part in parts)
    if bad:
        raise RuntimeError(f"{bad} non-200 answers")
    p50, p95, p99 = (percentile(latencies, p) for p in (50, 95, 99))
    print(
        f"[deadline] {clients} clients, {len(latencies)} requests in {seconds:g}s: "
        f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms, max {max(latencies):.0f} ms"
    )
    return [report("deadline_p95_ms", p95, f"< {BAR_MS:g}", p95 < BAR_MS, fmt="{:.0f}")]


if __name__ == "__main__":
    run()
