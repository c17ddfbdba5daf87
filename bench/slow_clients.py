"""Idle and slow clients against the demo's server settings: 5,000 connections that send nothing and 2,000
that send a request head a few bytes at a time, all opened at once against one uvicorn worker serving the demo
with ``web.serving``'s defaults (head deadline 10 s, keep-alive 5 s). Bars: every one of them is closed by the
server within the head deadline (plus 2 s of slack), and a status request made every 0.25 s meanwhile keeps
answering 200.

Loopback only; the client raises its own open-files limit; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import attrs

from bench._common import (
    Outcome,
    bench_server,
    percentile,
    raise_nofile,
    read_response,
    report,
    request_bytes,
)
from integration_status.web.serving import ServerLimits

IDLE, SLOW = 5_000, 2_000
SLACK = 2.0
STATUS_PATH = "/api/integrations/status?projectId=demo"


async def _hold(port: int, slow: bool, opened: list[float], closed: list[float]) -> None:
    """One attacker connection: open, (trickle a head), and note when the server hangs up."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    started = time.perf_counter()
    opened.append(started)
    head = request_bytes(STATUS_PATH)[:-2]  # never the final CRLF
    try:
        if slow:
            for i in range(0, len(head), 4):
                writer.write(head[i : i + 4])
                if await _closed_within(reader, 0.25):
                    break
            else:
                await _closed_within(reader, 60.0)
        else:
            await _closed_within(reader, 60.0)
        closed.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True once the server has closed the connection (an answer, e.g. a 408, is read and dropped)."""
    try:
        while await asyncio.wait_for(reader.read(65_536), seconds):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


async def _legit(port: int, stop: float, latencies: list[float], failures: list[str]) -> None:
    while time.perf_counter() < stop:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            writer.write(request_bytes(STATUS_PATH, {"Connection": "close"}))
            status, _, _ = await asyncio.wait_for(read_response(reader), 5)
            writer.close()
            if status != 200:
                failures.append(str(status))
        except (OSError, TimeoutError) as exc:
            failures.append(type(exc).__name__)
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.25)


def _legit_process(port: int, seconds: float) -> tuple[list[float], list[str]]:
    """The legitimate poller, in its own process so the attackers' event loop does not delay it."""
    latencies: list[float] = []
    failures: list[str] = []
    asyncio.run(_legit(port, time.perf_counter() + seconds, latencies, failures))
    return latencies, failures


@attrs.frozen(kw_only=True)
class _Run:
    opened: int
    idle: list[float]  # seconds from open to the server's hang-up, per idle connection
    slow: list[float]
    latencies: list[float]  # ms of the legitimate status requests
    failures: list[str]


async def _attack(port: int, idle: int, slow: int, deadline: float) -> _Run:
    opened: list[float] = []
    idle_closed: list[float] = []
    slow_closed: list[float] = []
    pool = multiprocessing.get_context("fork").Pool(1)
    legit = pool.apply_async(_legit_process, (port, deadline + SLACK + 3))
    tasks = []
    for n in range(idle + slow):
        is_slow = n >= idle
        tasks.append(
            asyncio.create_task(_hold(port, is_slow, opened, slow_closed if is_slow else idle_closed))
        )
        if n % 500 == 499:
            await asyncio.sleep(0.05)  # in waves, so the listen backlog is not what refuses them
    await asyncio.wait_for(asyncio.gather(*tasks), deadline + 90)
    latencies, failures = await asyncio.to_thread(legit.get, deadline + 60)
    pool.close()
    pool.join()
    return _Run(
        opened=len(opened), idle=idle_closed, slow=slow_closed, latencies=latencies, failures=failures
    )


def run(smoke: bool = False) -> list[Outcome]:
    idle, slow = (200, 100) if smoke else (IDLE, SLOW)
    raise_nofile(idle + slow + 1_024)
    # The smoke pass shortens the head deadline so that it takes seconds; the full run uses the default.
    deadline = 1.0 if smoke else ServerLimits().header_timeout
    with bench_server("demo", "--header-timeout", str(deadline)) as (port, _pid):
        result = asyncio.run(_attack(port, idle, slow, deadline))
    idle_closed, slow_closed, latencies, failures = (
        result.idle,
        result.slow,
        result.latencies,
        result.failures,
    )
    worst_idle = max(idle_closed, default=float("inf"))
    worst_slow = max(slow_closed, default=float("inf"))
    print(
        f"[slow_clients] {result.opened} connections opened ({idle} idle, {slow} slow heads); closed by the "
        f"server: {len(idle_closed)} idle (latest after {worst_idle:.1f} s), {len(slow_closed)} slow "
        f"(latest after {worst_slow:.1f} s); head deadline {deadline:g} s"
    )
    print(
        f"[slow_clients] status meanwhile: {len(latencies)} requests, {len(failures)} failed, p95 "
        f"{percentile(latencies, 95):.1f} ms, max {max(latencies):.1f} ms"
    )
    bar = deadline + SLACK
    return [
        report("slow_clients_idle_closed_s", worst_idle, f"<= {bar:g}", worst_idle <= bar, fmt="{:.1f}"),
        report("slow_clients_slow_closed_s", worst_slow, f"<= {bar:g}", worst_slow <= bar, fmt="{:.1f}"),
        report(
            "slow_clients_status_failures",
            len(failures),
            "0",
            not failures and len(idle_closed) == idle and len(slow_closed) == slow,
            fmt="{:.0f}",
        ),
    ]
