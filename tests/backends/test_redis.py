"""The Redis cache, idempotency, rate-limit and delivery stores against the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from integration_status.backends._redis_stores import IDEM_BUCKETS, idem_bucket
from integration_status.backends.redis import RedisEngine
from integration_status.models import Problem
from integration_status.protocols import (
    BeginResult,
    CacheEntry,
    CacheStore,
    IdempotencyStore,
    RateDecision,
    RateLimiter,
    StoredResponse,
)
from integration_status.snapshot import ActionState, Ago, ProviderSnapshot, Segment, Sensitive
from integration_status.testing import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def _snapshot() -> ProviderSnapshot:
    return ProviderSnapshot(
        provider="github",
        status="warning",
        summary=(
            Segment(
                pieces=(
                    "Linked to ",
                    Sensitive(kind="repo", value="acme/web"),
                    "@",
                    Sensitive(kind="branch", value="main"),
                ),
                redacted="Linked",
            ),
            Segment(pieces=("Last push ", Ago(at=datetime(2025, 11, 26, 5, 58, 12, 345000, tzinfo=UTC)))),
            Segment(pieces=("Commit ", Sensitive(kind="sha", value="4f2a9c1"))),
        ),
        problem=Problem(code="rate_limited", hint="Retry in 42s"),
        actions=(ActionState(id="push", label="Push", available=False, reason="Rate limited"),),
        details={
            "headSha": Sensitive(kind="sha", value="4f2a9c1d0e"),
            "pushedAt": Ago(at=datetime(2025, 11, 26, 5, 58, tzinfo=UTC)),
            "openPulls": 3,
            "labels": ["ci", "prod"],
        },
    )


async def test_cache_round_trips_a_realistic_entry(redis_engine: RedisEngine) -> None:
    """A snapshot with sensitive and relative-time pieces, a problem and details loads back equal."""
    entry = CacheEntry(
        snapshot=_snapshot(),
        fresh_until=1_764_136_830.5,
        changed_at=datetime(2025, 11, 26, 5, 59, 1, 123456, tzinfo=UTC),
        checked_at=1_764_136_800.25,
        error=Problem(code="timeout", hint="Try again"),
        error_at=1_764_136_801.0,
    )
    store: CacheStore = redis_engine.cache_store
    await store.save("proj-1:github", entry, keep_for=600)
    assert await store.load("proj-1:github") == entry


async def test_cache_entry_without_error_round_trips(redis_engine: RedisEngine) -> None:
    """An entry whose last refresh succeeded keeps error and error_at as None."""
    entry = CacheEntry(
        snapshot=ProviderSnapshot(provider="vercel", status="connected"),
        fresh_until=1.0,
        changed_at=datetime(2025, 1, 1, tzinfo=UTC),
        checked_at=0.5,
    )
    await redis_engine.cache_store.save("k", entry, keep_for=60)
    loaded = await redis_engine.cache_store.load("k")
    assert loaded == entry
    assert loaded is not None
    assert loaded.error is None
    assert loaded.error_at is None


async def test_cache_key_layout_and_expiry(redis_engine: RedisEngine, redis_raw: Any) -> None:
    """Entries live at {prefix}:cache:{<project>}:<provider> (one hash tag per project) and expire after
    keep_for (PX)."""
    entry = CacheEntry(
        snapshot=ProviderSnapshot(provider="sanity", status="disconnected"),
        fresh_until=1.0,
        changed_at=datetime(2025, 1, 1, tzinfo=UTC),
        checked_at=0.5,
    )
    await redis_engine.cache_store.save("p:sanity", entry, keep_for=90)
    ttl = await redis_raw.pttl(f"{redis_engine.prefix}:cache:{{p}}:sanity")
    assert 89_000 < ttl <= 90_000


async def test_cache_load_missing_and_delete(redis_engine: RedisEngine) -> None:
    """A missing key loads as None; delete removes a saved entry."""
    store = redis_engine.cache_store
    assert await store.load("nope") is None
    entry = CacheEntry(
        snapshot=ProviderSnapshot(provider="supabase", status="error"),
        fresh_until=1.0,
        changed_at=datetime(2025, 1, 1, tzinfo=UTC),
        checked_at=0.5,
    )
    await store.save("x", entry, keep_for=60)
    await store.delete("x")
    assert await store.load("x") is None


async def test_cache_unreadable_entry_is_a_miss(redis_engine: RedisEngine, redis_raw: Any) -> None:
    """Garbage or a foreign shape under a cache key loads as None instead of raising."""
    await redis_raw.set(f"{redis_engine.prefix}:cache:{{bad}}", "{not json")
    await redis_raw.set(f"{redis_engine.prefix}:cache:{{odd}}", '{"v": 1}')
    assert await redis_engine.cache_store.load("bad") is None
    assert await redis_engine.cache_store.load("odd") is None


async def test_cache_is_shared_between_workers(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine
) -> None:
    """What one worker saves, another loads."""
    entry = CacheEntry(
        snapshot=_snapshot(), fresh_until=5.0, changed_at=datetime(2025, 1, 1, tzinfo=UTC), checked_at=1.0
    )
    await redis_engine.cache_store.save("shared", entry, keep_for=60)
    assert await redis_engine_b.cache_store.load("shared") == entry


async def test_prefixes_namespace_apps(redis_engine: RedisEngine, redis_engines: Any) -> None:
    """An engine with another prefix on the same Redis sees none of the first engine's data."""
    other = await redis_engines(prefix=f"{redis_engine.prefix}:other-app")
    entry = CacheEntry(
        snapshot=_snapshot(), fresh_until=5.0, changed_at=datetime(2025, 1, 1, tzinfo=UTC), checked_at=1.0
    )
    await redis_engine.cache_store.save("k", entry, keep_for=60)
    assert await other.cache_store.load("k") is None
    assert await other.cache_store.try_lock("k", 5) is not None
    assert await redis_engine.cache_store.try_lock("k", 5) is not None


