"""A worker SIGKILLed at each step of a deploy, then retries with the same Idempotency-Key on another worker:
exactly one deployment reaches the (fake, loopback) Vercel and every deploy:started gets its deploy:finished;
with the idempotency records in Redis and in PostgreSQL. Real processes: ``uvicorn tests.e2e.crash_app:app``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.test_demo_redis import free_port
from tests.services import POSTGRES_DSN, REDIS_URL, require_postgres, require_redis

ROOT = Path(__file__).resolve().parents[2]
API = "/api/integrations"
PROJECT = "proj_crash"
DEPLOY = {"projectId": PROJECT, "provider": "vercel", "action": "deploy"}
STEPS = ("before_call", "after_call", "after_store", "after_answer")
READY_AFTER = 0.8  # seconds a fake deployment builds


class FakeVercel:
    """The few Vercel endpoints the adapter uses; counts the deployments created."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deployments: dict[str, float] = {}  # id -> created (epoch s)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, body: Any, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path.startswith("/v9/projects/"):
                    prod = {
                        "id": "dpl_prod",
                        "readyState": "READY",
                        "url": "shop.vercel.app",
                        "target": "production",
                    }
                    self.answer({"id": "prj_1", "name": "shop", "targets": {"production": prod}})
                elif url.path == "/v6/deployments":
                    since = int(parse_qs(url.query).get("since", ["0"])[0]) / 1000
                    with fake.lock:
                        items = sorted(
                            ((c, d) for d, c in fake.deployments.items() if c >= since), reverse=True
                        )
                    rows = [{"uid": d, "created": int(c * 1000)} for c, d in items]
                    self.answer({"deployments": rows, "pagination": {"next": None}})
                elif url.path.startswith("/v13/deployments/"):
                    dep = url.path.rsplit("/", 1)[1]
                    with fake.lock:
                        created = fake.deployments.get(dep)
                    if created is None:
                        self.answer({"error": {"code": "not_found"}}, 404)
                        return
                    state = "READY" if time.time() >= created + READY_AFTER else "BUILDING"
                    self.answer({"id": dep, "readyState": state, "url": f"{dep}.vercel.app"})
                else:
                    self.answer({"error": {"code": "not_found"}}, 404)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with fake.lock:
                    dep = f"dpl_{len(fake.deployments) + 1}"
                    fake.deployments[dep] = time.time()
                self.answer({"id": dep, "readyState": "QUEUED"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def created(self) -> int:
        with self.lock:
            return len(self.deployments)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def vercel() -> Iterator[FakeVercel]:
    fake = FakeVercel()
    yield fake
    fake.close()


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "tests.e2e.crash_app:app", "--port", str(self.port),
                 "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                httpx.get(f"{self.base}{API}/openapi.json", timeout=1)
            except httpx.TransportError:
                time.sleep(0.05)
            else:
                return
        pytest.fail(f"worker did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def events(prefix: str) -> list[dict[str, Any]]:
    import redis

    with redis.Redis.from_url(REDIS_URL, decode_responses=True) as client:
        return [json.loads(fields["data"]) for _, fields in client.xrange(f"{prefix}:events:{{{PROJECT}}}")]


def deploy_events(prefix: str) -> tuple[list[str], list[str]]:
    seen = events(prefix)
    started = [e["operationId"] for e in seen if e.get("type") == "deploy:started"]
    finished = [e["operationId"] for e in seen if e.get("type") == "deploy:finished"]
    return started, finished


@pytest.fixture(params=["redis", "postgres"])
def store_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment selecting where idempotency records live; a unique prefix (and schema), cleaned up."""
    import redis

    require_redis(REDIS_URL)
    prefix = f"test-crash-{uuid.uuid4().hex[:10]}"
    env = {"CRASH_REDIS_URL": REDIS_URL, "CRASH_PREFIX": prefix}
    if request.param == "postgres":
        require_postgres()
        env.update(CRASH_PG_DSN=POSTGRES_DSN, CRASH_PG_SCHEMA=f"test_{uuid.uuid4().hex[:10]}")
    yield env
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    if "CRASH_PG_SCHEMA" in env:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{env["CRASH_PG_SCHEMA"]}" CASCADE')


@contextlib.contextmanager
def workers(
    step: str, store_env: dict[str, str], vercel: FakeVercel, tmp_path: Path
) -> Iterator[tuple[Worker, Worker]]:
    """Worker A (killed at ``step``) and worker B, started and ready; both stopped afterwards."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CRASH_VERCEL_URL": vercel.url,
        "CRASH_LEASE": "2",
        **store_env,
    }
    a = Worker({**env, "CRASH_AT": step}, tmp_path / "a.log")
    b = Worker(env, tmp_path / "b.log")
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("step", STEPS)
def test_a_worker_killed_at_any_step_of_a_deploy_deploys_once_and_finishes(
    step: str, store_env: dict[str, str], vercel: FakeVercel, tmp_path: Path
) -> None:
    """SIGKILL at `step` on worker A; retries with the same key on worker B: one deployment at Vercel, the
    answer is the deploy's 202, and every deploy:started has its deploy:finished."""
    with workers(step, store_env, vercel, tmp_path) as (a, b):
        headers = {"Idempotency-Key": f"crash-{step}", "X-User": "u1"}
        try:
            first = httpx.post(f"{a.base}{API}/actions", json=DEPLOY, headers=headers, timeout=10)
            assert (step, first.status_code) == ("after_answer", 202)
        except httpx.TransportError:
            assert step != "after_answer"
        assert a.proc.wait(timeout=10) == -9
        started_at = time.monotonic()
        answers: list[int] = []
        final: httpx.Response | None = None
        while time.monotonic() - started_at < 20:  # bounded: the lease is 2 s, a deployment builds in 0.8 s
            final = httpx.post(f"{b.base}{API}/actions", json=DEPLOY, headers=headers, timeout=10)
            answers.append(final.status_code)
            started, finished = deploy_events(store_env["CRASH_PREFIX"])
            if final.status_code != 409 and finished and set(started) <= set(finished):
                break
            time.sleep(0.25)
        recovered = time.monotonic() - started_at
        started, finished = deploy_events(store_env["CRASH_PREFIX"])
        print(
            f"\n{step} ({'postgres' if 'CRASH_PG_SCHEMA' in store_env else 'redis'}): deployments={vercel.created} "
            f"started={len(started)} finished={len(finished)} retries={len(answers)} "
            f"answers={sorted(set(answers))} recovered_in={recovered:.2f}s"
        )
        assert final is not None
        assert final.status_code == 202, final.text
        assert vercel.created == 1
        assert finished, "no deploy:finished"
        assert set(started) <= set(finished)
        assert len(finished) == 1
        assert set(finished) == {final.json()["operationId"]}
        assert not re.search(r"Traceback|ERROR", b.log.read_text()), b.log.read_text()[-3000:]


@pytest.mark.parametrize("step", ["before_call", "after_answer"])
def test_without_a_retry_another_worker_finishes_what_the_dead_one_started(
    step: str, store_env: dict[str, str], vercel: FakeVercel, tmp_path: Path
) -> None:
    """No client retries: the other worker's sweep finds the dead worker's lease and finishes the deploy
    (one deployment, deploy:finished for every deploy:started); a late retry replays the stored 202."""
    with workers(step, store_env, vercel, tmp_path) as (a, b):
        headers = {"Idempotency-Key": f"sweep-{step}", "X-User": "u1"}
        with contextlib.suppress(httpx.TransportError):
            httpx.post(f"{a.base}{API}/actions", json=DEPLOY, headers=headers, timeout=10)
        assert a.proc.wait(timeout=10) == -9
        began = time.monotonic()
        while time.monotonic() - began < 20:  # bounded: lease 2 s, a sweep every 1 s, a build of 0.8 s
            started, finished = deploy_events(store_env["CRASH_PREFIX"])
            if finished and set(started) <= set(finished):
                break
            time.sleep(0.2)
        took = time.monotonic() - began
        started, finished = deploy_events(store_env["CRASH_PREFIX"])
        late = httpx.post(f"{b.base}{API}/actions", json=DEPLOY, headers=headers, timeout=10)
        print(
            f"\n{step}, no retry ({'postgres' if 'CRASH_PG_SCHEMA' in store_env else 'redis'}): "
            f"deployments={vercel.created} started={len(started)} finished={len(finished)} in {took:.2f}s; "
            f"late retry {late.status_code} replayed={late.headers.get('idempotent-replayed')}"
        )
        assert vercel.created == 1
        assert len(finished) == 1
        assert set(started) <= set(finished)
        assert (late.status_code, late.headers.get("idempotent-replayed")) == (202, "true")
        assert set(finished) == {late.json()["operationId"]}
        assert not re.search(r"Traceback|ERROR", b.log.read_text()), b.log.read_text()[-3000:]
