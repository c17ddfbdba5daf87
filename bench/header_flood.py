"""Hostile headers: 4 connections send a 1 MB ``If-None-Match`` in a loop while other clients poll the status
endpoint; their p95 must stay under 50 ms. Also printed: what one oversized header costs the parsers in process
(``If-None-Match``, ``Idempotency-Key``, ``Last-Event-ID``, a Sanity signature), which should be microseconds
because each stops at its length bound.

One uvicorn worker on loopback, twice: with uvicorn's defaults (the throughput bench server: only the library's
own bounds help) and as the demo runs (``web.serving``: the head is cut off at 16 KiB with a 431). Attackers
run in their own processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time

from bench._common import (
    Outcome,
    bench_server,
    keepalive_latencies,
    percentile,
    read_response,
    report,
    request_bytes,
)
from bench._server import STATUS_PATH

BAR_MS = 50.0
ATTACKERS = 4
HEADER_BYTES = 1_048_576


def _attacker(port: int, seconds: float) -> int:
    """One client sending 1 MB If-None-Match headers back to back (reconnecting whenever the server hangs up, as
    a guarded server does after its 431); how many answers it got."""

    async def run() -> int:
        stop = time.perf_counter() + seconds
        payload = request_bytes(STATUS_PATH, {"If-None-Match": 'W/"' + "a" * HEADER_BYTES + '"'})
        answers = 0
        while time.perf_counter() < stop:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                while time.perf_counter() < stop:
                    writer.write(payload)
                    await writer.drain()
                    status, headers, _ = await read_response(reader)
                    if status >= 500:
                        raise RuntimeError(f"a flooded request got {status}")
                    answers += 1
                    if headers.get("connection") == "close":
                        break
            except (OSError, asyncio.IncompleteReadError):
                pass  # the server cut the head off and closed: connect again
            finally:
                writer.close()
        return answers

    return asyncio.run(run())


async def _poll(port: int, seconds: float) -> list[float]:
    """Latencies (ms) of ordinary status polls on 2 keep-alive connections (a poller, not a load generator)."""
    latencies, bad = await keepalive_latencies(port, STATUS_PATH, clients=2, seconds=seconds, pause=0.01)
    if bad:
        raise RuntimeError(f"{bad} status polls did not get a 200")
    return latencies


def _parse_costs() -> dict[str, float]:
    """Microseconds one 1 MB value costs each header parser of the library."""
    from integration_status.core.etag import parse_if_none_match
    from integration_status.core.events import resume_event_id
    from integration_status.core.idempotency import parse_idempotency_key
    from integration_status.core.webhooks import parse_sanity_signature
    from integration_status.exceptions import InvalidRequest

    big = "a" * HEADER_BYTES
    quoted, signature = '"' + big + '"', "t=1,v1=" + big

    def key() -> None:
        with contextlib.suppress(InvalidRequest):
            parse_idempotency_key(big)

    cases = {
        "If-None-Match": lambda: parse_if_none_match(quoted),
        "Idempotency-Key": key,
        "Last-Event-ID": lambda: resume_event_id(big),
        "sanity-webhook-signature": lambda: parse_sanity_signature(signature),
    }
    costs = {}
    for name, call in cases.items():
        started = time.perf_counter()
        for _ in range(100):
            call()
        costs[name] = (time.perf_counter() - started) / 100 * 1e6
    return costs


def _measure(kind: str, seconds: float) -> tuple[float, float, int, int]:
    """(p95 alone, p95 flooded, flooded requests answered, polls) against the bench server ``kind``."""
    with bench_server(kind) as (port, _pid):
        baseline = asyncio.run(_poll(port, seconds / 2))
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(ATTACKERS) as pool:
            flood = pool.starmap_async(_attacker, [(port, seconds + 1)] * ATTACKERS)
            time.sleep(0.5)  # the attackers are connected and sending
            flooded = asyncio.run(_poll(port, seconds))
            answers = sum(flood.get(timeout=seconds + 30))
    return percentile(baseline, 95), percentile(flooded, 95), answers, len(flooded)


def run(smoke: bool = False) -> list[Outcome]:
    seconds = 2.0 if smoke else 10.0
    for name, micros in _parse_costs().items():
        print(f"[header_flood] a 1 MB {name} costs {micros:.1f} us to refuse")
    outcomes = []
    # throughput: plain uvicorn defaults (only the library's own bounds); demo: web.serving's settings too.
    for kind, figure in (("throughput", "header_flood_p95_ms"), ("demo", "header_flood_guarded_p95_ms")):
        alone, p95, answers, polls = _measure(kind, seconds)
        print(
            f"[header_flood] {kind} server: status p95 {alone:.1f} ms alone, {p95:.1f} ms while {ATTACKERS} "
            f"connections sent {answers} requests with a 1 MB If-None-Match ({polls} polls)"
        )
        outcomes.append(report(figure, p95, f"< {BAR_MS:g}", p95 < BAR_MS, fmt="{:.1f}"))
    return outcomes
