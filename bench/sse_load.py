"""Benchmark: event streams under webhook load, on the memory engine and on Redis, side by side.

Thousands of clients (raw sockets, in separate processes) hold event streams of one project open while signed
GitHub push webhooks arrive at a steady rate: on one uvicorn worker per engine, then on two Redis workers behind
one socket (``uvicorn --workers 2``: the kernel spreads streams, webhooks and polls over them, and each worker's
reader fans out what any worker published). Each push becomes a ``github:push`` event, a refresh of the provider
and a ``status:update`` marker. Meanwhile a poller measures the status endpoint. On Redis the commands the
server sends per webhook are counted (``INFO commandstats``) at two stream counts: they must not grow with the
number of streams. Each run prints the cores the server, the stream clients and Redis kept busy and the share
of the machine left idle (they all share it: near 0% idle, whatever is ready to run waits for a core, and the
latencies measure the machine as much as the server), the push p99 of each ten seconds, the server's full
garbage collections and the longest of them (each stops a worker's loop), and the share of the machine's time
its hypervisor stole meanwhile (on a shared VM steal comes in bursts, and the bad ten seconds of a run are
usually those). ``BENCH_SSE_GC_THRESHOLD2=100``
runs the servers as a host that tunes its collector would (``gc.freeze()`` after start-up, the third threshold
raised from 10): not the default, which measures the library on an untouched interpreter.

Bars: every reading stream gets every push (0 dropped), push delivery p99 < 250 ms, status p95 < 100 ms while
it runs, memory < 30 KiB per stream, Redis commands per webhook independent of the stream count (within 25%).

    python -m bench sse_load               # 2,000 streams, 20 webhooks/s for 60 s: memory, Redis, Redis x2
    python -m bench.sse_load serve ...     # the server (started by the benchmark)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import queue
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from bench._common import (
    Outcome,
    bench_server,
    cpu_seconds,
    family_rss_kib,
    free_port,
    idle_share,
    machine_ticks,
    percentile,
    raise_nofile,
    read_response,
    report,
    request_bytes,
    skipped,
    steal_share,
)

BAR_P99_MS = 250.0
BAR_STATUS_P95_MS = 100.0
BAR_KIB = 30.0
BAR_COMMANDS_GROWTH = 1.25
#: Connections the webhooks arrive on (a slot waits for its connection when all are busy).
WEBHOOK_CONNECTIONS = 16
#: Seconds of webhooks alone (no status polls) whose Redis commands are counted.
COUNT_SECONDS = 5.0
SECRET = "bench-webhook-secret"
#: The sha of a github:push frame (the only frames with a 40-digit "sha" field).
PUSHED_SHA = re.compile(rb'"sha":"([0-9a-f]{40})"')
REPOSITORY = "acme/storefront"
EVENTS_PATH = "/api/integrations/events?projectId=demo"
STATUS_PATH = "/api/integrations/status?projectId=demo"
HOOK_PATH = "/api/integrations/webhooks/github"
#: A Redis of the benchmark's own (started from ``redis-server`` on a free loopback port), so that the commands
#: counted are the server's alone; ``BENCH_REDIS_URL`` names another one instead.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "")


# --- the server ---------------------------------------------------------------------------------------------


def build_app() -> Any:
    """The benchmark's app, configured by ``BENCH_SSE_ENGINE``, ``BENCH_SSE_PREFIX`` and ``BENCH_SSE_REDIS_URL``
    (an import string for uvicorn's workers, which each build their own)."""
    import gc
    import logging

    import structlog
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from bench._server import header_viewer
    from integration_status import Secret, Settings, StatusService, WebhookTarget, allow_global_roles
    from integration_status.demo import World, simulated_adapters
    from integration_status.demo.server import DemoConnections
    from integration_status.web.starlette import routes

    raise_nofile(65_536)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    engine: Any = None
    if os.environ["BENCH_SSE_ENGINE"] == "redis":
        from integration_status.backends import RedisEngine

        engine = RedisEngine.from_url(
            os.environ["BENCH_SSE_REDIS_URL"], prefix=os.environ["BENCH_SSE_PREFIX"]
        )

    async def resolve(provider: str, headers: Mapping[str, str], payload: Any) -> WebhookTarget | None:
        if provider == "github" and payload.get("repository", {}).get("full_name") == REPOSITORY:
            return WebhookTarget(project_id="demo", secret=Secret(SECRET))
        return None

    service = StatusService(
        connections=DemoConnections(),
        adapters=simulated_adapters(World(seed=11)),
        authenticator=header_viewer,
        engine=engine,
        webhooks=resolve,
        authorizer=allow_global_roles,
        settings=Settings(sse_per_viewer=100_000, sse_per_process=100_000, heartbeat=30.0),
    )

    # Full collections so far, and the longest since the last stats: with thousands of streams each stops the
    # worker's loop for a while.
    full_gcs = [0, 0.0]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            full_gcs[0] += 1
            full_gcs[1] = max(full_gcs[1], (time.perf_counter() - started[0]) * 1000)

    gc.callbacks.append(on_gc)
    if os.environ.get("BENCH_SSE_GC_THRESHOLD2"):
        # A host's tuning, not the library's (it leaves the collector alone): what start-up built moves out of
        # the collector's sight, and a full collection waits for ten times as many young ones as by default.
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, int(os.environ["BENCH_SSE_GC_THRESHOLD2"]))

    async def stats(request: Request) -> Response:
        sse = service.health.stats().sse
        body = {
            "pid": os.getpid(),
            "full_gcs": full_gcs[0],
            "longest_gc_ms": round(full_gcs[1]),
            "streams": service.sse_connections.count,
            "dropped": sse.dropped,
            "ended": sse.ended,
        }
        full_gcs[1] = 0.0
        if request.query_params.get("objects"):  # what a full collection walks (~10 ms to count)
            body["objects"] = len(gc.get_objects())
        return Response(content=json.dumps(body), media_type="application/json")

    return Starlette(routes=[*routes(service), Route("/bench/stats", stats)], lifespan=service.lifespan)


