"""Two demo processes (``integration-status demo --redis URL --prefix P --port N``) on one Redis act as one
service: idempotent actions replay across them, and a deploy started on one streams its events from the other.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from integration_status.cli import build_parser
from tests.services import REDIS_URL, require_redis

ROOT = Path(__file__).resolve().parents[2]
API = "/api/integrations"
DEPLOY = {"projectId": "demo", "provider": "vercel", "action": "deploy"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    """Poll the status endpoint until it answers (at most 20 s); fail with the process log otherwise."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"demo exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}{API}/status", params={"projectId": "demo"}, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"demo at {base} did not start within 20 s:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """Two demo processes sharing Redis and a unique prefix: ``(base_a, base_b, prefix)``; killed and their
    keys deleted afterwards."""
    import redis

    url = require_redis(REDIS_URL)
    prefix = f"test-demo-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = tmp_path_factory.mktemp("demo") / f"{name}.log"
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "integration_status.cli", "demo", "--redis", url,
                         "--prefix", prefix, "--port", str(port)],
                        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                    )
                )  # fmt: skip
            bases.append(f"http://127.0.0.1:{port}")
            wait_ready(procs[-1], bases[-1], log)
        yield bases[0], bases[1], prefix
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)


def test_demo_prefix_comes_from_the_flag_or_the_environment() -> None:
    """demo --prefix defaults to INTEGRATION_STATUS_REDIS_PREFIX, else "integration-status"; the flag wins."""
    assert build_parser({}).parse_args(["demo"]).prefix == "integration-status"
    env = {"INTEGRATION_STATUS_REDIS_PREFIX": "from-env"}
    assert build_parser(env).parse_args(["demo"]).prefix == "from-env"
    assert build_parser(env).parse_args(["demo", "--prefix", "flag"]).prefix == "flag"


def test_action_on_one_demo_replays_on_the_other(demos: tuple[str, str, str]) -> None:
    """An action with an Idempotency-Key on demo A answers as a replay on demo B, under the given prefix."""
    import redis

    base_a, base_b, prefix = demos
    headers = {"Idempotency-Key": f"replay-{uuid.uuid4().hex}", "X-User": "replayer"}
    first = httpx.post(f"{base_a}{API}/actions", json=DEPLOY, headers=headers, timeout=10)
    again = httpx.post(f"{base_b}{API}/actions", json=DEPLOY, headers=headers, timeout=10)
    assert (first.status_code, first.headers.get("idempotent-replayed")) == (202, None)
    assert (again.status_code, again.headers.get("idempotent-replayed")) == (202, "true")
    assert again.json() == first.json()
    with redis.Redis.from_url(REDIS_URL) as client:
        assert list(client.scan_iter(match=f"{prefix}:idem:*:done"))


@pytest.mark.anyio
async def test_deploy_on_one_demo_streams_from_the_other(demos: tuple[str, str, str]) -> None:
    """A deploy started on demo A shows deploy:started then deploy:finished on demo B's event stream."""
    base_a, base_b, _ = demos
    seen: list[tuple[str, str]] = []
    timeout = httpx.Timeout(10.0, read=20.0)
    with anyio.fail_after(20):  # the demo deploy takes 4 s
        async with (
            httpx.AsyncClient(base_url=base_a + API, timeout=timeout) as ca,
            httpx.AsyncClient(base_url=base_b + API, timeout=timeout) as cb,
            aconnect_sse(cb, "GET", "/events", params={"projectId": "demo"}) as source,
        ):
            events = source.aiter_sse()
            async for event in events:  # the connect snapshot: B is subscribed from here on
                if event.event == "status:update":
                    break
            headers = {"Idempotency-Key": f"deploy-{uuid.uuid4().hex}", "X-User": "deployer"}
            started = await ca.post("/actions", json=DEPLOY, headers=headers)
            assert started.status_code == 202
            operation = started.json()["operationId"]
            async for event in events:
                # Only this deploy's events: another test's deploy may still be finishing.
                if event.event.startswith("deploy:") and json.loads(event.data)["operationId"] == operation:
                    seen.append((event.event, operation))
                    if event.event == "deploy:finished":
                        break
    assert seen == [("deploy:started", operation), ("deploy:finished", operation)]
