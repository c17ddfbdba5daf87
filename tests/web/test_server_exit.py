"""Event streams end themselves when the ASGI server starts to stop: uvicorn's exit flag is watched (found
through its SIGTERM handler), and the hub's last frame is a `retry:` hint."""

from __future__ import annotations

import signal

import anyio
import httpx
import pytest

from integration_status.service.streams import SHUTDOWN_RETRY_MS, shutdown_frame
from integration_status.web.starlette import create_app, running_server, watch_server_exit
from tests.e2e.conftest import serve
from tests.web.mounts import make_service

pytestmark = pytest.mark.anyio


class FakeServer:
    should_exit = False


def test_the_shutdown_frame_is_a_comment_and_a_spread_retry_hint() -> None:
    """`: server stopping` then `retry: N` with N in 1-3 s, so clients do not all come back at once."""
    frame = shutdown_frame()
    comment, retry = frame.split(b"\n\n")[:2]
    assert comment == b": server stopping"
    assert SHUTDOWN_RETRY_MS[0] <= int(retry.removeprefix(b"retry: ")) <= SHUTDOWN_RETRY_MS[1]


def test_no_server_is_found_where_uvicorn_does_not_handle_sigterm() -> None:
    """Outside uvicorn (here: pytest's own SIGTERM handling) there is no exit flag to watch."""
    if type(getattr(signal.getsignal(signal.SIGTERM), "__self__", None)).__module__.startswith("uvicorn"):
        pytest.skip("running under uvicorn")
    assert running_server() is None


async def test_open_streams_end_with_retry_once_the_server_is_stopping() -> None:
    """Two open streams: when the server's exit flag goes up, each gets the retry hint and ends; a stream
    opened afterwards ends at once with it too."""
    service = make_service()
    server = FakeServer()
    async with serve(create_app(service)) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        watch_server_exit(service, server)
        url = "/api/integrations/events?projectId=p"
        headers = {"X-Role": "owner"}
        tails: list[bytes] = []
        opened: list[None] = []
        both_open = anyio.Event()

        async def stream() -> None:
            async with client.stream("GET", url, headers=headers) as response:
                body = b""
                async for chunk in response.aiter_bytes():
                    if not body:  # the first chunk: the server counts this stream
                        opened.append(None)
                        if len(opened) == 2:
                            both_open.set()
                    body += chunk
                tails.append(body)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream)
                tg.start_soon(stream)
                await both_open.wait()
                assert len(service.streams) == 2
                server.should_exit = True
            late = await client.get(url, headers=headers)
    assert len(tails) == 2
    assert all(b"\nretry: " in tail for tail in tails)
    assert late.content.startswith(b": connected")
    assert b"\nretry: " in late.content