def serve(port: int, engine_name: str, prefix: str, redis_url: str, workers: int) -> None:
    """One uvicorn worker, or ``workers`` of them behind one socket (``uvicorn --workers``, as deployed)."""
    import threading

    import uvicorn

    from bench._server import run_uvicorn, server_options

    os.environ.update(BENCH_SSE_ENGINE=engine_name, BENCH_SSE_PREFIX=prefix, BENCH_SSE_REDIS_URL=redis_url)
    options: dict[str, Any] = {"backlog": 4096, "timeout_graceful_shutdown": 1, **server_options()}
    if workers == 1:
        run_uvicorn(build_app(), port, options)
        return

    def announce() -> None:  # "ready" once every worker has answered
        try:
            _worker_stats(port, workers)
        except RuntimeError as exc:
            print(f"not ready: {exc}", flush=True)
            return
        print("ready", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    uvicorn.run(
        "bench.sse_load:build_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        **options,
    )


def _worker_stats(
    port: int, workers: int, within: float = 60.0, query: str = ""
) -> dict[int, dict[str, int]]:
    """``/bench/stats`` of every worker (by pid), asked on fresh connections until each has answered."""
    import http.client

    found: dict[int, dict[str, int]] = {}
    deadline = time.monotonic() + within
    while len(found) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(found)} of {workers} workers answered")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/bench/stats" + query)
            body = json.loads(conn.getresponse().read())
            conn.close()
        except (OSError, ValueError, http.client.HTTPException):
            time.sleep(0.05)
            continue
        found[body["pid"]] = body
    return found


@contextlib.contextmanager
def server(engine: str, prefix: str, redis_url: str, workers: int = 1) -> Iterator[tuple[int, int]]:
    """This benchmark's server in a subprocess (``python -m bench.sse_load serve``); its Redis keys go after."""
    try:
        with bench_server(
            "serve",
            "--engine",
            engine,
            "--prefix",
            prefix,
            "--redis-url",
            redis_url,
            "--workers",
            str(workers),
            module="bench.sse_load",
        ) as running:
            yield running
    finally:
        if engine == "redis":
            _drop_prefix(redis_url, prefix)


@contextlib.contextmanager
def private_redis() -> Iterator[str | None]:
    """The URL of a Redis for the runs: ``BENCH_REDIS_URL``, else one started here (nothing kept on disk),
    else None."""
    import shutil

    if REDIS_URL:
        yield REDIS_URL
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while _redis_calls(url) is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                yield None
                return
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _drop_prefix(redis_url: str, prefix: str) -> None:
    """Delete the keys the run left under its prefix."""
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=2)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


