"""Benchmark 5: SSE fan-out. Clients (raw sockets, in separate processes) hold event streams open on one
uvicorn worker; the server publishes a ``github:push`` stamped with its wall time and every client notes when
it arrives. Bars: delivery p99 < 250 ms; server RSS growth < 30 KiB per open stream; open streams back to 0
after the clients leave."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from typing import Any

from bench._common import (
    Outcome,
    bench_server,
    fetch,
    percentile,
    raise_nofile,
    report,
    request_bytes,
    rss_kib,
)

BAR_P99_MS = 250.0
BAR_KIB = 30.0
EVENTS_PATH = "/api/integrations/events?projectId=demo"


def _clients(port: int, first: int, count: int, events: int, queue: Any, timeout: float) -> None:
    """One client process: open ``count`` streams, report ready, then collect ``events`` pushes per stream."""
    raise_nofile(count + 64)

    async def run() -> list[float]:
        latencies: list[float] = []
        ready = 0
        all_ready = asyncio.Event()

        async def stream(i: int) -> None:
            nonlocal ready
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes(EVENTS_PATH, {"X-User": f"u{first + i}"}))
            buffer = b""
            seen_snapshot = False
            got = 0
            try:
                while got < events:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    arrived = time.time()
                    buffer += chunk
                    *frames, buffer = buffer.split(b"\n\n")
                    for frame in frames:
                        if b"event: status:update" in frame and not seen_snapshot:
                            seen_snapshot = True
                            ready += 1
                            if ready == count:
                                all_ready.set()
                        elif b"event: github:push" in frame:
                            data = next(line[6:] for line in frame.split(b"\n") if line.startswith(b"data: "))
                            latencies.append((arrived - json.loads(data)["sentAt"]) * 1000)
                            got += 1
            finally:
                writer.close()

        tasks = [asyncio.create_task(stream(i)) for i in range(count)]
        await asyncio.wait_for(all_ready.wait(), timeout)
        queue.put(("ready", count))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        return latencies

    try:
        queue.put(("done", asyncio.run(run())))
    except Exception as exc:
        queue.put(("error", repr(exc)))


def run(smoke: bool = False) -> list[Outcome]:
    clients, processes, events = (100, 2, 3) if smoke else (2000, 4, 10)
    timeout = 60.0
    raise_nofile(clients + 256)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with bench_server("sse") as (port, pid):
        asyncio.run(fetch(port, "/api/integrations/status?projectId=demo"))  # warm: cache filled, code loaded
        time.sleep(0.5)
        before = rss_kib(pid)
        share = clients // processes
        workers = [
            ctx.Process(target=_clients, args=(port, i * share, share, events, queue, timeout))
            for i in range(processes)
        ]
        for w in workers:
            w.start()
        for _ in workers:
            kind, value = queue.get(timeout=timeout)
            if kind != "ready":
                raise RuntimeError(f"SSE clients failed: {value}")
        time.sleep(0.5)
        during = rss_kib(pid)
        open_streams = json.loads(asyncio.run(fetch(port, "/bench/stats"))[2])["streams"]
        last: list[float] = []
        for _ in range(events):
            asyncio.run(fetch(port, "/bench/publish", method="POST"))
            time.sleep(0.3 if smoke else 1.0)
        latencies: list[float] = []
        for _ in workers:
            kind, value = queue.get(timeout=timeout)
            if kind != "done":
                raise RuntimeError(f"SSE clients failed: {value}")
            latencies += value
        for w in workers:
            w.join(timeout)
        deadline = time.monotonic() + 10
        while True:
            stats = json.loads(asyncio.run(fetch(port, "/bench/stats"))[2])
            if stats["streams"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    del last
    per_conn = (during - before) / clients
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"[sse] {open_streams} open streams, {events} events, {len(latencies)} deliveries: "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(latencies):.0f} ms; RSS {before} -> {during} KiB "
        f"({per_conn:.1f} KiB per stream); streams after the clients left: {stats['streams']}"
    )
    return [
        report(
            "sse_p99_ms",
            p99,
            f"< {BAR_P99_MS:g}",
            p99 < BAR_P99_MS and len(latencies) == clients * events,
            fmt="{:.0f}",
        ),
        report("sse_kib_per_stream", per_conn, f"< {BAR_KIB:g}", per_conn < BAR_KIB, fmt="{:.1f}"),
        report("sse_streams_after", stats["streams"], "== 0", stats["streams"] == 0, fmt="{:.0f}"),
    ]


if __name__ == "__main__":
    run()
