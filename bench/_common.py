"""What every benchmark shares: the result line, percentiles, a bench server in a subprocess, and a
small keep-alive HTTP/1.1 client over raw sockets (lighter than httpx, so the load generator is not the
bottleneck)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen(kw_only=True)
class Outcome:
    """One benchmark's verdict: its ratio line values."""

    name: str
    value: float
    bar: str
    ok: bool
    skipped: bool = False


def report(name: str, value: float, bar: str, ok: bool, *, fmt: str = "{:.2f}") -> Outcome:
    """Print the ratio line the smoke test looks for, and return it."""
    verdict = "ok" if ok else "MISSED"
    print(f"ratio {name}: {fmt.format(value)} (bar {bar}) {verdict}", flush=True)
    return Outcome(name=name, value=value, bar=bar, ok=ok)


def skipped(name: str, reason: str) -> Outcome:
    print(f"ratio {name}: skipped: {reason}", flush=True)
    return Outcome(name=name, value=float("nan"), bar="-", ok=True, skipped=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def raise_nofile(want: int) -> int:
    """Raise the soft open-files limit towards ``want`` (up to the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _family(pid: int) -> Iterator[list[str]]:
    """The /proc/<pid>/stat fields (after the command name) of a process and of its child processes."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            yield fields


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its child processes (a server's workers) have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(f[11]) + int(f[12]) for f in _family(pid)) / tick


def machine_ticks() -> tuple[int, int, int]:
    """(steal, idle, total) clock ticks of the whole machine so far (``/proc/stat``); zeros where there is
    none.

    Steal is time the hypervisor gave this virtual machine's cores to someone else: on a shared VM it comes
    in bursts, and during one every process here runs slower than its CPU figures say. Idle (waiting for I/O
    included) is what no process wanted: near zero, every process that is ready to run waits for a core."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(f) for f in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0, 0
    steal = fields[7] if len(fields) > 7 else 0
    idle = sum(fields[3:5])
    return steal, idle, sum(fields[:8])


def steal_share(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """The share of the machine's time stolen between two :func:`machine_ticks` readings (0 to 1)."""
    total = after[2] - before[2]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def idle_share(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """The share of the machine's time idle between two :func:`machine_ticks` readings (0 to 1)."""
    total = after[2] - before[2]
    return (after[1] - before[1]) / total if total > 0 else 0.0


def family_rss_kib(pid: int) -> int:
    """Resident set size of a process and its child processes (a server's workers), in KiB."""
    page = os.sysconf("SC_PAGE_SIZE") // 1024
    return sum(int(f[21]) for f in _family(pid)) * page


@contextlib.contextmanager
def bench_server(kind: str, *args: str, module: str = "bench._server") -> Iterator[tuple[int, int]]:
    """Run ``python -m MODULE KIND --port N ARGS`` on a free loopback port; yields (port, pid)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, kind, "--port", str(port), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server says "ready" once it accepts connections
        if "ready" not in line:
            raise RuntimeError(f"bench server {kind} did not start: {line!r}")
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request_bytes(
    path: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (or none, for 304) from a keep-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


async def fetch(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes(path, {**(headers or {}), "Connection": "close"}, method=method))
        return await read_response(reader)
    finally:
        writer.close()


async def keepalive_latencies(
    port: int, path: str, *, clients: int, seconds: float, pause: float = 0.0
) -> tuple[list[float], int]:
    """``clients`` keep-alive connections requesting ``path`` in a loop (``pause`` seconds between requests)
    for ``seconds``: every latency in ms, and how many answers were not 200."""
    stop = time.perf_counter() + seconds
    payload = request_bytes(path)
    latencies: list[float] = []
    bad = 0

    async def client() -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                writer.write(payload)
                status, _, _ = await read_response(reader)
                latencies.append((time.perf_counter() - started) * 1000)
                bad += status != 200
                if pause:
                    await asyncio.sleep(pause)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, bad


def now() -> float:
    return time.perf_counter()


# --- load generation ----------------------------------------------------------------------------------------


def _load_worker(
    port: int, path: str, headers: dict[str, str], connections: int, seconds: float
) -> tuple[int, int]:
    """One load process: keep-alive connections in a closed loop; (responses, bad statuses)."""

    async def run() -> tuple[int, int]:
        stop = time.perf_counter() + seconds
        payload = request_bytes(path, headers)
        done = bad = 0

        async def one() -> None:
            nonlocal done, bad
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                while time.perf_counter() < stop:
                    writer.write(payload)
                    status, _, _ = await read_response(reader)
                    done += 1
                    bad += status not in (200, 304)
            finally:
                writer.close()

        await asyncio.gather(*(one() for _ in range(connections)))
        return done, bad

    return asyncio.run(run())


def python_load(
    port: int, path: str, headers: dict[str, str], *, processes: int, connections: int, seconds: float
) -> tuple[float, int]:
    """Requests/s from several load processes (the fallback when wrk is not installed); also bad answers."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes) as pool:
        started = time.perf_counter()
        results = pool.starmap(_load_worker, [(port, path, headers, connections, seconds)] * processes)
        elapsed = time.perf_counter() - started
    done = sum(r[0] for r in results)
    return done / max(elapsed, seconds), sum(r[1] for r in results)
