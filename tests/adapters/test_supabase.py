"""SupabaseAdapter: project state, service health, the database probe seam, errors and actions."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from adapter_support import Router, fetch_ctx

from integration_status.adapters.http import HttpClient
from integration_status.adapters.supabase import SupabaseAdapter, SupabaseFacts, supabase_snapshot
from integration_status.core.clock import SYSTEM_CLOCK, Clock, utcnow
from integration_status.exceptions import ProviderAuthError, ProviderRateLimited, ProviderTimeout
from integration_status.protocols import ActionContext, ActionRequest, ProviderConnection, Secret
from integration_status.snapshot import Visibility, render_summary

REF = "abcdefghijklmnopqrst"
PROJECT = f"/v1/projects/{REF}"
CONN = ProviderConnection(provider="supabase", settings={"project_ref": REF}, token="sbp_SUPASECRET")
WITH_DSN = ProviderConnection(
    provider="supabase",
    settings={"project_ref": REF},
    token="sbp_SUPASECRET",
    dsn="postgresql://u:PGPASS@h/db",
)


@attrs.frozen(kw_only=True)
class _Health:
    avg_ms: float
    samples: int = 3


class FakeProbe:
    def __init__(self, avg_ms: float = 12.0, error: Exception | None = None) -> None:
        self.avg_ms, self.error, self.calls = avg_ms, error, 0

    async def __call__(self, dsn: Secret, *, samples: int = 3, timeout: float, clock: Clock) -> _Health:  # noqa: ASYNC109
        self.calls += 1
        assert dsn.reveal() == "postgresql://u:PGPASS@h/db"
        assert timeout > 0
        if self.error:
            raise self.error
        return _Health(avg_ms=self.avg_ms, samples=samples)


def _setup(
    router: Router, payload: Any, health: str = "supabase/health_200_healthy", status: str | None = None
) -> None:
    env = payload("supabase/project_200")
    if status:
        env["body"]["status"] = status
    router.add("GET", PROJECT, env)
    router.add("GET", f"{PROJECT}/health", payload(health))


def _text(snap: Any, clock: Any) -> str | None:
    return render_summary(snap.summary, Visibility.none(), utcnow(clock))


@pytest.mark.anyio
async def test_healthy_with_probe(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """Healthy services and a fast probe: connected, "Database healthy · 12ms avg"."""
    _setup(router, payload)
    probe = FakeProbe(avg_ms=12)
    snap = await SupabaseAdapter(http=http, probe=probe).fetch(WITH_DSN, fetch_ctx(clock))
    assert snap.status == "connected"
    assert _text(snap, clock) == "Database healthy · 12ms avg"
    assert probe.calls == 1
    health = router.calls[1].url
    assert health.params.get_list("services") == ["db", "rest", "auth"]
    assert 100 <= int(health.params["timeout_ms"]) <= 10_000


@pytest.mark.anyio
async def test_healthy_without_dsn(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """No DSN: no probe, "Database healthy" without a millisecond figure."""
    _setup(router, payload)
    probe = FakeProbe()
    snap = await SupabaseAdapter(http=http, probe=probe).fetch(CONN, fetch_ctx(clock))
    assert _text(snap, clock) == "Database healthy"
    assert probe.calls == 0


@pytest.mark.anyio
async def test_high_latency_warns(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """A probe above latency_warning_ms: warning, "Connected · High latency"."""
    _setup(router, payload)
    snap = await SupabaseAdapter(http=http, probe=FakeProbe(avg_ms=400)).fetch(WITH_DSN, fetch_ctx(clock))
    assert snap.status == "warning"
    assert _text(snap, clock) == "Connected · High latency"


@pytest.mark.anyio
async def test_unhealthy_service_is_error(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """An UNHEALTHY db in the health answer: error with a problem; the probe is skipped."""
    _setup(router, payload, health="supabase/health_200_degraded")
    probe = FakeProbe()
    snap = await SupabaseAdapter(http=http, probe=probe).fetch(WITH_DSN, fetch_ctx(clock))
    assert snap.status == "error"
    assert _text(snap, clock) == "Database unhealthy"
    assert probe.calls == 0


@pytest.mark.anyio
async def test_coming_up_warns(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """A project still COMING_UP: warning."""
    _setup(router, payload, status="COMING_UP")
    snap = await SupabaseAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "warning"


@pytest.mark.anyio
async def test_paused_project_is_error(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """An INACTIVE (paused) project: error "Project paused", no health call."""
    _setup(router, payload, status="INACTIVE")
    snap = await SupabaseAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "error"
    assert _text(snap, clock) == "Project paused"
    assert router.count("GET", f"{PROJECT}/health") == 0


@pytest.mark.parametrize(
    ("state", "status", "summary", "hint"),
    [
        ("PAUSED", "error", "Project paused", "Restore it in the Supabase dashboard"),
        ("PAUSING", "error", "Project pausing", "Restore it in the Supabase dashboard"),
        ("INIT_FAILED", "error", "Project failed to start", "See the project in the Supabase dashboard"),
        ("REMOVED", "error", "Project removed", "Link another project"),
        ("RESTORING", "warning", "Connected · Project restoring", None),
        ("UPGRADING", "warning", "Connected · Project upgrading", None),
        ("SOMETHING_NEW", "warning", "Connected · Project state unknown", None),
    ],
)
def test_project_states(state: str, status: str, summary: str, hint: str | None) -> None:
    """Each project state of the Management API has its own status, summary and (when down) hint."""
    snap = supabase_snapshot(SupabaseFacts(project_status=state))
    assert snap.status == status
    assert render_summary(snap.summary, Visibility.none(), utcnow(SYSTEM_CLOCK)) == summary
    assert (snap.problem.hint if snap.problem else None) == hint


@pytest.mark.anyio
async def test_no_project_is_disconnected(http: HttpClient, router: Router, clock: Any) -> None:
    """No project_ref: disconnected without calls."""
    snap = await SupabaseAdapter(http=http).fetch(ProviderConnection(provider="supabase"), fetch_ctx(clock))
    assert snap.status == "disconnected"
    assert router.calls == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("supabase/error_401_unauthorized", ProviderAuthError),
        ("supabase/error_403_insufficient_privileges", ProviderAuthError),
        ("supabase/error_429_rate_limited", ProviderRateLimited),
    ],
)
async def test_health_errors(
    http: HttpClient, router: Router, clock: Any, payload: Any, name: str, expected: type
) -> None:
    """Errors on the health call map to the tree; the 429's reset is seconds remaining (37)."""
    _setup(router, payload)
    router.add("GET", f"{PROJECT}/health", payload(name))
    with pytest.raises(expected) as info:
        await SupabaseAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    if expected is ProviderRateLimited:
        assert info.value.retry_after == 37
    assert "SUPASECRET" not in repr(info.value)


