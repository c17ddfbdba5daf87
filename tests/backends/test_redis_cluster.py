"""The Redis engine on a Redis Cluster (three masters on loopback, see tests/redis_cluster.py): the key layout
keeps every script and multi-key command in one slot, projects spread over the nodes, two workers keep
single-flight and near-cache coherence whichever node holds a project, and node faults fail closed.

Every other Redis engine test runs on the cluster too (see tests/conftest.py); these are about the cluster."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import pytest
import redis.exceptions as rexc
from redis.asyncio.cluster import ClusterNode

from integration_status.backends._redis_stores import IDEM_BUCKETS
from integration_status.backends.redis import RedisEngine
from integration_status.core.cache import POLL_INTERVAL, SnapshotCache
from integration_status.exceptions import BackendUnavailable, ConfigurationError
from integration_status.protocols import CacheEntry
from integration_status.testing import FakeClock, snapshot
from tests.backends.conftest import until_store
from tests.polling import WITHIN
from tests.redis_cluster import LocalCluster
from tests.services import require_redis

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.redis_cluster_only]

PROVIDERS = ("github", "vercel", "sanity", "supabase")


def entry(clock: FakeClock, text: str) -> CacheEntry:
    now = clock.time()
    return CacheEntry(
        snapshot=snapshot("github", text=text),
        fresh_until=now + 15,
        changed_at=datetime(2025, 1, 1, tzinfo=UTC),
        checked_at=now,
    )


async def projects_by_node(raw: Any, prefix: str, wanted: int = 40) -> dict[str, list[str]]:
    """Project ids grouped by the node that holds their slot (node name -> projects)."""
    await raw.initialize()
    found: dict[str, list[str]] = {}
    for n in range(wanted):
        project = f"proj_{n}"
        node = raw.get_node_from_key(f"{prefix}:cache:{{{project}}}:github").name
        found.setdefault(node, []).append(project)
    return found


async def test_one_projects_keys_share_a_slot_and_projects_spread_over_the_nodes(
    redis_engine: RedisEngine, redis_raw: Any, redis_clock: FakeClock
) -> None:
    """Everything the engine writes for one project (cache entries, locks, the event stream) lands in one
    slot; the projects' slots are on every node; each idempotency record shares its bucket's slot with the
    bucket's lease index, and the buckets are spread over the nodes too."""
    prefix = redis_engine.prefix
    projects = [f"proj_{n}" for n in range(12)]
    for project in projects:
        for provider in PROVIDERS:
            await redis_engine.cache_store.save(
                f"{project}:{provider}", entry(redis_clock, project), keep_for=60
            )
        assert await redis_engine.cache_store.try_lock(f"{project}:github", 30) is not None
        await redis_engine.events.publish(project, {"type": "status:update"})
        assert len(await redis_engine.cache_store.load_many([f"{project}:{p}" for p in PROVIDERS])) == 4
    keys = [str(k) async for k in redis_raw.scan_iter(match=f"{prefix}:*", count=1000)]
    await redis_raw.initialize()
    nodes: set[str] = set()
    for project in projects:
        mine = [k for k in keys if f"{{{project}}}" in k]
        assert len(mine) == len(PROVIDERS) + 2  # the entries, one lock, the stream
        assert len({redis_raw.keyslot(k) for k in mine}) == 1
        nodes.add(redis_raw.get_node_from_key(mine[0]).name)
    assert len(nodes) == 3

    idem_nodes: set[str] = set()
    for n in range(IDEM_BUCKETS * 4):
        key = f"u1:proj_0:key-{n}"
        started = await redis_engine.idempotency.begin(key, "fp", lease=30, keep_for=60)
        assert started.token is not None
        assert await redis_engine.idempotency.checkpoint(key, started.token, {"n": n}, lease=30)
        record, index = redis_engine.idempotency._keys(key)
        assert redis_raw.keyslot(record) == redis_raw.keyslot(index)
        assert await redis_raw.zscore(index, key) is not None
        idem_nodes.add(redis_raw.get_node_from_key(index).name)
    assert len(idem_nodes) == 3


async def one_fetch(one: RedisEngine, two: RedisEngine, clock: FakeClock, key: str) -> dict[str, int]:
    """Two workers' caches refresh ``key`` at once, the first one's fetch held until the second one waits;
    how often each worker's fetch ran."""
    first, second = SnapshotCache(one.cache_store, clock=clock), SnapshotCache(two.cache_store, clock=clock)
    gate = anyio.Event()
    calls = {"one": 0, "two": 0}
    fetching = anyio.Event()
    results: dict[str, CacheEntry] = {}
    first_done = anyio.Event()

    def fetch(name: str) -> Any:
        async def run() -> Any:
            calls[name] += 1
            fetching.set()
            await gate.wait()
            return snapshot("github", text=name)

        return run

    async def refresh(name: str, cache: SnapshotCache) -> None:
        results[name] = await cache.refresh(key, fetch(name))
        if name == "one":
            first_done.set()

    sleepers = clock.sleepers
    async with anyio.create_task_group() as tg:
        first.start(tg.start_soon)
        second.start(tg.start_soon)
        tg.start_soon(refresh, "one", first)
        with anyio.fail_after(WITHIN):
            await fetching.wait()  # it holds the lock and is fetching
            tg.start_soon(refresh, "two", second)
            await clock.until_sleepers(sleepers + 1, at_least=True)  # it found the lock taken: it polls
            gate.set()
            await first_done.wait()
        clock.advance(POLL_INTERVAL)
    assert results["two"] == results["one"]
    return calls