async def test_lock_is_exclusive_across_workers(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine, redis_raw: Any
) -> None:
    """Exactly one of many concurrent try_lock calls on two engines gets a token; the lock has the TTL."""
    tokens: list[str | None] = []

    async def take(engine: RedisEngine) -> None:
        tokens.append(await engine.cache_store.try_lock("p:github", 7.5))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(take, redis_engine if i % 2 else redis_engine_b)
    winners = [t for t in tokens if t is not None]
    assert len(winners) == 1
    assert 7_000 < await redis_raw.pttl(f"{redis_engine.prefix}:lock:{{p}}:github") <= 7_500


async def test_only_the_owner_unlocks(redis_engine: RedisEngine, redis_engine_b: RedisEngine) -> None:
    """unlock with a wrong token leaves the lock held; the owner's token releases it."""
    token = await redis_engine.cache_store.try_lock("k", 30)
    assert token is not None
    await redis_engine_b.cache_store.unlock("k", "not-the-token")
    assert await redis_engine_b.cache_store.try_lock("k", 30) is None
    await redis_engine.cache_store.unlock("k", token)
    assert await redis_engine_b.cache_store.try_lock("k", 30) is not None


# --- idempotency --------------------------------------------------------------------------------------------


async def test_idempotency_lifecycle(redis_engine: RedisEngine, redis_engine_b: RedisEngine) -> None:
    """started -> in_flight (same request) / mismatch (other request) -> complete -> replay / mismatch."""
    a: IdempotencyStore = redis_engine.idempotency
    b: IdempotencyStore = redis_engine_b.idempotency
    first = await a.begin("u:p:key", "fp-1", lease=30, keep_for=86_400)
    assert first.state == "started"
    assert first.token
    assert await b.begin("u:p:key", "fp-1", lease=30, keep_for=86_400) == BeginResult(state="in_flight")
    assert await b.begin("u:p:key", "fp-2", lease=30, keep_for=86_400) == BeginResult(state="mismatch")
    response = StoredResponse(
        status=202,
        body={"success": True, "operationId": "op_1", "n": [1, 2]},
        headers={"X-Operation": "op_1"},
    )
    await a.complete("u:p:key", first.token, response, keep_for=86_400)
    replay = await b.begin("u:p:key", "fp-1", lease=30, keep_for=86_400)
    assert replay == BeginResult(state="replay", response=response)
    assert replay.response is not None
    assert dict(replay.response.body) == dict(response.body)
    assert dict(replay.response.headers) == {"X-Operation": "op_1"}
    assert await b.begin("u:p:key", "fp-2", lease=30, keep_for=86_400) == BeginResult(state="mismatch")


async def test_idempotency_key_layout_and_ttls(redis_engine: RedisEngine, redis_raw: Any) -> None:
    """One hash per key at {prefix}:idem:{b<NN>}:<key>, kept `keep_for`; the lease is a time inside it and is
    gone once done; a checkpointed lease is in its bucket's index {prefix}:idem:{b<NN>}:leases until it ends."""
    prefix = redis_engine.prefix
    bucket = idem_bucket("k")
    record_key, index_key = f"{prefix}:idem:{{{bucket}}}:k", f"{prefix}:idem:{{{bucket}}}:leases"
    started = await redis_engine.idempotency.begin("k", "fp", lease=12, keep_for=3600)
    record = await redis_raw.hgetall(record_key)
    assert record["state"] == "run"
    assert "cp" not in record
    assert started.token is not None
    assert await redis_raw.zscore(index_key, "k") is None  # not started yet: nothing a dead worker leaves
    assert await redis_engine.idempotency.checkpoint("k", started.token, {"at": 1}, lease=12)
    checkpointed = await redis_raw.hgetall(record_key)
    assert await redis_raw.zscore(index_key, "k") == float(checkpointed["until"])
    await redis_engine.idempotency.complete(
        "k", started.token, StoredResponse(status=200, body={}), keep_for=3600
    )
    record = await redis_raw.hgetall(record_key)
    assert record["state"] == "done"
    assert "until" not in record
    assert "token" not in record
    assert await redis_raw.zscore(index_key, "k") is None
    assert 3_599_000 < await redis_raw.pttl(record_key) <= 3_600_000
    assert await redis_raw.exists(f"{prefix}:idem:k", f"{prefix}:idem:leases") == 0  # the old layout: unused


