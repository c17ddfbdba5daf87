"""Benchmark: the Redis engine at in-process speed, and inside the deadline when Redis misbehaves.

- ``redis_throughput_{200,304}``: warm status requests/s on the Redis engine over a bare Starlette endpoint
  answering the same bytes, and ``redis_vs_memory_{200,304}`` over the memory engine, all three served by
  one uvicorn worker (uvloop + httptools when installed) in one run, measured in interleaved rounds.
- ``redis_{hung,slow}_p95_ms``: status p95 while a loopback proxy in front of Redis accepts and never answers,
  or adds 300 ms to every reply; every answer must be a 200.
- ``redis_reset_5xx``: 5xx answers among 100 status requests sent right after every Redis connection was
  reset (TCP RST), on the server's uvloop.

Needs Redis on 127.0.0.1:6379; without it the figures are reported as skipped.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import time
from collections.abc import Callable

from bench._common import (
    Outcome,
    bench_server,
    keepalive_latencies,
    percentile,
    read_response,
    report,
    request_bytes,
    skipped,
)
from bench._server import REDIS_DIRECT, server_options
from bench.throughput import _measure_ours, measure

BAR_BARE = 0.7
BAR_MEMORY = 0.85
BAR_P95_MS = 500.0
STATUS = "/api/integrations/status?projectId=demo"
PATHS = {
    "bare": ("/bare", "/bare304"),
    "mem": ("/mem/api/integrations/status?projectId=demo",) * 2,
    "redis": ("/redis/api/integrations/status?projectId=demo",) * 2,
}
FIGURES = (
    "redis_throughput_200",
    "redis_vs_memory_200",
    "redis_throughput_304",
    "redis_vs_memory_304",
    "redis_hung_p95_ms",
    "redis_slow_p95_ms",
    "redis_reset_5xx",
)


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


def throughput(smoke: bool) -> list[Outcome]:
    seconds, rounds = (0.5, 1) if smoke else (6.0, 3)
    tool = "wrk" if shutil.which("wrk") else "python"
    options = server_options()
    print(f"[redis_engine] one uvicorn worker, loop={options['loop']} http={options['http']}, load: {tool}")
    outcomes = []
    with bench_server("engines") as (port, _pid):
        from bench._common import fetch

        def current_etag(name: str) -> Callable[[], str]:
            def etag() -> str:  # the endpoint's own tag of this moment (the demo's relative times move it)
                status, headers, _ = asyncio.run(fetch(port, PATHS[name][0]))
                assert status == 200
                return headers["etag"]

            return etag

        for index, case in enumerate(("200", "304")):
            extra = {"If-None-Match": current_etag("mem")()} if case == "304" else {}
            for name in PATHS:
                measure(port, PATHS[name][index], extra, 0.5, tool)  # warm-up
            got: dict[str, list[float]] = {name: [] for name in PATHS}
            for _ in range(rounds):  # interleaved, so drift on the machine hits all three alike
                for name in PATHS:
                    if name == "bare":  # answers 304 whatever it is sent
                        got[name].append(measure(port, PATHS[name][index], extra, seconds, tool))
                    else:  # a 304 round measured with the tag of the moment, again if the tag moved
                        got[name].append(
                            _measure_ours(port, PATHS[name][index], extra, seconds, tool, current_etag(name))
                        )
            rps = {name: statistics.median(values) for name, values in got.items()}
            print(
                f"[redis_engine] {case}: redis {rps['redis']:,.0f} req/s, memory {rps['mem']:,.0f} req/s, "
                f"bare {rps['bare']:,.0f} req/s"
            )
            vs_bare, vs_memory = rps["redis"] / rps["bare"], rps["redis"] / rps["mem"]
            outcomes.append(
                report(f"redis_throughput_{case}", vs_bare, f">= {BAR_BARE}", vs_bare >= BAR_BARE)
            )
            outcomes.append(
                report(f"redis_vs_memory_{case}", vs_memory, f">= {BAR_MEMORY}", vs_memory >= BAR_MEMORY)
            )
    return outcomes


def faults(smoke: bool) -> list[Outcome]:
    from tests.backends.conftest import RedisProxy

    clients, seconds = (10, 1.0) if smoke else (50, 8.0)
    proxy = RedisProxy()
    outcomes = []
    try:
        with bench_server("redis_faults", "--redis-url", proxy.url) as (port, _pid):
            asyncio.run(keepalive_latencies(port, STATUS, clients=2, seconds=0.2, pause=0.01))  # warm
            for fault in ("hung", "slow"):
                if fault == "hung":
                    proxy.hung = True
                else:
                    proxy.latency = 0.3
                latencies, bad = asyncio.run(
                    keepalive_latencies(port, STATUS, clients=clients, seconds=seconds, pause=0.01)
                )
                proxy.hung, proxy.latency = False, 0.0
                p95 = percentile(latencies, 95)
                print(
                    f"[redis_engine] Redis {fault}: {len(latencies)} requests from {clients} clients in "
                    f"{seconds:g}s, p50 {percentile(latencies, 50):.0f} ms, p95 {p95:.0f} ms, "
                    f"max {max(latencies):.0f} ms, non-200: {bad}"
                )
                ok = p95 < BAR_P95_MS and bad == 0
                outcomes.append(
                    report(f"redis_{fault}_p95_ms", p95, f"< {BAR_P95_MS:g}, all 200", ok, fmt="{:.0f}")
                )
                # Recover before the next fault.
                asyncio.run(
                    keepalive_latencies(
                        port, STATUS, clients=2, seconds=3.0 if not smoke else 1.0, pause=0.01
                    )
                )
            proxy.reset()
            time.sleep(0.05)  # the server's loop sees the resets before the requests reuse its sockets
            codes = asyncio.run(_burst(port, 100))
            fives = sum(code >= 500 for code in codes)
            print(f"[redis_engine] after a reset: {len(codes)} status answers, {fives} 5xx")
            outcomes.append(report("redis_reset_5xx", fives, "== 0", fives == 0, fmt="{:.0f}"))
    finally:
        proxy.cut()
    return outcomes


async def _burst(port: int, count: int) -> list[int]:
    payload = request_bytes(STATUS)

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(payload)
            status, _, _ = await read_response(reader)
            return status
        finally:
            writer.close()

    return list(await asyncio.gather(*(one() for _ in range(count))))


def run(smoke: bool = False) -> list[Outcome]:
    if not _redis_up():
        return [skipped(name, f"Redis not reachable at {REDIS_DIRECT}") for name in FIGURES]
    return throughput(smoke) + faults(smoke)


if __name__ == "__main__":
    run()
