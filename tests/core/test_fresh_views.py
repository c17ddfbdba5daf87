"""The per-process fast path of status: fresh views reused without store reads (process-local stores only),
and everything that must end the reuse: writes, invalidation, expiry, store failures."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from integration_status.backends.memory import MemoryCacheStore, MemoryEngine
from integration_status.core.cache import SnapshotCache
from integration_status.exceptions import BackendUnavailable, ProviderUnavailable
from integration_status.protocols import CacheEntry, Secret, Viewer
from integration_status.service import Settings, StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.service.webhooks import WebhookTarget, sign_github
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections, snapshot

pytestmark = pytest.mark.anyio
OWNER = Viewer(user_id="u", roles={"owner"})
LINKED = ("github", "vercel", "sanity", "supabase")


class CountingStore(MemoryCacheStore):
    """The memory store, counting loads; ``shared`` may be overridden to stand for a store other workers
    write (Redis); ``down`` makes every load fail like an unreachable store."""

    def __init__(self, *, clock: FakeClock, shared: bool = False) -> None:
        super().__init__(clock=clock)
        self.shared = shared  # type: ignore[misc]
        self.loads = 0
        self.down = False

    async def load(self, key: str) -> CacheEntry | None:
        self.loads += 1
        if self.down:
            raise BackendUnavailable("cache store down")
        return await super().load(key)


def make_service(clock: FakeClock, store: MemoryCacheStore, **adapters: Any) -> StatusService:
    engine = MemoryEngine(clock=clock)
    engine.cache_store = store
    scripted = [adapters.get(p) or ScriptedAdapter(p, snapshot(p)) for p in LINKED]
    return StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", *LINKED),
        adapters=scripted,
        engine=engine,
        clock=clock,
        settings=Settings(cache_ttl=15.0, cache_jitter=0.0),
        webhooks=_resolve,
    )


async def _resolve(provider: str, headers: Any, body: Any) -> WebhookTarget | None:
    return WebhookTarget(project_id="p", secret=Secret("whsec-test"))


async def github_text(service: StatusService) -> str:
    result = await service.status("p", OWNER)
    return next(str(i.summary) for i in result.envelope.items if i.key == "github")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_memory_store_is_local_and_redis_store_is_shared() -> None:
    """The memory store declares itself process-local, the Redis store shared; others count as shared."""
    from integration_status.backends._redis_stores import RedisCacheStore

    clock = FakeClock()
    assert MemoryCacheStore.shared is False
    assert RedisCacheStore.shared is True
    assert SnapshotCache(MemoryCacheStore(clock=clock), clock=clock).local is True

    class Unknown(MemoryCacheStore):
        shared = True  # type: ignore[misc]

    assert SnapshotCache(Unknown(clock=clock), clock=clock).local is False


async def test_fresh_views_are_reused_without_store_reads(clock: FakeClock) -> None:
    """While every entry is fresh, status neither reads the local store nor calls a provider."""
    store = CountingStore(clock=clock)
    github = ScriptedAdapter("github", snapshot("github", text="one"))
    async with make_service(clock, store, github=github) as service:
        first = await service.status("p", OWNER)
        await service.status("p", OWNER)  # fills the reuse from four fresh reads
        loads = store.loads
        clock.advance(10)
        again = await service.status("p", OWNER)
    assert store.loads == loads
    assert github.calls == 1
    assert again.envelope.items == first.envelope.items


async def test_shared_store_is_read_on_every_request(clock: FakeClock) -> None:
    """A shared store (other workers write it) is read for all four providers on every status request, and
    an entry another worker wrote is served at once."""
    store = CountingStore(clock=clock, shared=True)
    async with make_service(clock, store) as service:
        await service.status("p", OWNER)
        loads = store.loads
        await service.status("p", OWNER)
        await service.status("p", OWNER)
        assert store.loads == loads + 8
        entry = await store.load("p:github")
        assert entry is not None
        other = snapshot("github", text="from another worker")
        await super(CountingStore, store).save("p:github", _with(entry, other), keep_for=60)
        assert await github_text(service) == "from another worker"


def _with(entry: CacheEntry, snap: Any) -> CacheEntry:
    import attrs

    return attrs.evolve(entry, snapshot=snap)


async def test_write_to_the_local_store_ends_reuse(clock: FakeClock) -> None:
    """A save straight into the local store (not through the cache) is visible on the next status."""
    store = CountingStore(clock=clock)
    async with make_service(clock, store) as service:
        await service.status("p", OWNER)
        await service.status("p", OWNER)
        entry = await store.load("p:github")
        assert entry is not None
        await store.save("p:github", _with(entry, snapshot("github", text="written")), keep_for=60)
        assert await github_text(service) == "written"


async def test_invalidation_is_visible_on_the_next_status(clock: FakeClock) -> None:
    """refresh_provider (what actions and webhooks call) invalidates a fresh entry: the next status shows the
    new provider state, well before the TTL."""
    store = CountingStore(clock=clock)
    github = ScriptedAdapter("github", snapshot("github", text="before"), snapshot("github", text="after"))
    async with make_service(clock, store, github=github) as service:
        assert await github_text(service) == "before"
        assert await github_text(service) == "before"
        await service.refresh_provider("p", "github")
        assert await github_text(service) == "after"
    assert github.calls == 2


async def test_webhook_invalidation_is_visible_on_the_next_status(clock: FakeClock) -> None:
    """A signed push webhook refreshes github in the background; the next status has the new state."""
    store = CountingStore(clock=clock)
    github = ScriptedAdapter("github", snapshot("github", text="before"), snapshot("github", text="pushed"))
    payload = {"ref": "refs/heads/main", "after": "0" * 40, "repository": {"full_name": "o/r"}}
    body = json.dumps(payload).encode()
    headers = {"x-github-event": "push", "x-github-delivery": "d-1", **sign_github("whsec-test", body)}
    async with make_service(clock, store, github=github) as service:
        await github_text(service)
        assert await github_text(service) == "before"
        result = await service.ingest_webhook("github", headers, body)
        assert result.status == 200
        await anyio.wait_all_tasks_blocked()
        assert await github_text(service) == "pushed"


async def test_expiry_of_one_entry_triggers_its_refresh(clock: FakeClock) -> None:
    """Reuse ends when the first entry stops being fresh: the next status starts that provider's refresh
    (answered from the last value meanwhile), and the status after shows its result."""
    store = CountingStore(clock=clock)
    github = ScriptedAdapter("github", snapshot("github", text="one"), snapshot("github", text="two"))
    async with make_service(clock, store, github=github) as service:
        assert await github_text(service) == "one"
        assert await github_text(service) == "one"
        clock.advance(14.9)
        assert await github_text(service) == "one"
        clock.advance(0.2)
        assert await github_text(service) == "one"
        await anyio.wait_all_tasks_blocked()
        got = await service.status("p", OWNER)
    item = next(i for i in got.envelope.items if i.key == "github")
    assert (str(item.summary), item.stale) == ("two", False)
    assert github.calls == 2


async def test_unreachable_store_ends_reuse_and_serves_the_local_copy(clock: FakeClock) -> None:
    """A read that falls back to the local copy moves the generation; status still answers from the copy."""
    store = CountingStore(clock=clock)
    async with make_service(clock, store) as service:
        await service.status("p", OWNER)
        before = service.cache.generation
        store.down = True
        assert await service.cache.peek("p:github") is not None
        assert service.cache.generation > before
        result = await service.status("p", OWNER)
    assert [i.status for i in result.envelope.items] == ["connected"] * 4


async def test_viewers_with_other_roles_get_their_own_envelopes(clock: FakeClock) -> None:
    """Alternating viewers of one project each get their own redaction and ETag from the reused views."""
    store = CountingStore(clock=clock)
    member = Viewer(user_id="m", roles={"member"})
    async with make_service(clock, store) as service:
        answers = [await service.status("p", v) for v in (OWNER, member, OWNER, member)]
    assert answers[0].etag == answers[2].etag != answers[1].etag == answers[3].etag
    assert answers[0].envelope != answers[1].envelope
    owner_actions = {a.id for i in answers[0].envelope.items for a in i.actions}
    member_actions = {a.id for i in answers[1].envelope.items for a in i.actions}
    assert member_actions < owner_actions


# --- providers known but not fresh: the judged views are reused too ----------------------------------------


def _answers_after(clock: FakeClock, seconds: float, snap: Any) -> Any:
    async def step() -> Any:
        await clock.sleep(seconds)
        return snap

    return step


def _github(result: Any) -> Any:
    return next(i for i in result.envelope.items if i.key == "github")


async def _settle(service: StatusService) -> None:
    await anyio.wait_all_tasks_blocked()


def _lasting() -> dict[str, Any]:
    """The three other providers, fresh for an hour: only github's state moves."""
    return {p: ScriptedAdapter(p, snapshot(p, fresh_for=3600.0)) for p in ("vercel", "sanity", "supabase")}