def test_idempotency_buckets_are_stable_and_spread() -> None:
    """The bucket comes from a stable hash of the key (every worker agrees), and keys spread over all of them."""
    assert idem_bucket("u1:p:k1") == idem_bucket("u1:p:k1") == "b01"
    buckets = {idem_bucket(f"u1:p:key-{n}") for n in range(400)}
    assert buckets == {f"b{n:02d}" for n in range(IDEM_BUCKETS)}


async def test_release_lets_the_key_start_again(redis_engine: RedisEngine) -> None:
    """After release by the holder a new begin starts; a release with a wrong token does nothing."""
    store = redis_engine.idempotency
    first = await store.begin("k", "fp", lease=30, keep_for=60)
    assert first.token is not None
    await store.release("k", "someone-else")
    assert (await store.begin("k", "fp", lease=30, keep_for=60)).state == "in_flight"
    await store.release("k", first.token)
    second = await store.begin("k", "fp", lease=30, keep_for=60)
    assert second.state == "started"
    assert second.token != first.token


async def test_expired_lease_is_taken_over_and_old_holder_cannot_complete(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine, redis_clock: FakeClock
) -> None:
    """A crashed worker's lease runs out: a new begin starts and the old holder's late complete is ignored."""
    crashed = await redis_engine.idempotency.begin("k", "fp", lease=30, keep_for=60)
    assert crashed.token is not None
    redis_clock.advance(30)
    takeover = await redis_engine_b.idempotency.begin("k", "fp", lease=30, keep_for=60)
    assert takeover.state == "started"
    assert takeover.token is not None
    await redis_engine.idempotency.complete(
        "k", crashed.token, StoredResponse(status=500, body={"late": True}), keep_for=60
    )
    assert (await redis_engine.idempotency.begin("k", "fp", lease=30, keep_for=60)).state == "in_flight"
    await redis_engine_b.idempotency.complete(
        "k", takeover.token, StoredResponse(status=200, body={"ok": 1}), keep_for=60
    )
    replay = await redis_engine.idempotency.begin("k", "fp", lease=30, keep_for=60)
    assert replay.response == StoredResponse(status=200, body={"ok": 1})


async def test_fifty_concurrent_begins_start_exactly_once(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine
) -> None:
    """The same key begun 50 times at once across two workers: one started, 49 in flight."""
    results: list[BeginResult] = []

    async def begin(engine: RedisEngine) -> None:
        results.append(await engine.idempotency.begin("u1:p1:same", "fp", lease=30, keep_for=60))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(begin, redis_engine if i % 2 else redis_engine_b)
    states = sorted(r.state for r in results)
    assert states.count("started") == 1
    assert states.count("in_flight") == 49


# --- rate limiting ------------------------------------------------------------------------------------------


async def test_rate_limit_sliding_window(redis_engine: RedisEngine, redis_clock: FakeClock) -> None:
    """5 per minute: the 6th is refused until the oldest hit leaves the window; remaining counts down."""
    limiter: RateLimiter = redis_engine.rate_limiter
    decisions = []
    for _ in range(5):
        decisions.append(await limiter.hit("u:p", limit=5, window=60))
        redis_clock.advance(10)
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.allowed and d.retry_after == 0 for d in decisions)
    assert decisions[0].reset == decisions[4].reset == 60
    # now = t0 + 50; hits at t0 .. t0 + 40
    refused = await limiter.hit("u:p", limit=5, window=60)
    assert refused == RateDecision(allowed=False, limit=5, remaining=0, retry_after=10.0, reset=50.0)
    redis_clock.advance(9.5)
    assert (await limiter.hit("u:p", limit=5, window=60)).retry_after == 0.5
    redis_clock.advance(0.5)  # the first hit is exactly one window old: out
    again = await limiter.hit("u:p", limit=5, window=60)
    assert again.allowed
    assert again.remaining == 0
    refused = await limiter.hit("u:p", limit=5, window=60)
    assert not refused.allowed
    assert refused.retry_after == 10.0


