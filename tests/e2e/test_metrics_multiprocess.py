"""Prometheus multiprocess mode under two real uvicorn workers (``--workers 2``) on loopback: whichever worker
answers the scrape, the counters are the sum over both."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_demo_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 1000


def scraped(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_two_uvicorn_workers_scrape_the_sum_of_both(tmp_path: Path) -> None:
    """1,000 status requests spread over two workers: the scraped request counter says 1,000."""
    pytest.importorskip("prometheus_client")
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    port = free_port()
    log = tmp_path / "uvicorn.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--workers", "2", "--port", str(port),
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while len({p.name.split("_")[-1] for p in metrics_dir.glob("*.db")}) < 2 or not _answers(base):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"workers did not start:\n{log.read_text()[-3000:]}"
            # A worker's files appear with its first metric; warm-up requests land on either worker.
            time.sleep(0.1)
        before = _status_count(base)
        codes: Counter[int] = Counter()
        # 40 connections of 25 requests each: the kernel spreads accepted connections over both workers.
        for _ in range(40):
            with httpx.Client(base_url=base, timeout=10) as client:
                for _ in range(REQUESTS // 40):
                    response = client.get("/api/integrations/status", params={"projectId": "demo"})
                    codes[response.status_code] += 1
        per_worker = _per_worker_status_counts(metrics_dir, tmp_path)
        counts = [
            _status_count(base) - before for _ in range(6)
        ]  # several scrapes, answered by either worker
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    print(f"\n2 uvicorn workers, {REQUESTS} status requests {dict(codes)}: scraped counter {counts}; "
          f"per worker {sorted(per_worker.values())}")  # fmt: skip
    assert codes == {200: REQUESTS}
    assert len(per_worker) == 2
    assert all(n > 0 for n in per_worker.values())  # both workers served some
    assert counts == [REQUESTS] * 6
    assert "Traceback" not in log.read_text()


def _answers(base: str) -> bool:
    try:
        for _ in range(4):
            with httpx.Client(base_url=base, timeout=2) as client:
                client.get("/api/integrations/status", params={"projectId": "demo"})
    except httpx.TransportError:
        return False
    return True


def _status_count(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return scraped(text, "integration_status_responses_total", endpoint="status")


def _per_worker_status_counts(metrics_dir: Path, tmp_path: Path) -> dict[str, float]:
    """Each worker's own status count, read from its counter file alone."""
    import shutil

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    out: dict[str, float] = {}
    for db in metrics_dir.glob("counter_*.db"):
        alone = tmp_path / f"alone-{db.stem}"
        alone.mkdir()
        shutil.copy(db, alone / db.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        text = generate_latest(registry).decode()
        out[db.stem] = scraped(text, "integration_status_responses_total", endpoint="status")
    return out
