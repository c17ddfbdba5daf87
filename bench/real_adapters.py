"""Benchmark: status with the real adapters (httpx, the library's HTTP client) against loopback providers, GitHub
accepting and never answering, Vercel answering after 2 s, under 100 keep-alive connections of fresh viewers
(a new ``X-User`` on every request) for 20 s. Only a cold start may spend the deadline: after the first
deadline, p95 < 50 ms and max < 500 ms (``real_adapters_p95_ms``, ``real_adapters_max_ms``)."""

from __future__ import annotations

import asyncio
import itertools
import time

from bench._common import Outcome, bench_server, percentile, read_response, report, request_bytes

BAR_P95_MS = 50.0
BAR_MAX_MS = 500.0
FIRST_DEADLINE = 0.6  # seconds from the start: the cold start and its 450 ms deadline, with slack


async def _clients(
    port: int, clients: int, seconds: float, offset: int
) -> tuple[list[tuple[float, float]], int]:
    began = time.perf_counter()
    stop = began + seconds
    samples: list[tuple[float, float]] = []  # (seconds since the start, latency ms)
    bad = 0
    users = itertools.count(offset)

    async def client() -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (now := time.perf_counter()) < stop:
                payload = request_bytes(
                    "/api/integrations/status?projectId=demo", {"X-User": f"viewer-{next(users)}"}
                )
                writer.write(payload)
                status, _, _ = await read_response(reader)
                samples.append((now - began, (time.perf_counter() - now) * 1000))
                bad += status != 200
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return samples, bad


def _process(port: int, clients: int, seconds: float, offset: int) -> tuple[list[tuple[float, float]], int]:
    return asyncio.run(_clients(port, clients, seconds, offset))


def run(smoke: bool = False) -> list[Outcome]:
    import multiprocessing

    clients, seconds, processes = (20, 1.5, 2) if smoke else (100, 20.0, 4)
    with (
        bench_server("real_adapters") as (port, _pid),
        multiprocessing.get_context("fork").Pool(processes) as pool,
    ):
        jobs = [(port, clients // processes, seconds, n * 10_000_000) for n in range(processes)]
        parts = pool.starmap(_process, jobs)
    samples = [x for part in parts for x in part[0]]
    bad = sum(part[1] for part in parts)
    after = [ms for at, ms in samples if at >= FIRST_DEADLINE]
    p50, p95, top = percentile(after, 50), percentile(after, 95), max(after)
    print(
        f"[real_adapters] {clients} connections of fresh viewers, {len(samples)} requests in {seconds:g}s "
        f"({len(samples) / seconds:,.0f} req/s), non-200: {bad}; after the first deadline: p50 {p50:.1f} ms, "
        f"p95 {p95:.1f} ms, max {top:.0f} ms; overall max {max(ms for _, ms in samples):.0f} ms"
    )
    return [
        report("real_adapters_p95_ms", p95, f"< {BAR_P95_MS:g}", p95 < BAR_P95_MS and not bad, fmt="{:.1f}"),
        report("real_adapters_max_ms", top, f"< {BAR_MAX_MS:g}", top < BAR_MAX_MS and not bad, fmt="{:.0f}"),
    ]


if __name__ == "__main__":
    run()
