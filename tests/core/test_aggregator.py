"""The aggregator: fresh hits, single refresh, the response deadline, stale fallbacks and the breaker."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from integration_status.exceptions import ProviderAuthError, ProviderRateLimited, ProviderUnavailable
from integration_status.models import PROVIDERS
from integration_status.protocols import Viewer
from integration_status.service import Settings, StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections, hang_on, snapshot

pytestmark = pytest.mark.anyio
OWNER = Viewer(user_id="u", roles={"owner"})


def make_service(clock: FakeClock, *adapters: ScriptedAdapter, **settings: object) -> StatusService:
    return StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", *(a.provider for a in adapters)),
        adapters=adapters,
        settings=Settings(**settings),  # type: ignore[arg-type]
        clock=clock,
    )


async def items(service: StatusService) -> dict[str, dict[str, object]]:
    result = await service.status("p", OWNER)
    return {i["key"]: i for i in result.envelope.to_json()["items"]}


async def settle() -> None:
    await anyio.wait_all_tasks_blocked()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_unlinked_providers_are_disconnected_without_calls(clock: FakeClock) -> None:
    """Providers the project has not linked are `disconnected`, and no adapter is asked."""
    github = ScriptedAdapter("github", snapshot("github"))
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p"),
        adapters=[github],
        clock=clock,
    )
    async with service:
        got = await items(service)
    assert [got[p]["status"] for p in PROVIDERS] == ["disconnected"] * 4
    assert github.calls == 0


async def test_four_items_in_contract_order(clock: FakeClock) -> None:
    """The envelope always lists sanity, github, vercel, supabase in that order."""
    adapters = [ScriptedAdapter(p, snapshot(p)) for p in ("supabase", "github")]
    async with make_service(clock, *adapters) as service:
        result = await service.status("p", OWNER)
    assert [i.key for i in result.envelope.items] == list(PROVIDERS)


async def test_fresh_entry_is_served_without_a_call(clock: FakeClock) -> None:
    """Within the TTL, repeated requests make no provider call."""
    github = ScriptedAdapter("github", snapshot("github"))
    async with make_service(clock, github) as service:
        await items(service)
        clock.advance(5)
        await items(service)
    assert github.calls == 1


async def test_expired_entry_triggers_one_refresh(clock: FakeClock) -> None:
    """After the TTL (at most 1.2 T), the next request is answered at once from the last value (its refresh
    has only just started) and refreshes exactly once in the background; the request after sees the result."""
    github = ScriptedAdapter("github", snapshot("github", text="one"), snapshot("github", text="two"))
    async with make_service(clock, github) as service:
        await items(service)
        clock.advance(18.01)
        served = await items(service)
        await settle()
        got = await items(service)
    assert github.calls == 2
    assert (served["github"]["summary"], "stale" in served["github"]) == ("one", False)
    assert got["github"]["summary"] == "two"
    assert "stale" not in got["github"]


async def test_concurrent_cold_requests_make_one_call(clock: FakeClock) -> None:
    """100 concurrent cold requests for one project make one call per provider."""
    adapters = [ScriptedAdapter(p, snapshot(p)) for p in PROVIDERS]
    async with make_service(clock, *adapters) as service, anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(items, service)
    assert [a.calls for a in adapters] == [1, 1, 1, 1]


async def test_hanging_provider_is_a_placeholder_within_the_deadline(clock: FakeClock) -> None:
    """On a cold start, a provider that does not answer by the deadline is a stale warning placeholder."""
    github = ScriptedAdapter("github", hang_on())
    vercel = ScriptedAdapter("vercel", snapshot("vercel"))
    async with make_service(clock, github, vercel) as service:
        async with anyio.create_task_group() as tg:
            results: list[dict[str, dict[str, object]]] = []

            async def ask() -> None:
                results.append(await items(service))

            tg.start_soon(ask)
            await settle()
            assert not results  # still waiting for github
            clock.advance(0.45)
        got = results[0]
        assert got["vercel"]["status"] == "connected"
        assert got["github"]["status"] == "warning"
        assert got["github"]["stale"] is True
        assert got["github"]["problem"] == {"code": "timeout", "hint": "Try again"}
        assert github.in_flight == 1  # the refresh goes on in the background until the adapter timeout
        clock.advance(2.5)
        await settle()
        assert github.in_flight == 0


async def test_failure_serves_last_good_value_stale_with_problem(clock: FakeClock) -> None:
    """A rate-limited refresh serves the last good value, stale, with the rate-limit problem."""
    github = ScriptedAdapter(
        "github",
        snapshot("github", text="good"),
        ProviderRateLimited("429", provider="github", status_code=429, retry_after=30),
    )
    async with make_service(clock, github) as service:
        first = await items(service)
        clock.advance(20)
        await items(service)  # starts the refresh, does not wait for it
        await settle()
        got = await items(service)
    assert got["github"]["summary"] == "good"
    assert got["github"]["stale"] is True
    assert got["github"]["problem"] == {"code": "rate_limited", "hint": "Retry in 30s"}
    assert got["github"]["updatedAt"] == first["github"]["updatedAt"]


async def test_failure_without_value_is_error(clock: FakeClock) -> None:
    """A cold failure with nothing cached is `error` with the normalized problem."""
    github = ScriptedAdapter("github", ProviderUnavailable("500", provider="github", status_code=500))
    async with make_service(clock, github) as service:
        got = await items(service)
    assert got["github"]["status"] == "error"
    assert got["github"]["problem"]["code"] == "unknown"  # type: ignore[index]
    assert "stale" not in got["github"]


async def test_revoked_token_is_error_even_with_a_cached_value(clock: FakeClock) -> None:
    """Losing access shows `error` + oauth_revoked + "Click to reconnect", not a stale good value."""
    github = ScriptedAdapter(
        "github", snapshot("github"), ProviderAuthError("401", provider="github", status_code=401)
    )
    async with make_service(clock, github) as service:
        await items(service)
        clock.advance(20)
        await items(service)  # starts the refresh, does not wait for it
        await settle()
        got = await items(service)
    assert got["github"]["status"] == "error"
    assert got["github"]["problem"] == {"code": "oauth_revoked", "hint": "Click to reconnect"}


async def test_breaker_opens_and_stops_calls(clock: FakeClock) -> None:
    """After consecutive failures the breaker opens: no call reaches the provider; stale value served."""
    github = ScriptedAdapter(
        "github", snapshot("github", text="good"), ProviderUnavailable("boom", provider="github")
    )
    async with make_service(clock, github) as service:
        await items(service)
        for _ in range(6):
            clock.advance(20)
            got = await items(service)
            await settle()
        calls_when_open = github.calls
        clock.advance(1)
        got = await items(service)
        await settle()
    assert calls_when_open < 7
    assert github.calls == calls_when_open
    assert got["github"]["stale"] is True
    assert got["github"]["summary"] == "good"


async def test_unchanged_refresh_keeps_etag(clock: FakeClock) -> None:
    """A refresh that finds the same content keeps updatedAt and the ETag (the 10 s poll gets 304)."""
    github = ScriptedAdapter("github", snapshot("github"))
    async with make_service(clock, github) as service:
        first = await service.status("p", OWNER)
        clock.advance(30)
        second = await service.status("p", OWNER, if_none_match=first.etag)
    assert github.calls == 2
    assert second.etag == first.etag
    assert second.not_modified


async def test_background_result_is_announced(clock: FakeClock) -> None:
    """A refresh that finishes after the deadline reports its changed content to change listeners."""
    changes: list[tuple[str, str]] = []

    async def slow() -> object:
        await clock.sleep(1.0)
        return snapshot("github", text="late")

    github = ScriptedAdapter("github", slow)  # type: ignore[arg-type]
    async with make_service(clock, github) as service:

        async def listen(project_id: str, provider: str) -> None:
            changes.append((project_id, provider))

        service.on_change(listen)
        async with anyio.create_task_group() as tg:
            tg.start_soon(items, service)
            await settle()
            clock.advance(0.45)
        await settle()
        assert ("p", "github") not in changes
        clock.advance(0.6)
        await settle()
        assert ("p", "github") in changes
        got = await items(service)
    assert got["github"]["summary"] == "late"


async def test_service_must_be_started(clock: FakeClock) -> None:
    """Using the service without starting it is a clear configuration error."""
    from integration_status.exceptions import ConfigurationError

    service = make_service(clock, ScriptedAdapter("github"))
    with pytest.raises(ConfigurationError, match="async with service"):
        await service.status("p", OWNER)


async def test_a_provider_failing_the_same_way_keeps_its_etag(clock: FakeClock) -> None:
    """With no good value to fall back on, an error item keeps its updatedAt (and the ETag holds) for as long
    as the provider keeps failing the same way; a different failure is a new state."""
    github = ScriptedAdapter("github", ProviderAuthError("401", provider="github", status_code=401))
    vercel = ScriptedAdapter("vercel", ProviderUnavailable("500", provider="vercel", status_code=500))
    async with make_service(clock, github, vercel) as service:
        first = await service.status("p", OWNER)
        clock.advance(20)
        again = await service.status("p", OWNER, if_none_match=first.etag)
        await settle()
        assert github.calls == 2
        assert again.not_modified
        vercel.then(ProviderRateLimited("429", provider="vercel", status_code=429, retry_after=30))
        clock.advance(20)
        await service.status("p", OWNER)  # starts the refresh, does not wait for it
        await settle()
        changed = await service.status("p", OWNER, if_none_match=first.etag)
    assert not changed.not_modified
    items = {i.key: i for i in changed.envelope.items}
    assert items["vercel"].problem is not None
    assert items["vercel"].problem.code == "rate_limited"
    assert items["vercel"].updated_at > items["github"].updated_at


async def test_a_cold_placeholder_is_dated_when_first_shown(clock: FakeClock) -> None:
    """A cold-start placeholder carries the time it was first shown, not the epoch."""
    github = ScriptedAdapter("github", hang_on())
    async with make_service(clock, github) as service, anyio.create_task_group() as tg:
        results: list[Any] = []

        async def ask() -> None:
            results.append(await service.status("p", OWNER))

        tg.start_soon(ask)
        await settle()
        clock.advance(0.45)
        await settle()
        tg.cancel_scope.cancel()
    github_item = next(i for i in results[0].envelope.items if i.key == "github")
    assert github_item.updated_at.year >= 2025


async def test_a_cold_start_spends_the_deadline_once(clock: FakeClock) -> None:
    """While a cold provider's first refresh still runs, later requests get its placeholder at once instead of
    waiting for the same refresh again."""
    github = ScriptedAdapter("github", hang_on())
    async with make_service(clock, github) as service, anyio.create_task_group() as tg:
        results: list[dict[str, dict[str, object]]] = []

        async def ask() -> None:
            results.append(await items(service))

        tg.start_soon(ask)
        await settle()
        clock.advance(0.45)
        await settle()
        assert len(results) == 1
        with anyio.fail_after(5):  # real time: the FakeClock does not move, so any wait would hang
            again = await items(service)
        assert (again["github"]["status"], again["github"]["stale"]) == ("warning", True)
        assert github.calls == 1
        clock.advance(2.5)


async def test_a_known_value_is_served_at_once_while_the_provider_hangs(clock: FakeClock) -> None:
    """A provider with a last good value that hangs on its refresh never makes a request wait: the value as it
    is while the refresh is younger than the deadline, then stale, then stale with the timeout problem."""
    github = ScriptedAdapter("github", snapshot("github", text="good"), hang_on())
    async with make_service(clock, github) as service:
        await items(service)
        clock.advance(20)
        with anyio.fail_after(5):  # real time: the FakeClock does not move, so any wait would hang
            just_expired = await items(service)
            await settle()  # the refresh it started is running (and hanging)
            clock.advance(0.5)
            overdue = await items(service)
            clock.advance(2.5)
            await settle()
            failed = await items(service)
    assert (just_expired["github"]["summary"], "stale" in just_expired["github"]) == ("good", False)
    assert (overdue["github"]["summary"], overdue["github"]["stale"]) == ("good", True)
    assert "problem" not in overdue["github"]
    assert (failed["github"]["summary"], failed["github"]["stale"]) == ("good", True)
    assert failed["github"]["problem"] == {"code": "timeout", "hint": "Try again"}
    assert github.calls >= 2
