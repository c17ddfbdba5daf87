"""Workers that start while Redis does not answer (``uvicorn --workers 2`` on a Redis that is away: a restart,
a crash, a recycle or a deploy during an outage) start anyway: status answers from what they have, actions
fail closed with 503, and once Redis is back the same workers serve it, with no restart. A server whose
workers failed their start instead would be stopped whole by its supervisor."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.backends.conftest import RedisProxy
from tests.e2e.conftest import stop_process
from tests.e2e.test_demo_redis import free_port, wait_ready
from tests.services import REDIS_URL, require_redis

ROOT = Path(__file__).resolve().parents[2]
API = "/api/integrations"
DEPLOY = {"projectId": "demo", "provider": "vercel", "action": "deploy"}


def test_workers_started_while_redis_is_away_serve_and_recover(tmp_path: Path) -> None:
    import redis

    url = require_redis(REDIS_URL)
    prefix = f"test-outage-{uuid.uuid4().hex[:10]}"
    proxy = RedisProxy()
    proxy.cut()  # nothing listens on the engine's port: Redis is away
    port = free_port()
    log = tmp_path / "uvicorn.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "INTEGRATION_STATUS_REDIS_URL": proxy.url,
        "INTEGRATION_STATUS_REDIS_PREFIX": prefix,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.e2e.outage_app:app", "--workers", "2", "--port", str(port),
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, log)
        with httpx.Client(base_url=base + API, timeout=10) as client:
            # Several connections: the kernel spreads them over both workers.
            for _ in range(8):
                with httpx.Client(base_url=base + API, timeout=10) as fresh:
                    status = fresh.get("/status", params={"projectId": "demo"})
                    assert status.status_code == 200
                    assert {item["key"] for item in status.json()["items"]} == {
                        "github", "vercel", "sanity", "supabase"
                    }  # fmt: skip
            refused = client.post("/actions", json=DEPLOY, headers={"Idempotency-Key": "k-during"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "unknown"
            proxy.restore()  # Redis is back, on the same address
            done = client.post("/actions", json=DEPLOY, headers={"Idempotency-Key": "k-after"})
            assert done.status_code in (200, 202), done.text
            assert done.json()["success"] is True
        assert proc.poll() is None, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()
    finally:
        stop_process(proc)
        proxy.cut()
        with redis.Redis.from_url(url) as raw:
            keys = list(raw.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                raw.delete(*keys)
