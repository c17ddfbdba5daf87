"""Benchmark 1: status requests/s on a warm cache against a bare Starlette endpoint answering the same bytes,
both on one uvicorn worker of the same server process; and the 304 path against a bare 304.

Load comes from wrk when it is installed, else from several Python processes over keep-alive raw sockets.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
from collections.abc import Callable

from bench._common import Outcome, bench_server, fetch, python_load, report
from bench._server import STATUS_PATH, server_options

BAR = 0.7


def _wrk(
    port: int, path: str, headers: dict[str, str], seconds: float, connections: int
) -> tuple[float, int]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, int(bad.group(1)) if bad else 0


def measure(port: int, path: str, headers: dict[str, str], seconds: float, tool: str) -> float:
    if tool == "wrk":
        rps, bad = _wrk(port, path, headers, seconds, connections=64)
    else:
        rps, bad = python_load(port, path, headers, processes=2, connections=16, seconds=seconds)
    if bad:
        raise RuntimeError(f"{bad} unexpected answers from {path}")
    return rps


def _measure_ours(
    port: int, path: str, extra: dict[str, str], seconds: float, tool: str, current_etag: Callable[[], str]
) -> float:
    """Our endpoint; for the 304 case with the ETag of this moment. The demo world's relative times ("Last
    push 2m ago") move the envelope, and with it the ETag, every minute or so: a tag taken at the start
    would soon make every request a 200 with a body. A round during which the tag moved is measured again."""
    if "If-None-Match" not in extra:
        return measure(port, path, extra, seconds, tool)
    for _ in range(3):
        etag = current_etag()
        rps = measure(port, path, {**extra, "If-None-Match": etag}, seconds, tool)
        if current_etag() == etag:
            return rps
        print("[throughput] the ETag moved during the round: measuring it again")
    return rps


def run(smoke: bool = False) -> list[Outcome]:
    seconds, rounds = (1.0, 1) if smoke else (8.0, 3)
    tool = "wrk" if shutil.which("wrk") else "python"
    options = server_options()
    print(f"[throughput] one uvicorn worker, loop={options['loop']} http={options['http']}, load: {tool}")
    with bench_server("throughput") as (port, _pid):

        def current_etag() -> str:
            status, headers, _ = asyncio.run(fetch(port, STATUS_PATH))
            assert status == 200
            return headers["etag"]

        etag = current_etag()
        cases = {
            "200": (STATUS_PATH, "/bare", {}),
            "304": (STATUS_PATH, "/bare304", {"If-None-Match": etag}),
        }
        outcomes = []
        for case, (ours, bare, extra) in cases.items():
            measure(port, ours, extra, 1.0, tool)  # warm-up: JIT-free, but caches and pools fill
            mine, theirs = [], []
            for _ in range(rounds):  # interleaved, so drift on the machine hits both alike
                theirs.append(measure(port, bare, extra, seconds, tool))
                mine.append(_measure_ours(port, ours, extra, seconds, tool, current_etag))
            a, b = statistics.median(mine), statistics.median(theirs)
            print(f"[throughput] {case}: status {a:,.0f} req/s, bare {b:,.0f} req/s")
            outcomes.append(report(f"throughput_{case}", a / b, f">= {BAR}", a / b >= BAR))
        return outcomes


if __name__ == "__main__":
    run()