# --- the clients --------------------------------------------------------------------------------------------


def _clients(port: int, first: int, count: int, queue: Any, stop_after: float) -> None:
    """One client process: open ``count`` streams, say ready, then note when each push (by sha) arrives.

    Each stream is a bare :class:`asyncio.Protocol` (a callback per chunk received, no task per stream), so
    that the load generator, which shares the machine with the server, costs as little as it can."""
    raise_nofile(count + 64)

    async def run() -> tuple[list[dict[str, float]], int, float]:
        loop = asyncio.get_running_loop()
        arrivals: list[dict[str, float]] = [{} for _ in range(count)]
        ready = 0
        ended_early = 0
        all_ready = asyncio.Event()
        stopping = False

        class Stream(asyncio.Protocol):
            def __init__(self, i: int) -> None:
                self.i = i
                self.buffer = b""
                self.counted = False
                self.transport: asyncio.Transport | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                self.transport = transport
                transport.write(request_bytes(EVENTS_PATH, {"X-User": f"u{first + self.i}"}))

            def data_received(self, chunk: bytes) -> None:
                nonlocal ready
                arrived = time.time()
                data = self.buffer + chunk
                end = data.rfind(b"\n\n")  # complete frames up to here; the rest waits for the next chunk
                if end < 0:
                    self.buffer = data
                    return
                complete, self.buffer = data[:end], data[end + 2 :]
                if not self.counted and b"event: status:update" in complete:
                    self.counted = True
                    ready += 1
                    if ready == count:
                        all_ready.set()
                got = arrivals[self.i]
                for sha in PUSHED_SHA.findall(complete):  # one pass in C over the chunk, no JSON parsing
                    got.setdefault(sha.decode(), arrived)

            def connection_lost(self, exc: Exception | None) -> None:
                nonlocal ended_early
                if not stopping:
                    ended_early += 1

        streams = []
        for i in range(count):
            _, protocol = await loop.create_connection(lambda i=i: Stream(i), "127.0.0.1", port)
            streams.append(protocol)
        await asyncio.wait_for(all_ready.wait(), 120)
        queue.put(("ready", count))
        cpu = time.process_time()
        await asyncio.sleep(stop_after)
        cpu = time.process_time() - cpu
        stopping = True
        for protocol in streams:
            if protocol.transport is not None:
                protocol.transport.close()
        await asyncio.sleep(0.1)
        return arrivals, ended_early, cpu

    try:
        queue.put(("done", asyncio.run(run())))
    except Exception as exc:
        queue.put(("error", repr(exc)))


async def _status_poller(port: int, seconds: float, connections: int) -> list[float]:
    """Closed-loop status requests (with If-None-Match, as the status bar polls) on keep-alive connections."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        etag = ""
        try:
            while time.perf_counter() < stop:
                headers = {"X-User": f"poller{n}", **({"If-None-Match": etag} if etag else {})}
                started = time.perf_counter()
                writer.write(request_bytes(STATUS_PATH, headers))
                status, got, _ = await read_response(reader)
                latencies.append((time.perf_counter() - started) * 1000)
                etag = got.get("etag", etag)
                if status not in (200, 304):
                    raise RuntimeError(f"status answered {status}")
                await asyncio.sleep(0.05)
        finally:
            writer.close()

    await asyncio.gather(*(one(n) for n in range(connections)))
    return latencies


async def _webhooks(port: int, rate: float, seconds: float) -> dict[str, float]:
    """Signed push deliveries offered at ``rate`` per second whatever the server's answer times (an open loop
    over a few keep-alive connections, as a provider's deliveries arrive); the send time of each sha."""
    from integration_status.testing import sign_github

    sent: dict[str, float] = {}
    started = time.perf_counter()
    slots = itertools.count()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                n = next(slots)
                due = n / rate
                if due >= seconds:
                    return
                elapsed = time.perf_counter() - started
                if due > elapsed:
                    await asyncio.sleep(due - elapsed)
                sha = secrets.token_hex(20)
                push = {"ref": "refs/heads/main", "after": sha, "deleted": False}
                body = json.dumps({**push, "repository": {"full_name": REPOSITORY}}).encode()
                headers = {
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": f"bench-{sha}",
                    **sign_github(SECRET, body),
                }
                sent[sha] = time.time()
                request = request_bytes(HOOK_PATH, headers, method="POST", body=body)
                writer.write(request)
                try:
                    status, _, _ = await read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    # At low rates a connection idles past the server's keep-alive timeout and is closed:
                    # deliver on a fresh one, as a provider would.
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(request)
                    status, _, _ = await read_response(reader)
                if status != 200:
                    raise RuntimeError(f"webhook answered {status}")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(WEBHOOK_CONNECTIONS)))
    return sent