async def test_views_are_reused_while_a_refresh_runs_until_it_is_overdue_or_done(clock: FakeClock) -> None:
    """An expired entry whose refresh runs: its last value is served, and the judged views reused without
    store reads; once the refresh is past the deadline the value turns stale (a time step ends the reuse),
    and the refresh's new content shows as soon as it is stored (a content change ends it)."""
    store = CountingStore(clock=clock)
    github = ScriptedAdapter(
        "github",
        snapshot("github", text="one"),
        _answers_after(clock, 2.0, snapshot("github", text="two")),  # within the adapter timeout
    )
    async with make_service(clock, store, github=github) as service:
        assert await github_text(service) == "one"
        clock.advance(15.1)  # every entry expired: the next status starts four refreshes, github's is slow
        await service.status("p", OWNER)
        await _settle(service)  # the three quick ones are stored
        judged = await service.status("p", OWNER)
        loads = store.loads
        again = await service.status("p", OWNER, if_none_match=judged.etag)
        assert store.loads == loads  # reused: nothing read, nothing judged again
        assert again.not_modified
        assert (str(_github(again).summary), _github(again).stale) == ("one", False)

        clock.advance(service.settings.deadline + 0.01)  # the running refresh is overdue now
        overdue = await service.status("p", OWNER, if_none_match=judged.etag)
        assert store.loads > loads
        assert (str(_github(overdue).summary), _github(overdue).stale) == ("one", True)
        assert not overdue.not_modified
        assert overdue.etag != judged.etag
        loads = store.loads
        assert (await service.status("p", OWNER, if_none_match=overdue.etag)).not_modified
        assert store.loads == loads

        clock.advance(2.0 - service.settings.deadline)  # the refresh answers and is stored
        await _settle(service)
        done = await service.status("p", OWNER, if_none_match=overdue.etag)
    assert (str(_github(done).summary), _github(done).stale) == ("two", False)
    assert not done.not_modified
    assert github.calls == 2


