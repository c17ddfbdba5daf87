"""The examples run: each serves status -> 304 -> an action -> an event-stream snapshot on a real loopback
server (uvicorn for the ASGI ones, werkzeug's threaded server for Flask), plus the status bar page and the
Prometheus metrics at /metrics."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest
import uvicorn
from werkzeug.serving import make_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PREFIX = "/api/integrations"
#: The request-duration histogram's count for the status endpoint, as /metrics shows it.
STATUS_DURATION = 'integration_status_request_duration_count{endpoint="status",provider="all"}'


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path, as a fresh module (a fresh service) each time."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def first_data_frame(lines: Iterator[str]) -> dict[str, str]:
    frame: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in frame:
                return frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            frame[name] = value
    raise AssertionError("the stream ended without an event")


def test_examples_have_no_side_effects_on_import() -> None:
    """Importing an example builds `app` but serves nothing (servers start only under __main__)."""
    for name in ("starlette_app", "fastapi_app", "flask_app"):
        module = load(name)
        assert module.app is not None
        assert not module.service.running


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["starlette_app", "fastapi_app"])
async def test_asgi_example_serves_the_api(name: str) -> None:
    """Under uvicorn: 200 then 304, an action, a snapshot on the event stream, openapi paths, the page and
    /metrics (the status request's duration in it)."""
    module = load(name)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections queue until uvicorn has run the lifespan and serves
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(module.app, lifespan="on", log_level="warning"))
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                base = f"http://127.0.0.1:{port}"
                async with httpx.AsyncClient(base_url=base, headers={"X-Role": "owner"}) as client:
                    await exercise_async(client)
            finally:
                server.should_exit = True
    sock.close()
    assert not module.service.running


async def exercise_async(client: httpx.AsyncClient) -> None:
    before = await client.get("/metrics")
    assert before.status_code == 200
    assert STATUS_DURATION not in before.text
    status = await client.get(f"{PREFIX}/status", params={"projectId": "demo"})
    assert status.status_code == 200
    assert len(status.json()["items"]) == 4
    scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    assert f"{STATUS_DURATION} 1.0" in scrape.text
    again = await client.get(
        f"{PREFIX}/status", params={"projectId": "demo"}, headers={"If-None-Match": status.headers["etag"]}
    )
    assert again.status_code == 304
    action = await client.post(
        f"{PREFIX}/actions",
        json={"projectId": "demo", "provider": "github", "action": "sync"},
        headers={"Idempotency-Key": "example-1"},
    )
    assert action.status_code == 200
    assert action.json()["success"] is True
    async with client.stream("GET", f"{PREFIX}/events", params={"projectId": "demo"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        frame: dict[str, str] = {}
        async for line in lines:
            if line == "" and "data" in frame:
                break
            if line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                frame[key] = value
    assert frame["event"] == "status:update"
    assert json.loads(frame["data"])["projectId"] == "demo"
    document = await client.get(f"{PREFIX}/openapi.json")
    assert f"{PREFIX}/status" in document.json()["paths"]
    # A wrong method gets the API route's own 405, not the status bar page's (no catch-all mount in the way).
    wrong = await client.get(f"{PREFIX}/actions")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    page = await client.get("/", follow_redirects=True)
    assert page.status_code == 200
    assert "<integration-status-bar" in page.text


def test_flask_example_serves_the_api() -> None:
    """Under werkzeug's threaded server: 200 then 304, an action, a snapshot, openapi paths, the page and
    /metrics (the status request's duration in it)."""
    module = load("flask_app")
    server = make_server("127.0.0.1", 0, module.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{server.server_port}", headers={"X-Role": "owner"}
        ) as client:
            assert STATUS_DURATION not in client.get("/metrics").text
            status = client.get(f"{PREFIX}/status", params={"projectId": "demo"})
            assert status.status_code == 200
            scrape = client.get("/metrics")
            assert scrape.status_code == 200
            assert f"{STATUS_DURATION} 1.0" in scrape.text
            again = client.get(
                f"{PREFIX}/status",
                params={"projectId": "demo"},
                headers={"If-None-Match": status.headers["etag"]},
            )
            assert again.status_code == 304
            action = client.post(
                f"{PREFIX}/actions",
                json={"projectId": "demo", "provider": "github", "action": "sync"},
                headers={"Idempotency-Key": "example-1"},
            )
            assert action.status_code == 200
            with client.stream("GET", f"{PREFIX}/events", params={"projectId": "demo"}) as stream:
                frame = first_data_frame(stream.iter_lines())
            assert frame["event"] == "status:update"
            assert f"{PREFIX}/status" in client.get(f"{PREFIX}/openapi.json").json()["paths"]
            page = client.get("/", follow_redirects=True)
            assert page.status_code == 200
            assert "<integration-status-bar" in page.text
    finally:
        server.shutdown()
        server.server_close()
        module.integration_status_ext.close()
    assert not module.service.running
