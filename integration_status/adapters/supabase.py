"""Supabase: is the project up, are its services healthy, and how fast does the database answer?

Calls (``base_url`` defaults to ``https://api.supabase.com``): ``GET /v1/projects/{ref}`` and
``GET /v1/projects/{ref}/health?services=db&services=rest&services=auth&timeout_ms=…``. When the connection
has a ``dsn``, the database itself is probed over PostgreSQL (``select 1``, several samples).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Final, Protocol, cast
from urllib.parse import quote

import attrs

from integration_status._config import check_base_url
from integration_status.adapters._common import UrlHook, paced, raise_first, settle, text, url_action
from integration_status.adapters.http import HttpClient, JsonResponse
from integration_status.core.clock import Clock
from integration_status.exceptions import ProviderUnavailable
from integration_status.models import Problem, ProviderKey
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    Adapter,
    FetchContext,
    ProviderConnection,
    Secret,
)
from integration_status.snapshot import ProviderSnapshot, Segment, steady_ms

__all__ = [
    "HEALTH_SERVICES",
    "DatabaseProbe",
    "SupabaseAdapter",
    "SupabaseFacts",
    "supabase_snapshot",
]

_PROVIDER: Final[ProviderKey] = "supabase"
HEALTH_SERVICES: Final = ("db", "rest", "auth")
#: Project states in which nothing works until someone acts: (summary, hint). The free plan pauses idle projects
#: (INACTIVE); a paused project only comes back when someone restores it.
_DOWN: Final[Mapping[str, tuple[str, str]]] = {
    "INACTIVE": ("Project paused", "Restore it in the Supabase dashboard"),
    "PAUSED": ("Project paused", "Restore it in the Supabase dashboard"),
    "PAUSING": ("Project pausing", "Restore it in the Supabase dashboard"),
    "GOING_DOWN": ("Project pausing", "Restore it in the Supabase dashboard"),
    "INIT_FAILED": ("Project failed to start", "See the project in the Supabase dashboard"),
    "RESTORE_FAILED": ("Restore failed", "See the project in the Supabase dashboard"),
    "PAUSE_FAILED": ("Pause failed", "See the project in the Supabase dashboard"),
    "REMOVED": ("Project removed", "Link another project"),
}
#: Project states that pass by themselves: a warning while they last.
_PASSING: Final[Mapping[str, str]] = {
    "COMING_UP": "Services starting",
    "RESTARTING": "Project restarting",
    "RESTORING": "Project restoring",
    "UPGRADING": "Project upgrading",
    "RESIZING": "Project resizing",
}


class DbHealthLike(Protocol):
    @property
    def avg_ms(self) -> float: ...


class DatabaseProbe(Protocol):
    """``probe_database(dsn, *, samples, timeout, clock) -> DbHealth`` (see ``adapters/_pg.py``)."""

    def __call__(
        self, dsn: Secret, *, samples: int = 3, timeout: float, clock: Clock
    ) -> Awaitable[DbHealthLike]: ...


@attrs.frozen(kw_only=True)
class SupabaseFacts:
    """What the Management API (and the optional database probe) said about one project."""

    project_status: str
    unhealthy: tuple[str, ...] = ()
    coming_up: tuple[str, ...] = ()
    latency_ms: float | None = None  # probe average, or the health call's round trip
    measured_by_probe: bool = False


def supabase_snapshot(
    facts: SupabaseFacts, *, latency_warning_ms: float = 250, shown_ms: float | None = None
) -> ProviderSnapshot:
    """The status rule: error when the project is paused, failed or removed (with a hint saying what to do) or a
    service is unhealthy; warning while the project or its services start, restore, upgrade or resize, in a
    state this version does not know, or above ``latency_warning_ms``; else connected. The latency readout stays
    at ``shown_ms`` (what the previous snapshot showed) while the measurement only jitters around it
    (:func:`steady_ms`), so the summary, and the ETag, change when the latency really moves.

    >>> facts = SupabaseFacts(project_status="ACTIVE_HEALTHY", latency_ms=12.4, measured_by_probe=True)
    >>> supabase_snapshot(facts).summary
    (Segment(pieces=('Database healthy',), redacted=None), Segment(pieces=('12ms avg',), redacted=None))
    >>> supabase_snapshot(attrs.evolve(facts, latency_ms=14.1), shown_ms=12).summary[1].pieces
    ('12ms avg',)
    """
    details: dict[str, Any] = {"projectStatus": facts.project_status}
    shown = None if facts.latency_ms is None else steady_ms(facts.latency_ms, shown_ms)
    if shown is not None:
        details["latencyMs"] = shown
    down = _DOWN.get(facts.project_status)
    if down is None and (facts.unhealthy or facts.project_status == "ACTIVE_UNHEALTHY"):
        what = (
            "Database unhealthy" if "db" in facts.unhealthy or not facts.unhealthy else "Services unhealthy"
        )
        down = (what, what)
    if down is not None:
        return ProviderSnapshot(
            provider=_PROVIDER,
            status="error",
            summary=(text(down[0]),),
            problem=Problem(code="unknown", hint=down[1]),
            details=details,
        )
    if facts.coming_up or facts.project_status != "ACTIVE_HEALTHY":
        passing = _PASSING.get(facts.project_status)
        if passing is None:
            passing = "Services starting" if facts.coming_up else "Project state unknown"
        return ProviderSnapshot(
            provider=_PROVIDER,
            status="warning",
            summary=(text("Connected"), text(passing)),
            details=details,
        )
    if facts.latency_ms is not None and facts.latency_ms > latency_warning_ms:
        return ProviderSnapshot(
            provider=_PROVIDER,
            status="warning",
            summary=(text("Connected"), text("High latency")),
            details=details,
        )
    summary: tuple[Segment, ...] = (text("Database healthy"),)
    if facts.measured_by_probe and shown is not None:
        summary += (text(f"{shown}ms avg"),)
    return ProviderSnapshot(provider=_PROVIDER, status="connected", summary=summary, details=details)


def _health(body: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(body, list):
        raise ProviderUnavailable("supabase: unexpected response shape (health)", provider=_PROVIDER)
    unhealthy: list[str] = []
    coming_up: list[str] = []
    for item in body:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ProviderUnavailable("supabase: unexpected response shape (health)", provider=_PROVIDER)
        status = item.get("status")
        if status == "COMING_UP":
            coming_up.append(item["name"])
        elif status == "UNHEALTHY" or (status is None and item.get("healthy") is False):
            unhealthy.append(item["name"])
    return tuple(unhealthy), tuple(coming_up)


class SupabaseAdapter(Adapter):  # nominally an Adapter: a list of mixed adapters infers as list[Adapter]
    """The Supabase adapter. ``test-connection`` probes again; ``reconnect`` and ``connect`` answer URLs from
    host hooks. ``probe`` replaces the PostgreSQL probe (tests, or a host with its own pool)."""

    provider: ProviderKey = _PROVIDER
    #: The connection settings this adapter reads; others are reported as a likely typo.
    settings_keys: frozenset[str] = frozenset({"project_ref"})

    def __init__(
        self,
        *,
        http: HttpClient,
        base_url: str = "https://api.supabase.com",
        latency_warning_ms: float = 250,
        probe: DatabaseProbe | None = None,
        probe_samples: int = 3,
        reconnect_url: UrlHook | None = None,
        connect_url: UrlHook | None = None,
    ) -> None:
        self._http = http
        self._base = check_base_url(base_url, provider=_PROVIDER)
        self._latency_warning_ms = latency_warning_ms
        self._probe = probe
        self._samples = probe_samples
        self._reconnect_url = reconnect_url
        self._connect_url = connect_url

    def __repr__(self) -> str:
        return f"SupabaseAdapter(base_url={self._base!r})"

    def _probe_fn(self) -> DatabaseProbe:
        if self._probe is None:
            # Imported on first use: psycopg is an optional extra, needed only with a DSN.
            module = importlib.import_module("integration_status.adapters._pg")
            self._probe = cast(DatabaseProbe, module.probe_database)
        return self._probe

    async def fetch(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
        """Read the project and its health, probe the database when a DSN is set; raise a ProviderError."""
        return paced(self._http, connection, ctx, await self._read(connection, ctx))

    async def _read(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
        known = ctx.previous.detail("projectStatus") if ctx.previous is not None else None
        facts = await self._facts(
            connection, ctx.clock, ctx.remaining, was_up=known not in _DOWN and known is not None
        )
        if facts is None:
            return ProviderSnapshot(
                provider=_PROVIDER, status="disconnected", summary=(text("No database linked"),)
            )
        previous = ctx.previous.detail("latencyMs") if ctx.previous is not None else None
        shown = previous if isinstance(previous, int | float) and not isinstance(previous, bool) else None
        return supabase_snapshot(facts, latency_warning_ms=self._latency_warning_ms, shown_ms=shown)

    async def _facts(
        self, connection: ProviderConnection, clock: Clock, remaining: Any, *, was_up: bool = False
    ) -> SupabaseFacts | None:
        ref = connection.settings.get("project_ref", "").strip()
        if not ref:
            return None
        path = f"{self._base}/v1/projects/{quote(ref, safe='')}"
        budget = remaining()
        timeout_ms = max(100, min(10_000, int(budget * 1000 * 0.6)))
        params: Sequence[tuple[str, str]] = [("services", s) for s in HEALTH_SERVICES]

        async def read_project() -> JsonResponse:
            return await self._http.request_json(
                _PROVIDER, "GET", path, token=connection.token, timeout=remaining(), clock=clock,
                not_found_is_revoked=True,
            )  # fmt: skip

        async def read_health() -> JsonResponse:
            return await self._http.request_json(
                _PROVIDER, "GET", f"{path}/health", token=connection.token,
                params=[*params, ("timeout_ms", str(timeout_ms))], timeout=budget, clock=clock,
            )  # fmt: skip

        # A project that was up last time is read at once with its services' health; one that was down (or
        # never seen) is read first, and its health only when it is up (a paused project's health is noise).
        results = await settle(read_project, read_health) if was_up else await settle(read_project)
        raise_first(results[:1])
        project = results[0]
        status = project.body.get("status") if isinstance(project.body, Mapping) else None
        if not isinstance(status, str):
            raise ProviderUnavailable("supabase: unexpected response shape (project)", provider=_PROVIDER)
        if status in _DOWN:
            return SupabaseFacts(project_status=status)
        health = results[1] if was_up else await read_health()
        raise_first([health])
        unhealthy, coming_up = _health(health.body)
        latency, by_probe = health.elapsed * 1000, False
        if connection.dsn is not None and not unhealthy:
            result = await self._probe_fn()(
                connection.dsn, samples=self._samples, timeout=remaining(), clock=clock
            )
            latency, by_probe = float(result.avg_ms), True
        return SupabaseFacts(
            project_status=status,
            unhealthy=unhealthy,
            coming_up=coming_up,
            latency_ms=latency,
            measured_by_probe=by_probe,
        )

    def action_handlers(self) -> Mapping[str, ActionHandler]:
        return {
            "test-connection": self._test_connection,
            "reconnect": url_action(_PROVIDER, "reconnect", self._reconnect_url),
            "connect": url_action(_PROVIDER, "connect", self._connect_url),
        }

    async def _test_connection(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        """Check again now: project, health and the database probe. Failures raise as provider errors."""
        deadline = ctx.clock.monotonic() + ctx.timeout
        facts = await self._facts(connection, ctx.clock, lambda: max(0.0, deadline - ctx.clock.monotonic()))
        if facts is None:
            raise ProviderUnavailable("supabase: no project linked", provider=_PROVIDER)
        snap = supabase_snapshot(facts, latency_warning_ms=self._latency_warning_ms)
        data: dict[str, Any] = {"status": snap.status}
        if facts.latency_ms is not None:
            data["latencyMs"] = round(facts.latency_ms)
        return ActionOutcome(operation_id=ctx.operation_id, done=True, data=data, changes_state=True)