async def test_an_open_breaker_is_asked_again_when_it_would_let_a_probe_through(clock: FakeClock) -> None:
    """With the breaker open, the stale views are reused (304s, no store reads, no calls) only until the
    breaker would let a probe through: the first request after that, a 304 too, starts the probe."""
    store = CountingStore(clock=clock)
    down = ProviderUnavailable("down", provider="github")
    github = ScriptedAdapter("github", snapshot("github", text="one"), down)
    async with make_service(clock, store, github=github, **_lasting()) as service:
        await service.status("p", OWNER)
        clock.advance(15.1)
        breaker = service.aggregator.breaker("p:github")
        while breaker.state != "open":  # each status starts one failing refresh until the breaker opens
            await service.status("p", OWNER)
            await _settle(service)
        calls = github.calls
        first = await service.status("p", OWNER)
        assert _github(first).stale
        assert _github(first).problem is not None
        loads = store.loads
        retry = breaker.retry_at()
        assert retry is not None
        clock.advance(retry - clock.monotonic() - 0.01)
        for _ in range(3):
            assert (await service.status("p", OWNER, if_none_match=first.etag)).not_modified
        assert (store.loads, github.calls) == (loads, calls)

        clock.advance(0.02)  # the breaker lets a probe through now
        probed = await service.status("p", OWNER, if_none_match=first.etag)
        await _settle(service)
    assert probed.not_modified  # answered from the last value while the probe runs
    assert github.calls == calls + 1