@pytest.mark.anyio
async def test_probe_errors_propagate(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """A wrong database password from the probe is an auth error of the fetch."""
    _setup(router, payload)
    probe = FakeProbe(error=ProviderAuthError("supabase: database login failed", provider="supabase"))
    with pytest.raises(ProviderAuthError) as info:
        await SupabaseAdapter(http=http, probe=probe).fetch(WITH_DSN, fetch_ctx(clock))
    assert "PGPASS" not in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize(("measured", "shown"), [(16.0, "12ms avg"), (8.0, "12ms avg"), (30.0, "30ms avg")])
async def test_latency_readout_is_steady_while_it_jitters(
    http: HttpClient, router: Router, clock: Any, payload: Any, measured: float, shown: str
) -> None:
    """With a previous snapshot showing 12 ms, a probe that only jitters keeps "12ms avg"; a real move shows."""
    _setup(router, payload)
    adapter = SupabaseAdapter(http=http, probe=FakeProbe(avg_ms=12))
    first = await adapter.fetch(WITH_DSN, fetch_ctx(clock))
    _setup(router, payload)
    adapter = SupabaseAdapter(http=http, probe=FakeProbe(avg_ms=measured))
    again = await adapter.fetch(WITH_DSN, attrs.evolve(fetch_ctx(clock), previous=first))
    assert _text(again, clock) == f"Database healthy · {shown}"


@pytest.mark.anyio
async def test_test_connection_reprobes(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """test-connection probes again and reports done with the new latency; state changes."""
    _setup(router, payload)
    probe = FakeProbe(avg_ms=31)

    async def publish(event: Any) -> None:
        return None

    ctx = ActionContext(clock=clock, operation_id="op", timeout=5, publish=publish, spawn=lambda fn: None)
    handlers = SupabaseAdapter(http=http, probe=probe).action_handlers()
    assert set(handlers) == {"test-connection", "reconnect", "connect"}
    req = ActionRequest(project_id="p", provider="supabase", action="test-connection")
    outcome = await handlers["test-connection"](req, WITH_DSN, ctx)
    assert outcome.done
    assert outcome.changes_state
    assert outcome.data == {"status": "connected", "latencyMs": 31}
    assert probe.calls == 1


@pytest.mark.anyio
async def test_loopback_timeout_and_reset(hanging_server: str, resetting_server: str) -> None:
    """Against real sockets the adapter gives up within its budget, and a reset is a timeout."""
    async with HttpClient() as http:
        for server in (hanging_server, resetting_server):
            start = SYSTEM_CLOCK.monotonic()
            with pytest.raises(ProviderTimeout):
                await SupabaseAdapter(http=http, base_url=server).fetch(
                    CONN, fetch_ctx(SYSTEM_CLOCK, timeout=0.3)
                )
            assert SYSTEM_CLOCK.monotonic() - start < 1.0
