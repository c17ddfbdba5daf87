"""SIGTERM with 500 open event streams, under the demo and under plain ``uvicorn examples.fastapi_app:app``:
the server ends every stream itself with a final ``retry:`` hint and exits in under 3 s, with no traceback and
no ERROR line in its log. Real processes on loopback; the streams are raw sockets (500 are cheap that way)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_demo_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
STREAMS = 500

COMMANDS = {
    "demo": [sys.executable, "-m", "integration_status.cli", "demo", "--port", "{port}"],
    "uvicorn": [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", "{port}"],
}


async def open_stream(port: int, user: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/integrations/events?projectId=demo&user={user} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 200"), head
    first = await asyncio.wait_for(reader.read(65536), 30)  # at least the connected comment
    assert b"connected" in first, first
    return reader, writer


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while chunk := await reader.read(65536):
        out += chunk
    return out


@pytest.mark.parametrize("server", sorted(COMMANDS))
def test_sigterm_with_500_streams_ends_each_with_retry_and_exits_fast(server: str, tmp_path: Path) -> None:
    """Every one of 500 streams ends with a `retry:` line from the server; exit < 3 s; a clean log."""
    port = free_port()
    log = tmp_path / f"{server}.log"
    command = [part.format(port=port) for part in COMMANDS[server]]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{server} did not start:\n{log.read_text()[-3000:]}"
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/integrations/status?projectId=demo", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)

        async def scenario() -> tuple[float, list[bytes]]:
            streams = []
            for batch in range(
                0, STREAMS, 50
            ):  # one viewer per stream: the per-viewer cap is not the subject
                streams += await asyncio.gather(
                    *(open_stream(port, f"u{i}") for i in range(batch, batch + 50))
                )
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            tails = await asyncio.wait_for(asyncio.gather(*(read_to_end(r) for r, _ in streams)), 10)
            for _, writer in streams:
                writer.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, 10)
            return time.monotonic() - began, tails

        took, tails = asyncio.run(scenario())
        text = log.read_text()
        ended_with_retry = sum(1 for tail in tails if b"\nretry: " in tail or tail.startswith(b"retry: "))
        print(
            f"\n{server}: {STREAMS} streams, SIGTERM -> exit in {took:.2f}s (code {proc.returncode}); "
            f"ended with retry: {ended_with_retry}/{STREAMS}; tracebacks: {text.count('Traceback')}; "
            f"ERROR lines: {sum('ERROR' in line for line in text.splitlines())}"
        )
        assert proc.returncode is not None, "still running 10 s after SIGTERM"
        assert took < 3
        assert ended_with_retry == STREAMS
        assert "Traceback" not in text
        assert "ERROR" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