async def test_two_workers_make_one_fetch_for_a_project_on_any_node(
    redis_engines: Any, redis_raw: Any, redis_clock: FakeClock
) -> None:
    """Two workers (two engines, their own pools) refreshing the same project at once make ONE provider
    call, whichever node holds the project: the second worker waits on the first one's lock."""
    one, two = await redis_engines(), await redis_engines()
    by_node = await projects_by_node(redis_raw, one.prefix)
    assert len(by_node) == 3
    for projects in by_node.values():
        assert await one_fetch(one, two, redis_clock, f"{projects[0]}:github") == {"one": 1, "two": 0}


async def changed_in(store: Any, within: float, write: Any) -> None:
    """Run ``write`` and wait until ``store`` has been told of a change."""
    heard = store.generation
    await write()
    with anyio.fail_after(within):
        await store.wait_changed(heard)


async def test_a_write_on_any_node_reaches_the_other_workers_near_cache(
    redis_engines: Any, redis_raw: Any, redis_clock: FakeClock
) -> None:
    """Invalidations are published from inside the write script on whichever node holds the key; the cluster
    forwards them to every node, so the other worker's listener (subscribed through one node) drops its copy
    for keys on all three nodes, and reads the new value."""
    a, b = await redis_engines(), await redis_engines()
    by_node = await projects_by_node(redis_raw, a.prefix)
    keys = [f"{projects[0]}:github" for projects in by_node.values()]
    assert len(keys) == 3
    for key in keys:
        await a.cache_store.save(key, entry(redis_clock, "old"), keep_for=60)
        assert (await b.cache_store.load(key)) == entry(redis_clock, "old")  # b now holds a copy
    assert a.cache_store.coherent
    assert b.cache_store.coherent
    for key in keys:
        new = entry(redis_clock, "new")
        await changed_in(b.cache_store, 5, partial(a.cache_store.save, key, new, keep_for=60))
        assert (await b.cache_store.load(key)) == new


async def test_losing_the_channel_on_the_cluster_stops_trust_until_it_is_back(
    redis_engine: RedisEngine, redis_raw: Any, redis_clock: FakeClock
) -> None:
    """Every node drops its pub/sub connections: the worker forgets its near copies and stops trusting the
    near cache, then subscribes again (through a node) and trusts it again."""
    store = redis_engine.cache_store
    await store.save("p:github", entry(redis_clock, "one"), keep_for=60)
    assert store.coherent
    assert "p:github" in store._near
    changes = store.generation
    await redis_raw.execute_command("CLIENT KILL", "TYPE", "pubsub", target_nodes=redis_raw.ALL_NODES)
    await until_store(store, lambda: store.generation >= changes + 2 and store.coherent)  # lost, then back
    assert "p:github" not in store._near
    assert (await store.load("p:github")) == entry(redis_clock, "one")


@contextmanager
def paused(cluster: LocalCluster, port: int) -> Iterator[None]:
    """The node on ``port`` stops answering (SIGSTOP) while inside; it resumes (SIGCONT) on the way out."""
    pid = cluster.pid(port)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_a_hung_node_fails_closed_without_rerunning_a_script_and_the_engine_recovers(
    redis_engines: Any, redis_raw: Any, redis_cluster: LocalCluster
) -> None:
    """A node that stops answering: a command for its slots raises BackendUnavailable within the socket
    timeout; the script that timed out (its outcome unknown to the worker) ran exactly once, when the node
    resumed; the cluster clients are built without driver retries (a retry could send such a script again);
    and the same engine works again afterwards, on every node."""
    engine = await redis_engines(socket_timeout=0.3)
    assert engine._s.client.retry.get_retries() == engine._s.reader.retry.get_retries() == 0
    await redis_raw.initialize()
    node_of = {n.name: n.port for n in redis_raw.get_primaries()}
    keys = {}
    for n in range(200):
        key = f"user-{n}:proj"
        keys.setdefault(node_of[redis_raw.get_node_from_key(f"{engine.prefix}:rl:{key}").name], key)
    hung_port = redis_cluster.ports[1]
    hung_key = keys[hung_port]
    other_key = next(key for port, key in keys.items() if port != hung_port)
    assert (
        await engine.rate_limiter.hit(hung_key, limit=100, window=600)
    ).allowed  # the node knows the script
    with (
        paused(redis_cluster, hung_port),
        anyio.fail_after(5),
        pytest.raises(BackendUnavailable, match=r"did not answer|unreachable"),
    ):
        await engine.rate_limiter.hit(hung_key, limit=100, window=600)
    rl_key = f"{engine.prefix}:rl:{hung_key}"
    counted: list[int] = []

    # Answered once the node has worked through what it got while stopped: each try waits on the node itself
    # (a reply, or the client's timeout), so trying again needs no pause.
    with anyio.fail_after(10):
        while not counted:
            with contextlib.suppress(rexc.RedisError):
                counted.append(await redis_raw.zcard(rl_key))
    assert counted == [2]  # the first hit, and the timed-out one, once
    decision = await engine.rate_limiter.hit(hung_key, limit=100, window=600)
    assert decision.allowed
    assert decision.remaining == 97
    assert (await engine.rate_limiter.hit(other_key, limit=100, window=600)).allowed