async def test_rate_limit_keys_are_independent(redis_engine: RedisEngine) -> None:
    """Another key has its own budget."""
    for _ in range(2):
        await redis_engine.rate_limiter.hit("a", limit=2, window=60)
    assert not (await redis_engine.rate_limiter.hit("a", limit=2, window=60)).allowed
    assert (await redis_engine.rate_limiter.hit("b", limit=2, window=60)).allowed


async def test_rate_limit_key_expires_with_the_window(redis_engine: RedisEngine, redis_raw: Any) -> None:
    """The sorted set {prefix}:rl:{key} expires one window after its newest hit."""
    await redis_engine.rate_limiter.hit("u:p", limit=5, window=60)
    assert 59_000 < await redis_raw.pttl(f"{redis_engine.prefix}:rl:u:p") <= 60_000


async def test_fifty_concurrent_hits_admit_exactly_the_limit(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine
) -> None:
    """50 hits at once across two workers admit exactly 5; the refused ones wait one full window."""
    decisions: list[RateDecision] = []

    async def hit(engine: RedisEngine) -> None:
        decisions.append(await engine.rate_limiter.hit("u1:p1", limit=5, window=60))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(hit, redis_engine if i % 2 else redis_engine_b)
    assert sum(d.allowed for d in decisions) == 5
    assert all(d.retry_after == 60 and d.remaining == 0 for d in decisions if not d.allowed)
    assert sorted(d.remaining for d in decisions if d.allowed) == [0, 1, 2, 3, 4]


async def test_rate_limit_rejects_nonsense_limits(redis_engine: RedisEngine) -> None:
    """limit < 1 or window <= 0 is a programming error, not a refusal."""
    with pytest.raises(ValueError, match="limit"):
        await redis_engine.rate_limiter.hit("k", limit=0, window=60)
    with pytest.raises(ValueError, match="window"):
        await redis_engine.rate_limiter.hit("k", limit=1, window=0)


# --- webhook deliveries -------------------------------------------------------------------------------------


async def test_delivery_seen_once(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine, redis_raw: Any
) -> None:
    """A delivery id is new once across workers; the marker expires after ttl."""
    assert await redis_engine.deliveries.first_seen("gh-123", 3600) is True
    assert await redis_engine_b.deliveries.first_seen("gh-123", 3600) is False
    assert await redis_engine_b.deliveries.first_seen("gh-124", 3600) is True
    assert 3_599_000 < await redis_raw.pttl(f"{redis_engine.prefix}:delivery:gh-123") <= 3_600_000


async def test_a_deliverys_ids_are_recorded_in_order_until_one_is_known(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine, redis_raw: Any
) -> None:
    """first_seen_all records the ids in order while each is new and stops at the first one remembered,
    leaving it and the rest as they were; each recorded id lives for the ttl, for every worker."""
    log, other = redis_engine.deliveries, redis_engine_b.deliveries
    key = f"{redis_engine.prefix}:delivery:".__add__
    assert await log.first_seen_all(["content-1", "id-1"], 3600) == 2
    assert await other.first_seen_all(["content-1", "id-2"], 3600) == 0  # a replay: nothing written
    assert await redis_raw.exists(key("id-2")) == 0
    assert await other.first_seen_all(["content-2", "id-1", "id-3"], 3600) == 1  # a re-signed retry
    assert await redis_raw.exists(key("content-2")) == 1
    assert await redis_raw.exists(key("id-3")) == 0
    assert 3_599_000 < await redis_raw.pttl(key("content-2")) <= 3_600_000
    assert await log.first_seen_all(["content-3"], 60) == 1
    assert await log.first_seen_all([], 60) == 0


@pytest.mark.redis_single
async def test_a_deliverys_ids_take_one_round_trip(redis_engine: RedisEngine, redis_raw: Any) -> None:
    """On a single Redis the ids of a delivery are checked and recorded by one script call."""

    async def scripts() -> int:
        stats = await redis_raw.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))

    await redis_engine.deliveries.first_seen_all(["warm-1", "warm-2"], 60)  # the script is loaded
    before = await scripts()
    assert await redis_engine.deliveries.first_seen_all(["a", "b", "c"], 60) == 3
    assert await scripts() - before == 1


async def test_a_forgotten_delivery_is_new_again(
    redis_engine: RedisEngine, redis_engine_b: RedisEngine
) -> None:
    """forget drops a delivery id for every worker: the provider's retry counts as new."""
    assert await redis_engine.deliveries.first_seen("gh-9", 3600) is True
    await redis_engine.deliveries.forget("gh-9")
    assert await redis_engine_b.deliveries.first_seen("gh-9", 3600) is True
