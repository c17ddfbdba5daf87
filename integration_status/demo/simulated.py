"""Simulated providers for the demo: a small world whose state changes over time.

Pushes land every few minutes, deployments follow some of them, documents get edited, the database's latency
wanders; now and then a provider has an outage (it hangs past the adapter timeout) or rate-limits us. Everything
is derived from the injected clock and a seeded random generator, so the same clock gives the same world.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from integration_status.core.clock import SYSTEM_CLOCK, Clock, epoch_ms
from integration_status.exceptions import ProviderRateLimited
from integration_status.models import ProviderKey
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    FetchContext,
    ProviderConnection,
)
from integration_status.snapshot import (
    ActionState,
    Ago,
    ProviderSnapshot,
    Segment,
    Sensitive,
    default_actions,
    steady_ms,
)

TICK = 20.0  # seconds of world time per simulation step


@attrs.define
class Incident:
    provider: ProviderKey
    kind: str  # "outage" or "rate_limit"
    until: float


@attrs.frozen(kw_only=True)
class Activity:
    """How busy the simulated project is: the mean seconds between happenings of each kind."""

    push_every: float = 300.0
    deploy_share: float = 0.5  # of pushes that are deployed
    edit_every: float = 240.0
    spike_every: float = 1800.0  # database latency spikes
    incident_every: float = 900.0  # outages and rate limits

    @classmethod
    def lively(cls) -> Activity:
        """The demo's default: something happens every few minutes, so there is always something to see."""
        return cls()

    @classmethod
    def realistic(cls) -> Activity:
        """An active team's working day: a push every ~30 minutes (half of them deployed), a CMS edit every
        ~20 minutes, a database latency spike every ~4 hours, a provider incident every ~3 hours."""
        return cls(push_every=1800.0, edit_every=1200.0, spike_every=4 * 3600.0, incident_every=3 * 3600.0)


