"""Rate budgets: the pacing curve, the providers' headers, stretched freshness, and refusals until the reset."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import anyio
import attrs
import httpx
import pytest
from adapter_support import Router, fetch_ctx
from hypothesis import given
from hypothesis import strategies as st

from integration_status import StatusService
from integration_status.adapters.budget import (
    RESERVE,
    RateBudgets,
    RateWindow,
    read_rate_headers,
    refresh_interval,
)
from integration_status.adapters.github import GitHubAdapter
from integration_status.adapters.http import HttpClient
from integration_status.backends.memory import MemoryCacheStore
from integration_status.core.cache import SnapshotCache
from integration_status.core.clock import utcnow
from integration_status.exceptions import ProviderRateLimited
from integration_status.protocols import FetchContext, ProviderConnection, Secret
from integration_status.service.webhooks import WebhookTarget, sign_github
from integration_status.snapshot import ProviderSnapshot
from integration_status.testing import StaticConnections, snapshot

REPO = "/repos/octocat/Hello-World"
CONN = ProviderConnection(provider="github", settings={"repository": "octocat/Hello-World"}, token="ghp_T")

bases = st.floats(min_value=1, max_value=600)
limits = st.integers(min_value=1, max_value=100_000)
resets = st.floats(min_value=0.5, max_value=7200)


@given(base=bases, limit=limits, data=st.data(), reset_in=resets)
def test_interval_is_between_the_ttl_and_the_reset(
    base: float, limit: int, data: Any, reset_in: float
) -> None:
    """Never shorter than the TTL, never longer than until the window resets (when that is later)."""
    remaining = data.draw(st.integers(min_value=0, max_value=limit))
    window = RateWindow(limit=limit, remaining=remaining, reset_at=reset_in)
    interval = refresh_interval(base, window, now=0)
    assert base <= interval <= max(base, reset_in)


@given(base=bases, limit=limits, data=st.data(), reset_in=resets)
def test_less_budget_never_means_more_polling(base: float, limit: int, data: Any, reset_in: float) -> None:
    """The curve is monotone: with fewer requests left, the interval is at least as long."""
    low = data.draw(st.integers(min_value=0, max_value=limit))
    high = data.draw(st.integers(min_value=low, max_value=limit))
    at = 1000 + reset_in

    def interval(remaining: int) -> float:
        return refresh_interval(base, RateWindow(limit=limit, remaining=remaining, reset_at=at), now=1000)

    assert interval(low) >= interval(high)


@given(base=bases, limit=limits, data=st.data(), reset_in=resets)
def test_the_reserve_is_left_to_users(base: float, limit: int, data: Any, reset_in: float) -> None:
    """At or under the reserve, polling waits for the reset; above half the budget, it runs at the TTL."""
    remaining = data.draw(st.integers(min_value=0, max_value=limit))
    window = RateWindow(limit=limit, remaining=remaining, reset_at=reset_in)
    interval = refresh_interval(base, window, now=0)
    if remaining <= RESERVE * limit:
        assert interval == max(base, reset_in)
    if remaining >= 0.5 * limit:
        assert interval == base


@given(base=bases, remaining=st.integers(min_value=0, max_value=10))
def test_a_window_that_has_reset_does_not_slow_polling(base: float, remaining: int) -> None:
    """A window whose reset time has passed (a full budget again), or no window at all: the TTL."""
    window = RateWindow(limit=5000, remaining=remaining, reset_at=999)
    assert refresh_interval(base, window, now=1000) == base
    assert refresh_interval(base, None, now=1000) == base


def test_each_providers_headers() -> None:
    """GitHub and Vercel reset at an epoch, Supabase and Sanity in seconds; missing headers are no window."""
    now = 1_764_136_800.0
    github = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "12", "x-ratelimit-reset": "1764137400"}
    assert read_rate_headers("github", github, now) == RateWindow(
        limit=5000, remaining=12, reset_at=1764137400
    )
    supabase = {"x-ratelimit-limit": "120", "x-ratelimit-remaining": "7", "x-ratelimit-reset": "30"}
    assert read_rate_headers("supabase", supabase, now) == RateWindow(
        limit=120, remaining=7, reset_at=now + 30
    )
    sanity = {"ratelimit-limit": "50", "ratelimit-remaining": "49", "ratelimit-reset": "1"}
    assert read_rate_headers("sanity", sanity, now) == RateWindow(limit=50, remaining=49, reset_at=now + 1)
    assert read_rate_headers("github", {"x-ratelimit-remaining": "3"}, now) is None
    assert read_rate_headers("github", {**github, "x-ratelimit-limit": "lots"}, now) is None


def test_answers_out_of_order_keep_the_lowest_remaining() -> None:
    """Within one window the lowest remaining wins; a later reset starts a new window; tokens do not mix."""
    budgets = RateBudgets()
    token = Secret("ghp_one")

    def seen(remaining: int, reset: int) -> dict[str, str]:
        return {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": str(reset),
        }

    budgets.observe("github", token, seen(4000, 3600), now=0)
    budgets.observe("github", token, seen(4100, 3600), now=1)
    assert budgets.window("github", token) == RateWindow(limit=5000, remaining=4000, reset_at=3600)
    budgets.observe("github", token, seen(4999, 7200), now=3601)
    assert budgets.window("github", token) == RateWindow(limit=5000, remaining=4999, reset_at=7200)
    assert budgets.window("github", Secret("ghp_two")) is None
    assert budgets.window("vercel", token) is None


def _github(router: Router, clock: Any, headers: dict[str, str] | None = None) -> None:
    headers = headers or {}
    at = (utcnow(clock) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    router.add("GET", REPO, httpx.Response(200, headers=headers, json={"default_branch": "main"}))
    router.add("GET", f"{REPO}/activity", httpx.Response(200, headers=headers, json=[{"timestamp": at}]))


def _limit(clock: Any, remaining: int, reset_in: float = 1800) -> dict[str, str]:
    """GitHub's primary limit headers."""
    reset = str(int(clock.time() + reset_in))
    return {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": str(remaining), "x-ratelimit-reset": reset}


@pytest.mark.anyio
async def test_a_low_budget_stretches_freshness_not_the_status(
    http: HttpClient, router: Router, clock: Any
) -> None:
    """With 20 % of the budget left the snapshot asks for 4x the TTL; at 2 % it waits for the reset and is
    still connected: pacing never reports rate_limited."""
    adapter = GitHubAdapter(http=http)
    _github(router, clock, _limit(clock, 1000))
    snap = await adapter.fetch(CONN, attrs.evolve(fetch_ctx(clock), ttl=15.0))
    assert snap.fresh_for == pytest.approx(60.0)
    _github(router, clock, _limit(clock, 100))
    snap = await adapter.fetch(CONN, attrs.evolve(fetch_ctx(clock), ttl=15.0))
    assert snap.status == "connected"
    assert snap.problem is None
    assert snap.fresh_for == pytest.approx(1800.0)


@pytest.mark.anyio
async def test_a_full_budget_keeps_the_ttl(http: HttpClient, router: Router, clock: Any) -> None:
    """Plenty left: no freshness hint, the cache's TTL applies."""
    _github(router, clock, _limit(clock, 4900))
    snap = await GitHubAdapter(http=http).fetch(CONN, attrs.evolve(fetch_ctx(clock), ttl=15.0))
    assert snap.fresh_for is None


@pytest.mark.anyio
async def test_the_cache_keeps_a_stretched_snapshot_fresh(clock: Any) -> None:
    """A snapshot's freshness hint beyond the TTL sets how long the cache serves it without a refresh."""
    cache = SnapshotCache(MemoryCacheStore(clock=clock), clock=clock, ttl=15.0, jitter=0.0)

    async def fetch() -> ProviderSnapshot:
        return ProviderSnapshot(provider="github", status="connected", fresh_for=600.0)

    async with anyio.create_task_group() as tg:
        cache.start(tg.start_soon)
        entry = await cache.refresh("p1:github", fetch)
    assert entry.fresh_until == clock.time() + 600.0


@pytest.mark.anyio
async def test_a_refusal_holds_until_the_providers_reset(
    http: HttpClient, router: Router, clock: Any
) -> None:
    """A 403 primary limit: rate_limited with the real reset; until then nothing is sent; after it, calls go."""
    reset = int(clock.time() + 600)
    limited = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    router.add("GET", REPO, httpx.Response(403, headers=limited, json={"message": "API rate limit exceeded"}))
    adapter = GitHubAdapter(http=http)
    with pytest.raises(ProviderRateLimited) as first:
        await adapter.fetch(CONN, fetch_ctx(clock))
    assert first.value.retry_after == pytest.approx(600)
    clock.advance(200)
    with pytest.raises(ProviderRateLimited) as held:
        await adapter.fetch(CONN, fetch_ctx(clock))
    assert held.value.retry_after == pytest.approx(400)
    assert held.value.hint == "Retry in 400s"
    assert router.count("GET", REPO) == 1
    clock.advance(401)
    _github(router, clock)
    snap = await adapter.fetch(CONN, fetch_ctx(clock))
    assert snap.status == "connected"
    assert router.count("GET", REPO) == 2


@pytest.mark.anyio
async def test_arriving_webhooks_slow_polling_down(http: HttpClient, router: Router, clock: Any) -> None:
    """An authentic GitHub delivery for a project is noted by the service, whose aggregator then tells that
    project's fetches that webhooks are arriving; such a fetch stretches polling to 8x the TTL, other fetches
    keep the TTL, and an hour later the project polls normally again."""
    body = json.dumps(
        {"zen": "Design for failure.", "hook_id": 1, "repository": {"full_name": "o/r"}}
    ).encode()
    headers = {"x-github-event": "ping", "x-github-delivery": "d-1", **sign_github("whsec", body)}
    seen: list[FetchContext] = []

    class Recording:
        provider = "github"

        async def fetch(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
            seen.append(ctx)
            return snapshot("github")

        def action_handlers(self) -> dict[str, Any]:
            return {}

    async def resolve(provider: str, headers: Any, payload: Any) -> WebhookTarget:
        return WebhookTarget(project_id="p", secret=Secret("whsec"))

    service = StatusService(
        connections=StaticConnections.linked("p", "github"),
        adapters=[Recording()],
        webhooks=resolve,
        clock=clock,
    )
    async with service:
        result = await service.ingest_webhook("github", headers, body)
        assert result.status == 200
        assert service.webhook_activity.live("github", "p", now=clock.time())
        assert not service.webhook_activity.live("vercel", "p", now=clock.time())
        await service.refresh_provider("p", "github")
        assert seen[-1].webhooks_arriving

    _github(router, clock)
    adapter = GitHubAdapter(http=http)
    ctx = attrs.evolve(fetch_ctx(clock), ttl=15.0, project_id="p", webhooks_arriving=True)
    assert (await adapter.fetch(CONN, ctx)).fresh_for == pytest.approx(120.0)
    quiet = attrs.evolve(ctx, webhooks_arriving=False)
    assert (await adapter.fetch(CONN, quiet)).fresh_for is None
    clock.advance(3601)
    assert not service.webhook_activity.live("github", "p", now=clock.time())
