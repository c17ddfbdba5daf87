"""Metrics: the Prometheus families after driving a service, the no-op default, and import isolation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from integration_status.core.rolling import RollingCounts
from integration_status.exceptions import ProviderTimeout, ProviderUnavailable
from integration_status.observability import HealthRecorder, NoMetrics, PrometheusMetrics, combine
from integration_status.protocols import (
    ActionContext,
    ActionOutcome,
    ActionRequest,
    ProviderConnection,
    RequestInfo,
    Viewer,
)
from integration_status.service import Settings, StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections, snapshot
from integration_status.web.starlette import create_app

STATUS = "/api/integrations/status"


async def owner(request: RequestInfo) -> Viewer | None:
    return Viewer(user_id="u1", roles={"owner"})


async def deploy(request: ActionRequest, connection: ProviderConnection, ctx: ActionContext) -> ActionOutcome:
    return ActionOutcome(operation_id=ctx.operation_id, changes_state=False)


async def deploy_times_out(
    request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
) -> ActionOutcome:
    raise ProviderTimeout("vercel deploy timed out", provider="vercel")


def samples(metrics: PrometheusMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    body, _ = metrics.render()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return next(v for ls, v in found[name] if all(ls.get(k) == x for k, x in labels.items()))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def driven(
    clock: FakeClock,
) -> AsyncIterator[tuple[StatusService, PrometheusMetrics, httpx.AsyncClient]]:
    metrics = PrometheusMetrics(clock=clock)
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", "github", "vercel"),
        adapters=[
            ScriptedAdapter("github", snapshot("github")),
            ScriptedAdapter("vercel", snapshot("vercel"), handlers={"deploy": deploy}),
        ],
        authenticator=owner,
        clock=clock,
        metrics=metrics,
        settings=Settings(rate_limit=100),
    )
    async with service:
        transport = httpx.ASGITransport(app=create_app(service, lifespan=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield service, metrics, client


@pytest.mark.anyio
async def test_requests_fetches_cache_and_etags_are_counted(
    driven: tuple[StatusService, PrometheusMetrics, httpx.AsyncClient],
) -> None:
    """A cold then warm status request and a 304 show up as fetch and request durations, cache hits/misses
    and 200/304 response counts."""
    _, metrics, client = driven
    first = await client.get(STATUS, params={"projectId": "p"})
    again = await client.get(
        STATUS, params={"projectId": "p"}, headers={"If-None-Match": first.headers["etag"]}
    )
    assert (first.status_code, again.status_code) == (200, 304)
    found = samples(metrics)
    assert value(found, "integration_status_request_duration_count", endpoint="status", provider="all") == 2
    assert value(found, "integration_status_request_duration_count", endpoint="fetch", provider="github") == 1
    assert value(found, "integration_status_responses_total", endpoint="status", code="200") == 1
    assert value(found, "integration_status_responses_total", endpoint="status", code="304") == 1
    assert value(found, "integration_adapter_calls_total", provider="vercel", outcome="ok") == 1
    assert value(found, "integration_cache_events_total", event="miss") == 4  # cold: all four providers
    assert value(found, "integration_cache_events_total", event="hit") == 4  # warm: served with no call
    assert value(found, "integration_adapter_timeout_rate", provider="github") == 0.0
    assert {ls["provider"] for ls, _ in found["integration_adapter_calls_total"]} == {"github", "vercel"}


@pytest.mark.anyio
async def test_actions_are_counted_with_a_success_rate(
    driven: tuple[StatusService, PrometheusMetrics, httpx.AsyncClient],
) -> None:
    """Two successful deploys and one timeout give action counters by outcome and a 2/3 success rate."""
    service, metrics, client = driven
    body = {"projectId": "p", "provider": "vercel", "action": "deploy"}
    for key in ("k1", "k2"):
        r = await client.post("/api/integrations/actions", json=body, headers={"Idempotency-Key": key})
        assert r.status_code == 200
    service.actions._overrides[("vercel", "deploy")] = deploy_times_out
    r = await client.post("/api/integrations/actions", json=body, headers={"Idempotency-Key": "k3"})
    assert r.status_code == 504
    found = samples(metrics)
    assert value(found, "integration_action_total", provider="vercel", action="deploy", outcome="ok") == 2
    assert (
        value(found, "integration_action_total", provider="vercel", action="deploy", outcome="timeout") == 1
    )
    assert value(
        found, "integration_action_success_rate", provider="vercel", action="deploy"
    ) == pytest.approx(2 / 3)
    assert value(found, "integration_status_responses_total", endpoint="actions", code="504") == 1


@pytest.mark.anyio
async def test_timeouts_open_the_breaker_and_show_per_provider(clock: FakeClock) -> None:
    """Three failing fetches open github's breaker: the timeout rate, the error counter and the breaker gauge
    (2 = open) are labelled by provider only, never by project."""
    metrics = PrometheusMetrics(clock=clock)
    adapter = ScriptedAdapter("github", ProviderTimeout("slow", provider="github"))
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", "github"),
        adapters=[adapter],
        clock=clock,
        metrics=metrics,
    )
    async with service:
        connections = await service._connections("p")
        assert connections is not None
        for _ in range(3):
            await service.aggregator.collect("p", connections)
            await anyio.wait_all_tasks_blocked()  # a refresh it started in the background has run
        adapter.then(ProviderUnavailable("down", provider="github"))
        clock.advance(31)  # open_for elapsed: the next call is a half-open trial, and it fails
        await service.aggregator.collect("p", connections)
        await anyio.wait_all_tasks_blocked()
    found = samples(metrics)
    assert value(found, "integration_adapter_calls_total", provider="github", outcome="timeout") == 3
    assert value(found, "integration_adapter_calls_total", provider="github", outcome="error") == 1
    assert value(found, "integration_adapter_timeout_rate", provider="github") == 0.75
    assert value(found, "integration_breaker_state", provider="github") == 2
    assert value(found, "integration_breakers", provider="github", state="open") == 1
    assert value(found, "integration_breakers", provider="github", state="half_open") == 0
    assert all(set(ls) == {"provider"} for ls, _ in found["integration_breaker_state"])


@pytest.mark.anyio
async def test_stale_serves_are_counted(clock: FakeClock) -> None:
    """A failed refresh with a last good value counts a stale serve."""
    metrics = PrometheusMetrics(clock=clock)
    adapter = ScriptedAdapter("github", snapshot("github"), ProviderUnavailable("down", provider="github"))
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", "github"),
        adapters=[adapter],
        clock=clock,
        metrics=metrics,
    )
    async with service:
        connections = await service._connections("p")
        assert connections is not None
        await service.aggregator.collect("p", connections)
        clock.advance(60)
        await service.aggregator.collect("p", connections)  # starts the refresh, answers at once
        await anyio.wait_all_tasks_blocked()  # the refresh failed
        views = await service.aggregator.collect("p", connections)
    assert views[1].stale
    assert value(samples(metrics), "integration_cache_events_total", event="stale") == 1


def test_sse_gauge_and_every_required_name_exists_from_the_start() -> None:
    """The four names of the requirements are in the output before anything happened; the SSE gauge moves."""
    metrics = PrometheusMetrics(clock=FakeClock())
    text = metrics.render()[0].decode()
    for name in (
        "integration_status_request_duration",
        "integration_adapter_timeout_rate",
        "integration_action_success_rate",
        "integration_sse_connection_count",
    ):
        assert f"# TYPE {name} " in text
    metrics.sse_connections(1)
    metrics.sse_connections(1)
    metrics.sse_connections(-1, dropped=True)
    assert value(samples(metrics), "integration_sse_connection_count") == 1


def test_each_instance_has_its_own_registry() -> None:
    """Two PrometheusMetrics do not collide; a given registry is used as is."""
    from prometheus_client import CollectorRegistry

    a, b = PrometheusMetrics(), PrometheusMetrics()
    a.cache("hit")
    assert value(samples(a), "integration_cache_events_total", event="hit") == 1
    assert value(samples(b), "integration_cache_events_total", event="hit") == 0
    registry = CollectorRegistry()
    c = PrometheusMetrics(registry)
    assert c.registry is registry
    assert registry.get_sample_value("integration_cache_events_total", {"event": "hit"}) == 0


def test_rate_gauges_forget_outside_the_window() -> None:
    """A timeout older than the window no longer counts in the rate gauge, while the counter keeps it."""
    clock = FakeClock()
    metrics = PrometheusMetrics(clock=clock, window=60)
    metrics.observe_fetch("sanity", 3.0, "timeout")
    clock.advance(61)
    metrics.observe_fetch("sanity", 0.1, "ok")
    found = samples(metrics)
    assert value(found, "integration_adapter_timeout_rate", provider="sanity") == 0.0
    assert value(found, "integration_adapter_calls_total", provider="sanity", outcome="timeout") == 1


@pytest.mark.anyio
async def test_asgi_app_serves_the_registry() -> None:
    """The ASGI helper answers a scrape in the text format."""
    metrics = PrometheusMetrics()
    metrics.observe_request("status", 0.02, 200)
    transport = httpx.ASGITransport(app=metrics.asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'integration_status_responses_total{code="200",endpoint="status"} 1.0' in r.text


@pytest.mark.anyio
async def test_asgi_app_serves_at_an_exact_route() -> None:
    """As a Starlette route the ASGI helper answers at /metrics itself (no redirect to /metrics/)."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    metrics = PrometheusMetrics()
    metrics.observe_request("status", 0.02, 200)
    app = Starlette(routes=[Route("/metrics", metrics.asgi_app(), methods=["GET"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        r = await client.get("/metrics")
    assert r.status_code == 200
    assert "integration_status_request_duration_count" in r.text


def test_flask_view_serves_the_registry() -> None:
    """The Flask view helper works as a plain view function."""
    flask = pytest.importorskip("flask")
    metrics = PrometheusMetrics()
    app = flask.Flask("metrics_test")
    app.add_url_rule("/metrics", view_func=metrics.flask_view())
    r = app.test_client().get("/metrics")
    assert r.status_code == 200
    assert b"# TYPE integration_sse_connection_count gauge" in r.data


def test_no_metrics_is_the_default_and_a_no_op() -> None:
    """Without metrics the service reports only to its health recorder; NoMetrics records nothing."""
    service = StatusService(
        authorizer=allow_global_roles, connections=StaticConnections({}), clock=FakeClock()
    )
    assert service.metrics is service.health
    none = NoMetrics()
    none.observe_fetch("github", 1.0, "ok")
    none.sse_connections(1)
    assert combine(none, None) is not none  # dropped, not wrapped
    assert isinstance(combine(none, None), NoMetrics)
    recorder = HealthRecorder(clock=FakeClock())
    assert combine(recorder, NoMetrics()) is recorder


def test_missing_prometheus_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus-client, making PrometheusMetrics raises an ImportError naming the extra."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"integration-status\[prometheus\]"):
        PrometheusMetrics()


def test_importing_the_package_does_not_import_prometheus_client() -> None:
    """Importing the package, the service and observability leaves prometheus_client unimported."""
    code = (
        "import sys, integration_status, integration_status.service, integration_status.observability;"
        "print('prometheus_client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rolling_counts_drop_old_slots() -> None:
    """Counts leave the window slot by slot and memory stays bounded by the slot count."""
    clock = FakeClock()
    counts = RollingCounts(clock=clock, window=10, slots=5)
    for _ in range(100):
        counts.add("k", "ok")
        clock.advance(1)
    # now = 100: the window is the current slot [100, 102) and the four before it, i.e. t >= 92
    assert counts.totals("k") == {"ok": 8}
    assert len(counts._rings["k"]) <= 5
    clock.advance(20)
    assert counts.totals("k") == {}


def test_health_recorder_ages_out_slow_requests() -> None:
    """Slow status requests older than the window stop counting toward p95, so a quiet instance recovers."""
    clock = FakeClock()
    recorder = HealthRecorder(clock=clock, window=60, reservoir=50)
    for _ in range(30):
        recorder.observe_request("status", 2.0, 200)
    recorder.observe_request("status", 9.0, 404)  # errors are not status timings
    assert not recorder.report().healthy
    clock.advance(61)
    snap: Any = recorder.stats()
    assert snap.status_durations == ()
    assert recorder.report().healthy


def test_a_scrape_drops_the_live_gauges_of_a_killed_worker(tmp_path: Path) -> None:
    """A worker killed with three streams open (SIGKILL: no exit handler runs) leaves its live gauge file; the
    next scrape of any worker drops it, whatever supervises the workers, so the open-stream gauge counts only
    the living. Its own file and its counters stay."""
    pytest.importorskip("prometheus_client")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    killed = subprocess.run(
        [sys.executable, "-c",
         "import os, signal\n"
         "from integration_status.observability import PrometheusMetrics\n"
         "m = PrometheusMetrics()\n"
         "m.sse_connections(3)\n"
         "m.observe_request('status', 0.01, 200)\n"
         "print(os.getpid(), flush=True)\n"
         "os.kill(os.getpid(), signal.SIGKILL)\n"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    dead = int(killed.stdout)
    assert list(tmp_path.glob(f"gauge_live*_{dead}.db"))
    scrape = subprocess.run(
        [sys.executable, "-c",
         "from integration_status.observability import PrometheusMetrics\n"
         "m = PrometheusMetrics()\n"
         "m.sse_connections(1)\n"
         "print(m.render()[0].decode())\n"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    samples = dict(
        line.rsplit(" ", 1) for line in scrape.stdout.splitlines() if line and not line.startswith("#")
    )
    assert float(samples["integration_sse_connection_count"]) == 1.0
    assert not list(tmp_path.glob(f"gauge_live*_{dead}.db"))
    assert any(key.startswith("integration_status_responses_total") for key in samples)  # counters are kept