def _objects(port: int, workers: int) -> int:
    """The objects the collector tracks in all the server's workers: what each full collection walks."""
    return sum(w["objects"] for w in _worker_stats(port, workers, within=10.0, query="?objects=1").values())


def _redis_info(url: str, section: str) -> dict[str, Any] | None:
    """One section of Redis's ``INFO``, or None when Redis cannot be reached."""
    try:
        import redis
    except ImportError:
        return None
    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        stats: dict[str, Any] = client.info(section)
        client.close()
    except Exception:
        return None
    return stats


def _redis_calls(url: str) -> int | None:
    """Commands Redis has executed so far (all clients), or None when Redis cannot be reached."""
    stats = _redis_info(url, "commandstats")
    return None if stats is None else sum(int(v["calls"]) for v in stats.values())


def _redis_cpu(url: str) -> float | None:
    """CPU seconds (user + system) the Redis server has used so far, as it reports them, or None."""
    stats = _redis_info(url, "cpu")
    return None if stats is None else float(stats["used_cpu_sys"]) + float(stats["used_cpu_user"])


def one_run(
    engine: str,
    streams: int,
    rate: float,
    seconds: float,
    processes: int,
    redis_url: str = "",
    count_seconds: float = COUNT_SECONDS,
    server_workers: int = 1,
) -> dict[str, Any]:
    """Streams open, then webhooks and status polls for ``seconds``; the figures of that run. With several
    server workers, the kernel spreads the streams and requests over them, as under ``uvicorn --workers``."""
    raise_nofile(streams + 256)
    prefix = f"bench-sse-{secrets.token_hex(4)}"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with server(engine, prefix, redis_url, server_workers) as (port, pid):
        asyncio.run(_status_poller(port, 0.5, 1))  # warm: the cache filled, the code loaded
        time.sleep(0.5)
        before = family_rss_kib(pid)
        objects_before = _objects(port, server_workers)
        share = streams // processes
        clients = [
            ctx.Process(
                target=_clients,
                args=(port, i * share, share, queue, seconds + count_seconds + 5.0),
                daemon=True,
            )
            for i in range(processes)
        ]
        for c in clients:
            c.start()
        for _ in clients:
            kind, value = queue.get(timeout=180)
            if kind != "ready":
                raise RuntimeError(f"SSE clients failed: {value}")
        time.sleep(1.0)
        during = family_rss_kib(pid)
        objects_during = _objects(port, server_workers)

        cpu_before = cpu_seconds(pid)
        redis_cpu_before = _redis_cpu(redis_url) if engine == "redis" else None
        ticks_before = machine_ticks()
        pauses_before = _worker_stats(port, server_workers, within=10.0)

        async def load() -> tuple[dict[str, float], list[float]]:
            sent, polled = await asyncio.gather(
                _webhooks(port, rate, seconds), _status_poller(port, seconds, 10)
            )
            return sent, polled

        sent, polled = asyncio.run(load())
        server_cpu = cpu_seconds(pid) - cpu_before
        redis_cpu_after = _redis_cpu(redis_url) if engine == "redis" else None
        ticks_after = machine_ticks()
        stolen = steal_share(ticks_before, ticks_after)
        idle = idle_share(ticks_before, ticks_after)
        pauses_after = _worker_stats(port, server_workers, within=10.0)
        # Then webhooks alone, for the Redis commands they cost (the status poller reads Redis too).
        calls_before = _redis_calls(redis_url) if engine == "redis" else None
        counted = asyncio.run(_webhooks(port, rate, count_seconds))
        calls_after = _redis_calls(redis_url) if engine == "redis" else None
        sent.update(counted)
        arrivals: list[dict[str, float]] = []
        ended_early = 0
        clients_cpu = 0.0
        for _ in clients:
            kind, value = queue.get(timeout=120)
            if kind != "done":
                raise RuntimeError(f"SSE clients failed: {value}")
            arrivals += value[0]
            ended_early += value[1]
            clients_cpu += value[2]
        for c in clients:
            c.join(30)
        with contextlib.suppress(RuntimeError):
            per_worker = _worker_stats(port, server_workers, within=10.0)
            stats = {"dropped": sum(w["dropped"] for w in per_worker.values())}
    latencies = [(got[sha] - at) * 1000 for got in arrivals for sha, at in sent.items() if sha in got]
    # Push p99 per ten seconds of the run, by the time each push was sent: a steady figure, or bad moments.
    start = min(sent.values(), default=0.0)
    windows: dict[int, list[float]] = {}
    for got in arrivals:
        for sha, at in sent.items():
            if sha in got:
                windows.setdefault(int((at - start) // 10), []).append((got[sha] - at) * 1000)
    missing = sum(1 for got in arrivals for sha in sent if sha not in got)
    incomplete = sum(1 for got in arrivals if any(sha not in got for sha in sent))
    commands = None
    if calls_before is not None and calls_after is not None:
        commands = (calls_after - calls_before) / max(1, len(counted))
    return {
        "engine": engine,
        "server_workers": server_workers,
        "streams": streams,
        "webhooks": len(sent),
        "rate": (len(sent) - len(counted)) / seconds,
        "deliveries": len(latencies),
        "missing": missing,
        "incomplete_streams": incomplete,
        "ended_early": ended_early,
        "server_dropped": stats.get("dropped", -1) if "stats" in locals() else -1,
        "p50": percentile(latencies, 50) if latencies else float("inf"),
        "p99": percentile(latencies, 99) if latencies else float("inf"),
        "status_p95": percentile(polled, 95) if polled else float("inf"),
        "kib_per_stream": (during - before) / streams,
        "objects_per_stream": (objects_during - objects_before) / streams,
        "commands_per_webhook": commands,
        "p99_by_10s": [round(percentile(windows[w], 99)) for w in sorted(windows)],
        # Full garbage collections in the server while the webhooks ran (each stops its worker's loop).
        "full_gcs": sum(
            w["full_gcs"] - pauses_before.get(pid_, {}).get("full_gcs", 0) for pid_, w in pauses_after.items()
        ),
        "longest_gc_ms": max((w["longest_gc_ms"] for w in pauses_after.values()), default=0),
        "steal": stolen,
        "idle": idle,
        # How the kernel spread the streams over the workers (one worker: all of them).
        "streams_per_worker": sorted((w["streams"] for w in pauses_before.values()), reverse=True),
        # Cores busy meanwhile: the server's while the webhooks ran, the stream clients' over their whole wait.
        "server_cores": server_cpu / seconds,
        "redis_cores": None
        if redis_cpu_before is None or redis_cpu_after is None
        else (redis_cpu_after - redis_cpu_before) / seconds,
        "clients_cores": clients_cpu / (seconds + count_seconds + 5.0),
    }


def _label(engine: str, workers: int) -> str:
    return engine if workers == 1 else f"{engine}, {workers} workers"


def _print(figures: Mapping[str, Any]) -> None:
    commands = figures["commands_per_webhook"]
    redis_part = "" if commands is None else f"; {commands:.1f} Redis commands per webhook"
    redis_cores = "" if figures["redis_cores"] is None else f", Redis {figures['redis_cores']:.2f}"
    spread = figures["streams_per_worker"]
    if len(spread) > 1:
        redis_part += f"; streams per worker {'/'.join(map(str, spread))}"
    print(
        f"[sse_load] {_label(figures['engine'], figures['server_workers'])}: {figures['streams']} streams, "
        f"{figures['webhooks']} webhooks "
        f"({figures['rate']:.1f}/s), "
        f"{figures['deliveries']} push deliveries ({figures['missing']} missing, {figures['incomplete_streams']} "
        f"streams incomplete, {figures['server_dropped']} dropped by the server): p50 {figures['p50']:.0f} ms, "
        f"p99 {figures['p99']:.0f} ms; status p95 {figures['status_p95']:.1f} ms; "
        f"{figures['kib_per_stream']:.1f} KiB and {figures['objects_per_stream']:.0f} tracked objects per stream"
        f"{redis_part}; cores busy: server "
        f"{figures['server_cores']:.2f}, stream clients {figures['clients_cores']:.2f}{redis_cores}, machine "
        f"idle {figures['idle'] * 100:.0f}%; p99 by 10 s "
        f"{figures['p99_by_10s']} ms; {figures['full_gcs']} full GCs (longest {figures['longest_gc_ms']} ms); "
        f"{figures['steal'] * 100:.0f}% of the machine stolen by its hypervisor",
        flush=True,
    )


def run(smoke: bool = False) -> list[Outcome]:
    with private_redis() as redis_url:
        return _run(smoke, redis_url)


def _run(smoke: bool, redis_url: str | None) -> list[Outcome]:
    streams, processes, rate, seconds = (30, 1, 5.0, 2.0) if smoke else (2000, 4, 20.0, 60.0)
    count = 1.0 if smoke else COUNT_SECONDS
    few = max(10, streams // 10)
    outcomes: list[Outcome] = []
    # The memory engine on one worker (it cannot share events between workers); Redis on one worker, and on
    # two behind one socket (``uvicorn --workers 2``), the shape it is deployed in.
    runs = [("memory", 1)]
    if redis_url is not None:
        runs += [("redis", 1), ("redis", 2)]
    else:
        outcomes.append(skipped("sse_load_redis", "no Redis: set BENCH_REDIS_URL or install redis-server"))
    results = {}
    for engine, workers in runs:
        name = engine if workers == 1 else f"{engine}_{workers}_workers"
        try:
            figures = one_run(engine, streams, rate, seconds, processes, redis_url or "", count, workers)
        except (
            RuntimeError,
            OSError,
            queue.Empty,
        ) as exc:  # the server could not keep up: a missed bar, not a crash
            print(
                f"[sse_load] {_label(engine, workers)}: the run did not complete: {str(exc)[:200]}",
                flush=True,
            )
            outcomes.append(report(f"sse_load_{name}_completed", 0, "== 1", False, fmt="{:.0f}"))
            continue
        results[name] = figures
        _print(figures)
        ok_delivery = figures["missing"] == 0 and figures["server_dropped"] == 0
        outcomes += [
            report(
                f"sse_load_{name}_webhooks_per_s",
                figures["rate"],
                f">= {0.95 * rate:g} (offered {rate:g})",
                figures["rate"] >= 0.95 * rate,
                fmt="{:.1f}",
            ),
            report(
                f"sse_load_{name}_dropped", figures["incomplete_streams"], "== 0", ok_delivery, fmt="{:.0f}"
            ),
            report(
                f"sse_load_{name}_p99_ms", figures["p99"], f"< {BAR_P99_MS:g}", figures["p99"] < BAR_P99_MS
            ),
            report(
                f"sse_load_{name}_status_p95_ms",
                figures["status_p95"],
                f"< {BAR_STATUS_P95_MS:g}",
                figures["status_p95"] < BAR_STATUS_P95_MS,
            ),
            report(
                f"sse_load_{name}_kib_per_stream",
                figures["kib_per_stream"],
                f"< {BAR_KIB:g}",
                figures["kib_per_stream"] < BAR_KIB,
                fmt="{:.1f}",
            ),
        ]
    if "redis" in results and redis_url is not None:
        small = one_run("redis", few, rate, min(seconds, 15.0), 1, redis_url, count)
        _print(small)
        many, fewer = results["redis"]["commands_per_webhook"], small["commands_per_webhook"]
        growth = many / max(fewer, 1e-9)
        print(
            f"[sse_load] Redis commands per webhook: {fewer:.1f} with {few} streams, {many:.1f} with {streams}",
            flush=True,
        )
        outcomes.append(
            report(
                "sse_load_redis_commands_growth",
                growth,
                f"<= {BAR_COMMANDS_GROWTH:g}x",
                growth <= BAR_COMMANDS_GROWTH,
            )
        )
    return outcomes


def _serve_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("serve", choices=["serve"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", choices=["memory", "redis"], default="memory")
    parser.add_argument("--prefix", default="bench-sse")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    serve(args.port, args.engine, args.prefix, args.redis_url, args.workers)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _serve_main()
    else:
        run()