async def test_the_pool_bound_queues_commands_instead_of_failing(redis_engines: Any) -> None:
    """With pool_size=2, forty concurrent commands all succeed (they wait their turn, as on a single Redis)
    and no node is asked for more than two connections; the bare cluster driver would refuse them."""
    engine = await redis_engines(pool_size=2)
    results = []

    async def hit(n: int) -> None:
        results.append(await engine.deliveries.first_seen(f"d-{n % 3}", 60))

    async with anyio.create_task_group() as tg:
        for n in range(40):
            tg.start_soon(hit, n)
    assert sorted(results) == [False] * 37 + [True] * 3
    client = engine._s.client
    assert max(len(node._connections) for node in client.get_nodes()) <= 2

    node = ClusterNode("127.0.0.1", client.get_default_node().port, max_connections=2)
    node.acquire_connection()
    node.acquire_connection()
    with pytest.raises(rexc.MaxConnectionsError):  # the driver's own pool refuses at once
        node.acquire_connection()


async def test_a_cluster_engine_on_a_plain_redis_is_a_configuration_error(redis_prefix: str) -> None:
    """cluster=True against a Redis that is not in cluster mode: connect() says so, naming host:port."""
    engine = RedisEngine.from_url(require_redis(), cluster=True, prefix=redis_prefix)
    try:
        with pytest.raises(ConfigurationError, match=r"cannot use Redis at 127\.0\.0\.1:6379.*[Cc]luster"):
            await engine.connect()
    finally:
        await engine.aclose()
    # Starting the engine says so too: a node that answers and is not a cluster is not an outage to wait out.
    with pytest.raises(ConfigurationError, match=r"[Cc]luster"):
        async with RedisEngine.from_url(require_redis(), cluster=True, prefix=redis_prefix):
            pass


async def test_a_script_the_node_does_not_know_after_the_drivers_load_is_sent_whole(
    redis_engine: RedisEngine, redis_raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a failover the driver's answer to NOSCRIPT (SCRIPT LOAD on the masters it knows of, then the digest
    again) can miss the replica just promoted: replicas do not get scripts from their master. Here no load
    reaches any node: the engine then sends the script itself (EVAL), which runs it once, and the node knows
    it from then on."""
    limiter = redis_engine.rate_limiter
    assert (await limiter.hit("u1:p", limit=5, window=60)).remaining == 4
    loads: list[str] = []

    async def load_nowhere(script: str) -> str:
        loads.append(script)
        return str(limiter._hit.sha)

    monkeypatch.setattr(redis_engine._s.client, "script_load", load_nowhere)
    await redis_raw.execute_command("SCRIPT FLUSH", target_nodes=redis_raw.ALL_NODES)
    assert (await limiter.hit("u1:p", limit=5, window=60)).remaining == 3  # ran, once
    assert len(loads) == 1
    assert await redis_raw.zcard(f"{redis_engine.prefix}:rl:u1:p") == 2
    node = redis_raw.get_node_from_key(f"{redis_engine.prefix}:rl:u1:p")
    assert await redis_raw.execute_command("SCRIPT EXISTS", limiter._hit.sha, target_nodes=node) == [True]


async def test_closing_the_engine_closes_every_connection_while_the_driver_means_to_relearn_the_layout(
    redis_target: Any, redis_prefix: str
) -> None:
    """A lost connection (in a failover, say) leaves the cluster driver due to learn the layout again, and its
    own aclose() then closes nothing: the engine closes every node's connections anyway, its reader's too."""
    engine = redis_target.engine(prefix=redis_prefix)
    async with engine:
        async with engine.events.subscribe("p1"):
            assert await engine.deliveries.first_seen("d", 60)
        clients: list[Any] = [engine._s.client, engine._s.reader]
        nodes = [
            node
            for client in clients
            for node in [
                *client.nodes_manager.nodes_cache.values(),
                *client.nodes_manager.startup_nodes.values(),
            ]
        ]
        assert any(connection.is_connected for node in nodes for connection in node._connections)
        for client in clients:
            client._initialize = True  # what the driver does after a lost connection
    assert not any(connection.is_connected for node in nodes for connection in node._connections)