@attrs.define
class World:
    """The simulated state of one project's four providers."""

    clock: Clock = SYSTEM_CLOCK
    seed: int = 7
    activity: Activity = attrs.field(factory=Activity.lively)
    branch: str = "main"
    repository: str = "acme/storefront"
    org: str = "acme"
    last_push: float = 0.0
    last_sha: str = "0" * 40
    deployments: list[tuple[float, str]] = attrs.field(factory=list)  # (time, url)
    deploying_until: float | None = None
    docs_today: int = 0
    docs_day: int = -1
    db_latency_ms: float = 12.0
    webhook_failing: bool = False
    incident: Incident | None = None
    pending_events: list[dict[str, Any]] = attrs.field(factory=list)
    _rng: random.Random = attrs.field(init=False)
    _stepped_to: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        now = self.clock.time()
        self._stepped_to = now
        self.last_push = now - 4 * 60
        self.last_sha = self._sha()
        self.deployments = [(now - h * 3600 * 7, self._url()) for h in (30, 9, 2)]

    def _sha(self) -> str:
        return f"{self._rng.getrandbits(160):040x}"

    def _url(self) -> str:
        return f"https://storefront-{self._rng.getrandbits(32):08x}.vercel.app"

    def advance(self) -> None:
        """Move the world forward to the clock's now, one step at a time."""
        now = self.clock.time()
        while self._stepped_to + TICK <= now:
            self._stepped_to += TICK
            self._step(self._stepped_to)

    def _step(self, t: float) -> None:
        rng = self._rng
        ts = int(t * 1000)
        act = self.activity
        if rng.random() < TICK / act.push_every:
            self.last_push, self.last_sha = t, self._sha()
            self.pending_events.append(
                {
                    "type": "github:push",
                    "projectId": "demo",
                    "branch": self.branch,
                    "sha": self.last_sha,
                    "ts": ts,
                }
            )
            if rng.random() < act.deploy_share:
                self.deployments.append((t, self._url()))
        day = int(t // 86400)
        if day != self.docs_day:
            self.docs_day, self.docs_today = day, 0
        if rng.random() < TICK / act.edit_every:  # an editor saves a few documents
            count = rng.randint(1, 3)
            self.docs_today += count
            self.pending_events.append(
                {"type": "sanity:webhook", "projectId": "demo", "count": count, "ts": ts}
            )
        # Latency jitters around its baseline (and returns to it after a spike); it does not wander off.
        baseline = 12.0
        if self.db_latency_ms <= 250:
            self.db_latency_ms = max(4.0, baseline + rng.gauss(0, 1.5))
        if rng.random() < TICK / act.spike_every:
            self.db_latency_ms = 320.0
        elif self.db_latency_ms > 250 and rng.random() < 0.3:
            self.db_latency_ms = 14.0
        if self.incident is not None and t >= self.incident.until:
            self.incident = None
        if self.incident is None and rng.random() < TICK / act.incident_every:  # an outage or a rate limit
            provider: ProviderKey = rng.choice(["github", "vercel", "sanity", "supabase"])
            kind = rng.choice(["outage", "rate_limit"])
            self.incident = Incident(provider=provider, kind=kind, until=t + rng.uniform(40, 90))

    def trouble(self, provider: ProviderKey) -> Incident | None:
        self.advance()
        if self.incident is not None and self.incident.provider == provider:
            return self.incident
        return None

    def drain_events(self) -> list[dict[str, Any]]:
        self.advance()
        events, self.pending_events = self.pending_events, []
        return events


class SimulatedAdapter:
    """An :class:`~integration_status.protocols.Adapter` over a :class:`World` instead of a provider API."""

    def __init__(self, provider: ProviderKey, world: World, *, deploy_seconds: float = 4.0) -> None:
        self.provider: ProviderKey = provider
        self.world = world
        self.deploy_seconds = deploy_seconds

    async def fetch(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
        incident = self.world.trouble(self.provider)
        if incident is not None and incident.kind == "outage":
            await ctx.clock.sleep(3600)  # hangs: the aggregator's timeout and breaker deal with it
        if incident is not None and incident.kind == "rate_limit":
            retry = max(1.0, incident.until - ctx.clock.time())
            raise ProviderRateLimited(
                "simulated rate limit", provider=self.provider, status_code=429, retry_after=retry
            )
        if self.provider == "supabase":
            return self._supabase(ctx.clock, ctx.previous)
        return getattr(self, f"_{self.provider}")(ctx.clock)  # type: ignore[no-any-return]

    def _at(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, tz=UTC)

    def _github(self, clock: Clock) -> ProviderSnapshot:
        w = self.world
        recent = clock.time() - w.last_push <= timedelta(days=7).total_seconds()
        activity = (
            Segment(pieces=("Last push ", Ago(at=self._at(w.last_push))))
            if recent
            else Segment(pieces=("No recent activity",))
        )
        return ProviderSnapshot(
            provider="github",
            status="connected" if recent else "warning",
            summary=(
                Segment(pieces=("Linked to ", Sensitive(kind="branch", value=w.branch)), redacted="Linked"),
                activity,
            ),
            details={
                "repository": Sensitive(kind="repo", value=w.repository),
                "org": Sensitive(kind="org", value=w.org),
            },
        )

    def _vercel(self, clock: Clock) -> ProviderSnapshot:
        w = self.world
        week = [d for d in w.deployments if clock.time() - d[0] <= 7 * 86400]
        building = w.deploying_until is not None and clock.time() < w.deploying_until
        state = "Building" if building else "Live"
        summary = (
            Segment(pieces=(f"{len(week)} deployment{'s' if len(week) != 1 else ''} this week",)),
            Segment(pieces=(state,)),
        )
        url = w.deployments[-1][1] if w.deployments else None
        return ProviderSnapshot(
            provider="vercel",
            status="connected" if w.deployments else "warning",
            summary=summary,
            details={"productionUrl": Sensitive(kind="url", value=url)} if url else {},
        )

    def _sanity(self, clock: Clock) -> ProviderSnapshot:
        w = self.world
        n = w.docs_today
        return ProviderSnapshot(
            provider="sanity",
            status="connected",
            summary=(
                Segment(pieces=(f"{n} doc{'s' if n != 1 else ''} updated today",)),
                Segment(pieces=("Live sync",)),
            ),
        )

    def _supabase(self, clock: Clock, previous: ProviderSnapshot | None) -> ProviderSnapshot:
        ms = self.world.db_latency_ms
        if ms > 250:
            return ProviderSnapshot(
                provider="supabase",
                status="warning",
                summary=(Segment(pieces=("Connected",)), Segment(pieces=("High latency",))),
            )
        # As the real adapter does: the readout moves when the latency does, not with every bit of jitter.
        before = previous.detail("latencyMs") if previous is not None else None
        shown = steady_ms(ms, before if isinstance(before, int) else None)
        return ProviderSnapshot(
            provider="supabase",
            status="connected",
            summary=(Segment(pieces=("Database healthy",)), Segment(pieces=(f"{shown}ms avg",))),
            details={"latencyMs": shown},
        )

    # --- actions --------------------------------------------------------------------------------------------

    def action_handlers(self) -> Mapping[str, ActionHandler]:
        handlers: dict[str, ActionHandler] = {
            a.id: self._simple for a in default_actions(self.provider, "connected")
        }
        if self.provider == "vercel":
            handlers["deploy"] = self._deploy
        if self.provider == "sanity":
            handlers["open-studio"] = self._open_studio
        for connect in ("connect", "reconnect", "link"):
            if connect in handlers:
                handlers[connect] = self._connect
        return handlers

    async def _simple(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        return ActionOutcome(operation_id=ctx.operation_id, done=True)

    async def _open_studio(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        return ActionOutcome(
            operation_id=ctx.operation_id,
            data={"url": "https://storefront.sanity.studio"},
            changes_state=False,
        )

    async def _connect(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        state = secrets.token_urlsafe(8)
        return ActionOutcome(
            operation_id=ctx.operation_id,
            data={"url": f"https://example.invalid/oauth/{request.provider}?state={state}"},
            changes_state=False,
        )

    async def _deploy(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        w = self.world
        w.deploying_until = ctx.clock.time() + self.deploy_seconds
        await ctx.publish(
            {
                "type": "deploy:started",
                "provider": "vercel",
                "projectId": request.project_id,
                "operationId": ctx.operation_id,
                "ts": epoch_ms(ctx.clock),
            }
        )

        async def finish() -> None:
            await ctx.clock.sleep(self.deploy_seconds)
            url = w._url()
            w.deployments.append((ctx.clock.time(), url))
            w.deploying_until = None
            await ctx.publish(
                {
                    "type": "deploy:finished",
                    "provider": "vercel",
                    "projectId": request.project_id,
                    "operationId": ctx.operation_id,
                    "success": True,
                    "url": url,
                    "ts": epoch_ms(ctx.clock),
                }
            )

        ctx.spawn(finish)
        return ActionOutcome(operation_id=ctx.operation_id, done=False)


def simulated_adapters(world: World, *, deploy_seconds: float = 4.0) -> list[SimulatedAdapter]:
    """One simulated adapter per provider over ``world``; a deploy takes ``deploy_seconds`` to finish."""
    providers: tuple[ProviderKey, ...] = ("sanity", "github", "vercel", "supabase")
    return [SimulatedAdapter(p, world, deploy_seconds=deploy_seconds) for p in providers]


__all__ = ["ActionState", "Activity", "Incident", "SimulatedAdapter", "World", "simulated_adapters"]