async def test_relative_times_step_while_views_are_reused(clock: FakeClock) -> None:
    """Reused views are rendered again as the clock moves: "just now" becomes "2m ago" and the ETag with it,
    while the breaker keeps github stale and the views reused."""
    from datetime import timedelta

    from integration_status.core.clock import utcnow
    from integration_status.snapshot import Ago, ProviderSnapshot, Segment

    pushed = ProviderSnapshot(
        provider="github",
        status="connected",
        summary=(Segment(pieces=("Last push ", Ago(at=utcnow(clock) - timedelta(seconds=100)))),),
    )
    store = CountingStore(clock=clock)
    github = ScriptedAdapter("github", pushed, ProviderUnavailable("down", provider="github"))
    async with make_service(clock, store, github=github, **_lasting()) as service:
        await service.status("p", OWNER)
        clock.advance(15.1)
        while service.aggregator.breaker("p:github").state != "open":
            await service.status("p", OWNER)
            await _settle(service)
        before = await service.status("p", OWNER)
        assert str(_github(before).summary) == "Last push just now"
        loads = store.loads
        clock.advance(5.0)  # two minutes after the push; well within the breaker's open_for
        after = await service.status("p", OWNER, if_none_match=before.etag)
        assert store.loads == loads  # still the reused views
    assert str(_github(after).summary) == "Last push 2m ago"
    assert not after.not_modified
    assert after.etag != before.etag


async def test_a_304_is_per_viewer_class_while_views_are_reused(clock: FakeClock) -> None:
    """Reused views are shared by viewers, their renderings are not: a member sending the owner's tag gets
    the member's envelope (200), and its own tag a 304; owner and member redact differently."""
    store = CountingStore(clock=clock)
    member = Viewer(user_id="m", roles={"member"})
    other_owner = Viewer(user_id="o2", roles={"owner"})
    github = ScriptedAdapter("github", snapshot("github"), _answers_after(clock, 60.0, snapshot("github")))
    async with make_service(clock, store, github=github) as service:
        await service.status("p", OWNER)
        clock.advance(15.1)
        await service.status("p", OWNER)
        await _settle(service)
        owner = await service.status("p", OWNER)
        loads = store.loads
        crossed = await service.status("p", member, if_none_match=owner.etag)
        own = await service.status("p", member, if_none_match=crossed.etag)
        same_class = await service.status("p", other_owner, if_none_match=owner.etag)
        assert store.loads == loads
    assert not crossed.not_modified
    assert crossed.etag != owner.etag
    assert crossed.envelope != owner.envelope
    assert own.not_modified
    assert same_class.not_modified


async def test_a_refresh_that_ends_without_storing_anything_ends_the_reuse(clock: FakeClock) -> None:
    """A provider that never answered has no entry to store a failure on: its refresh ends without a write.
    The views judged while it ran are not reused after it: the next status starts the next refresh."""
    store = CountingStore(clock=clock)
    github = ScriptedAdapter("github", ProviderUnavailable("down", provider="github"))
    async with make_service(clock, store, github=github, **_lasting()) as service:
        await service.status("p", OWNER)  # cold: the first failure
        await _settle(service)
        generation = service.cache.generation
        await service.status("p", OWNER)  # a known failure: its next refresh starts in the background
        await _settle(service)  # ... and fails, storing nothing
        assert github.calls == 2
        assert service.cache.generation == generation
        failed = await service.status("p", OWNER)
        await _settle(service)
    assert _github(failed).status == "error"
    assert github.calls == 3
