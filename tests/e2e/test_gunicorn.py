"""The Flask example under a real gunicorn (gthread, 4 threads) on loopback: 20 event streams from one viewer
never freeze it. Streams over the worker's cap get a `retry:` frame at once; status keeps answering fast."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.e2e.conftest import stop_process
from tests.e2e.test_demo_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
API = "/api/integrations"
STREAMS = 20

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """``gunicorn -k gthread --threads 4 examples.flask_app:app`` on a free loopback port (graceful timeout
    10 s: longer than any test here waits)."""
    pytest.importorskip("gunicorn")
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "4", "-w", "1",
             "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", "examples.flask_app:app"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"gunicorn did not start:\n{log.read_text()[-3000:]}"
            try:
                if (
                    httpx.get(f"{base}{API}/status", params={"projectId": "demo"}, timeout=2).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base, log, proc
    finally:
        stop_process(proc)


async def test_twenty_streams_on_four_threads_leave_status_fast_and_refuse_at_once(
    gunicorn: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    """20 streams from one viewer: those over the cap get `retry:` within 1 s, the rest stream, and status
    requests meanwhile answer with p95 < 100 ms."""
    base, log, _ = gunicorn
    refused: list[float] = []
    streaming: list[float] = []
    status_ms: list[float] = []
    limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=STREAMS + 10)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:

        async def stream() -> None:
            began = time.perf_counter()
            async with client.stream("GET", f"{API}/events", params={"projectId": "demo"}) as response:
                assert response.status_code == 200
                first = b""
                chunks = response.aiter_bytes()
                async for chunk in chunks:
                    first += chunk
                    if b"\n\n" in first:
                        break
                took = time.perf_counter() - began
                if b"retry:" in first:
                    refused.append(took)
                    assert b"event: overloaded" in first
                else:
                    assert first.startswith(b":")  # the connected comment of a served stream
                    streaming.append(took)
                    with anyio.move_on_after(4):  # held open while status is measured
                        async for _ in chunks:
                            pass

        async def statuses() -> None:
            await anyio.sleep(0.3)  # the streams are open
            for _ in range(60):
                began = time.perf_counter()
                response = await client.get(f"{API}/status", params={"projectId": "demo"})
                status_ms.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200
                await anyio.sleep(0.02)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(STREAMS):
                    tg.start_soon(stream)
                tg.start_soon(statuses)
    p95 = statistics.quantiles(status_ms, n=20)[-1]
    print(
        f"\ngunicorn gthread 4 threads, {STREAMS} streams: served={len(streaming)} refused={len(refused)} "
        f"slowest refusal={max(refused) * 1000:.0f} ms; status p50={statistics.median(status_ms):.1f} ms "
        f"p95={p95:.1f} ms max={max(status_ms):.1f} ms over {len(status_ms)} requests"
    )
    assert len(streaming) + len(refused) == STREAMS
    assert len(streaming) == 2  # half of the four threads
    assert max(refused) < 1.0
    assert p95 < 100
    assert "Traceback" not in log.read_text()


async def test_sigterm_ends_open_streams_with_retry_and_the_worker_exits_fast(
    gunicorn: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    """Two open streams and SIGTERM: gunicorn's worker does not wait out its graceful timeout (10 s); each
    stream ends with the `retry:` hint and gunicorn exits within 3 s."""
    base, log, proc = gunicorn
    tails: list[bytes] = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def stream(opened: anyio.Event) -> None:
            async with client.stream("GET", f"{API}/events", params={"projectId": "demo"}) as response:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if b"connected" in body:
                        opened.set()
                tails.append(body)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(2):
                    opened = anyio.Event()
                    tg.start_soon(stream, opened)
                    await opened.wait()
                began = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
    # The client's idle keep-alive connections are closed here: gunicorn would wait --keep-alive (2 s) for them.
    await anyio.to_thread.run_sync(proc.wait, 10)
    took = time.perf_counter() - began
    print(f"\ngunicorn gthread, 2 streams, SIGTERM -> exit in {took:.2f}s (code {proc.returncode})")
    assert all(b"\nretry: " in tail for tail in tails), tails
    assert took < 3
    assert "Traceback" not in log.read_text()
