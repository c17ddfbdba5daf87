"""The Redis engine on a Redis Cluster whose masters fail over to their replicas (three masters, one replica
each, cluster-node-timeout 1 s: the ``redis_cluster_replicated`` fixture): the same engines, never restarted,
go on reading and writing the failed-over project's cache, running their scripts, delivering its events from one
worker to another and keeping their near caches coherent. What fails meanwhile fails as BackendUnavailable.

A manual failover (``CLUSTER FAILOVER`` sent to the replica) costs no command an error, unless a node answers
CLUSTERDOWN for a moment meanwhile. A hard one (the master killed) fails the commands for its slots until the
cluster has promoted the replica, about 2 s here; the engine then learns the new layout by itself.

The reader of an event stream retries on the engine's FakeClock, which the tests move on only when it pauses
(as time would while it retries), so its subscription outlives the switch. With Redis's default
cluster-node-timeout (15 s) the reader's 3 s outage window would end it first, and a client would resume with
Last-Event-ID, which the tests also show losing nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from integration_status.backends._redis_events import READ_RETRY
from integration_status.backends.redis import RedisEngine
from integration_status.exceptions import BackendUnavailable
from integration_status.protocols import BeginResult, StoredEvent, StoredResponse
from integration_status.testing import FakeClock
from tests.backends.conftest import until_store
from tests.backends.test_redis_cluster import entry
from tests.polling import wait_until
from tests.redis_cluster import HOST, NODE_TIMEOUT_MS, LocalCluster, RedisTarget

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

#: Bound on a manual failover (a few milliseconds here) and on everything a test waits for after one.
SWITCH = 5.0
#: Bound on a hard failover: the cluster marks the master failed after NODE_TIMEOUT_MS and the replica waits
#: up to a second more before it is elected; everything after that is quick.
HARD_SWITCH = NODE_TIMEOUT_MS / 1000 * 4 + SWITCH
OK = StoredResponse(status=202, body={"success": True, "operationId": "op_1"})


@pytest.fixture
def redis_target(redis_cluster_replicated: LocalCluster) -> RedisTarget:
    """Every Redis fixture of this module (engines, prefix, raw client) on the replicated cluster."""
    return RedisTarget(kind="cluster", url=redis_cluster_replicated.url)


# --- the nodes, asked one by one --------------------------------------------------------------------------


async def ask(port: int, *command: str) -> Any:
    """One command to the node on ``port`` itself (not routed by slot); None when it does not answer."""
    client = aioredis.Redis(
        host=HOST,
        port=port,
        socket_timeout=1,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),  # the driver's default retries a node that is down for seconds
        decode_responses=True,
    )
    try:
        return await client.execute_command(*command)
    except (rexc.RedisError, OSError):
        return None
    finally:
        await client.aclose()


async def role(port: int) -> str:
    """``master``, ``slave`` or ``down``."""
    reply = await ask(port, "ROLE")
    return "down" if reply is None else str(reply[0])


async def replica_of(master: int) -> int:
    """The port of the master's (one) replica, as the master reports it."""
    reply = await ask(master, "ROLE")
    assert reply is not None
    assert reply[0] == "master"
    [(_host, port, _offset)] = reply[2]
    return int(port)


async def until(check: Callable[[], Awaitable[bool]], within: float) -> None:
    """Wait (bounded) until the nodes, other processes, make ``check`` true."""
    ok = [False]

    async def look() -> None:
        ok[0] = await check()

    await wait_until(lambda: ok[0], within=within, step=look)


async def master_of(replica: int) -> int:
    """The port of the replica's master, as the replica reports it."""
    reply = await ask(replica, "ROLE")
    assert reply is not None
    assert reply[0] == "slave"
    return int(reply[2])


async def failed_over(cluster: LocalCluster, *, old: int, new: int, within: float) -> None:
    """Wait until ``new`` is a master, ``old`` is a replica or down, and every running node reports the cluster
    ok with ``new`` as a master: the roles have swapped for every node a client may ask. A running ``old``
    has then also caught up with its new master (another failover may follow at once)."""

    async def swapped() -> bool:
        if await role(new) != "master" or await role(old) == "master":
            return False
        for port in cluster.ports:
            if port == old and await role(old) == "down":
                continue
            info, nodes = await ask(port, "CLUSTER", "INFO"), await ask(port, "CLUSTER", "NODES")
            if info is None or nodes is None or "cluster_state:ok" not in str(info):
                return False
            line = next((row for row in str(nodes).splitlines() if f":{new}@" in row), "")
            flags = line.split(" ")[2] if line else ""
            if "master" not in flags.split(","):
                return False
        return True

    try:
        await until(swapped, within)
    except TimeoutError:
        cluster.log_tail = 1500
        seen = []
        for port in cluster.ports:
            info, nodes = await ask(port, "CLUSTER", "INFO"), await ask(port, "CLUSTER", "NODES")
            fields = dict(row.split(":", 1) for row in str(info).splitlines() if ":" in row)
            state = " ".join(
                f"{k}={fields.get(k)}"
                for k in ("cluster_state", "cluster_slots_ok", "cluster_slots_pfail", "cluster_slots_fail",
                          "cluster_known_nodes", "cluster_size", "cluster_current_epoch")
            )  # fmt: skip
            line = next((row for row in str(nodes).splitlines() if f":{new}@" in row), "")
            seen.append(
                f"{port}: {await role(port)} {state} new-as-seen={line.split(' ')[2] if line else '-'}"
            )
        raise AssertionError(
            f"no switch {old}->{new} within {within}s: " + "; ".join(seen) + f" | logs: {cluster._logs()}"
        ) from None
    if await role(old) != "down":
        await synced_replica(old, within)


async def replication(port: int) -> dict[str, Any]:
    """The node's ``INFO replication`` (empty when it does not answer)."""
    return dict(await ask(port, "INFO", "replication") or {})


async def synced_replica(port: int, within: float) -> None:
    """Wait until the node on ``port`` is a replica whose link to its master is up."""

    async def synced() -> bool:
        return (await replication(port)).get("master_link_status") == "up"

    await until(synced, within)


async def replicated(master: int, replica: int) -> None:
    """Wait until the replica has everything the master wrote so far (replication is asynchronous: a write not
    yet copied when a master dies is lost with it, by Redis's design, which is not what these tests are about)."""
    target = int((await replication(master))["master_repl_offset"])

    async def caught_up() -> bool:
        return int((await replication(replica)).get("master_repl_offset", -1)) >= target

    await until(caught_up, SWITCH)


async def primaries(raw: Any) -> list[int]:
    """The masters' ports, as the raw client learns the layout now."""
    await raw.initialize()
    return sorted(int(node.port) for node in raw.get_primaries())


async def projects_on(raw: Any, prefix: str, port: int, wanted: int = 1) -> list[str]:
    """Project ids whose slot the master on ``port`` holds (as the raw client sees the layout now)."""
    await raw.initialize()
    found = []
    for n in range(2000):
        project = f"proj_{n}"
        if raw.get_node_from_key(f"{prefix}:cache:{{{project}}}:github").port == port:
            found.append(project)
            if len(found) == wanted:
                return found
    raise AssertionError(f"no project on {port}")


def action_key_beside(engine: RedisEngine, raw: Any, project: str) -> str:
    """An action key whose idempotency record (and its bucket's lease index) lives on the master that holds the
    project's cache entries, as the raw client sees the layout (the same for both, up to date or not)."""
    node = raw.get_node_from_key(engine.cache_store._key("cache", f"{project}:github"))
    for n in range(200):
        scope = f"u1:{project}:k{n}"
        if raw.get_node_from_key(engine.idempotency._keys(scope)[0]) is node:  # type: ignore[attr-defined]
            return scope
    raise AssertionError(f"no action key beside {project}")


# --- what the engines do across a switch ------------------------------------------------------------------


class Traffic:
    """Two tasks per engine doing every kind of command (cache writes and reads, a refresh lock, an action key,
    an event) on one project per master, round after round, while a switch happens; every failure is kept.
    ``settled`` is set once every task has done a whole round without one, after :meth:`switched`."""

    def __init__(self, engines: list[RedisEngine], clock: FakeClock, projects: list[str]) -> None:
        self.engines = engines
        self.clock = clock
        self.projects = projects
        self.failures: list[Exception] = []
        self.rounds = 0
        self.settled = anyio.Event()
        self._waiting: set[int] | None = None
        self._stop = False

    async def _round(self, engine: RedisEngine, task: int, n: int) -> None:
        for project in self.projects:
            key = f"{project}:github"
            await engine.cache_store.save(key, entry(self.clock, str(n)), keep_for=60)
            await engine.cache_store.load_many([key, f"{project}:vercel"])
            token = await engine.cache_store.try_lock(f"{project}:vercel", 5)
            if token is not None:
                await engine.cache_store.unlock(f"{project}:vercel", token)
            await engine.idempotency.begin(f"u1:{project}:t{task}-{n}", "fp", lease=30, keep_for=60)
            await engine.events.publish(project, {"n": n})

    async def _task(self, engine: RedisEngine, task: int) -> None:
        n = 0
        while not self._stop:
            n += 1
            try:
                await self._round(engine, task, n)
            except Exception as exc:
                self.failures.append(exc)
            else:
                self.rounds += 1
                if self._waiting is not None:
                    self._waiting.discard(task)
                    if not self._waiting:
                        self.settled.set()
            await anyio.lowlevel.checkpoint()

    def switched(self) -> None:
        """The switch is over: from now on, count the tasks that get a whole round through."""
        self._waiting = set(range(2 * len(self.engines)))

    @classmethod
    @asynccontextmanager
    async def running(
        cls, engines: list[RedisEngine], clock: FakeClock, projects: list[str]
    ) -> AsyncIterator[Traffic]:
        traffic = cls(engines, clock, projects)
        async with anyio.create_task_group() as tg:
            for task in range(2 * len(engines)):
                tg.start_soon(traffic._task, engines[task % len(engines)], task)
            try:
                yield traffic
            finally:
                traffic._stop = True


async def next_event(events: AsyncIterator[StoredEvent], clock: FakeClock) -> StoredEvent:
    """The subscription's next event. Its reader retries a read that failed in the switch, pausing READ_RETRY
    on the engine's clock between tries: each time it pauses, the clock moves on by that much (as time would),
    so it tries again. Bounded."""
    got: list[StoredEvent] = []
    with anyio.fail_after(SWITCH):
        async with anyio.create_task_group() as tg:

            async def take() -> None:
                got.append(await anext(events))
                tg.cancel_scope.cancel()

            tg.start_soon(take)
            if clock.sleepers:  # already pausing
                clock.advance(READ_RETRY)
            while True:
                paused = clock.next_sleep()
                await paused.wait()
                clock.advance(READ_RETRY)
    return got[0]


async def events_go_on(a: RedisEngine, events: Any, project: str, before: str, clock: FakeClock) -> None:
    """An event A publishes now reaches the subscription opened before the switch (``events``), and a
    subscription resumed from ``before`` (the last id before the switch) gets it with no gap."""
    after = await a.events.publish(project, {"type": "after"})
    assert (await next_event(events, clock)).id == after
    async with a.events.subscribe(project, last_event_id=before) as resumed:
        assert resumed.gap is False
        assert (await next_event(aiter(resumed), clock)).id == after


async def still_works(a: RedisEngine, b: RedisEngine, raw: Any, clock: FakeClock, project: str) -> None:
    """After the switch, on the failed-over project: ``a`` writes the cache and ``b``'s near copy is told of it
    (b trusts its near cache again and reads the new value); the refresh lock script excludes the other worker;
    an action key on the same master goes through begin, checkpoint and complete on ``a`` and replays on
    ``b``."""
    key = f"{project}:github"
    store = b.cache_store
    with anyio.fail_after(SWITCH):
        await until_store(store, lambda: store.coherent, within=SWITCH)  # a lost channel is subscribed again
        assert (await store.load(key)) is not None
        assert key in store._near  # b holds a copy, trusted: its reads make no round trip
        new = entry(clock, "after the switch")
        await a.cache_store.save(key, new, keep_for=60)
        # Announced: b drops its copy of this key (a late announcement of the traffic's own writes, on other
        # keys, may reach b first; it moves the generation, not this key).
        await until_store(store, lambda: key not in store._near, within=SWITCH)
        assert store.coherent
        assert (await store.load(key)) == new

        token = await a.cache_store.try_lock(key, 30)
        assert token is not None
        assert await b.cache_store.try_lock(key, 30) is None
        await a.cache_store.unlock(key, token)
        again = await b.cache_store.try_lock(key, 30)
        assert again is not None
        await b.cache_store.unlock(key, again)

        scope = action_key_beside(a, raw, project)
        begun = await a.idempotency.begin(scope, "fp", lease=30, keep_for=60)
        assert begun.state == "started"
        assert begun.token is not None
        assert await b.idempotency.begin(scope, "fp", lease=30, keep_for=60) == BeginResult(state="in_flight")
        assert await a.idempotency.checkpoint(scope, begun.token, {"operationId": "op_1"}, lease=30)
        await a.idempotency.complete(scope, begun.token, OK, keep_for=60)
        assert await b.idempotency.begin(scope, "fp", lease=30, keep_for=60) == BeginResult(
            state="replay", response=OK
        )


def routed_to(engine: RedisEngine, project: str) -> int:
    """The port the engine's own client sends the project's commands to now (its slot map)."""
    client: Any = engine._s.client
    return int(client.get_node_from_key(engine.cache_store._key("cache", f"{project}:github")).port)


# --- the tests --------------------------------------------------------------------------------------------


async def test_a_manual_failover_is_followed_without_errors_or_a_restart(
    redis_engines: Any, redis_raw: Any, redis_clock: FakeClock, redis_cluster_replicated: LocalCluster
) -> None:
    """CLUSTER FAILOVER sent to the replica of the master holding a project's slot: while the roles swap, two
    workers' commands of every kind on every master succeed (the driver follows the MOVED answers and patches
    its slot map; a script the promoted replica does not know is sent whole), unless a node answers CLUSTERDOWN
    for a moment, and what fails then is BackendUnavailable. Afterwards the same engines send that project's
    commands to the new master, and still work on it: cache and near cache, lock and idempotency scripts; an
    event published on one worker reaches the subscription the other opened before the switch, and a
    subscription resumed on the first worker with the id before the switch gets it too, nothing lost."""
    cluster = redis_cluster_replicated
    a, b = await redis_engines(), await redis_engines()
    masters = await primaries(redis_raw)
    [project] = await projects_on(redis_raw, a.prefix, masters[0])
    load = [(await projects_on(redis_raw, a.prefix, port, wanted=2))[1] for port in masters]
    master = masters[0]
    replica = await replica_of(master)
    key = f"{project}:github"
    await a.cache_store.save(key, entry(redis_clock, "before"), keep_for=60)
    assert (await b.cache_store.load(key)) == entry(redis_clock, "before")  # b now holds a copy

    async with b.events.subscribe(project) as sub:
        events = aiter(sub)
        before = await a.events.publish(project, {"type": "before"})
        assert (await next_event(events, redis_clock)).id == before
        async with Traffic.running([a, b], redis_clock, load) as traffic:
            assert await ask(replica, "CLUSTER", "FAILOVER") == "OK"
            await failed_over(cluster, old=master, new=replica, within=SWITCH)
            traffic.switched()
            with anyio.fail_after(SWITCH):
                await traffic.settled.wait()
        # Nothing fails, unless a node answers CLUSTERDOWN for a moment while the roles swap (Redis may): the
        # driver then drops its connections, and the commands in flight on them fail too, as BackendUnavailable.
        assert {type(failure) for failure in traffic.failures} <= {BackendUnavailable}
        assert not traffic.failures or any(
            isinstance(failure.__cause__, rexc.ClusterDownError) for failure in traffic.failures
        ), traffic.failures
        assert traffic.rounds > 0

        await still_works(a, b, redis_raw, redis_clock, project)
        assert routed_to(a, project) == routed_to(b, project) == replica
        await events_go_on(a, events, project, before, redis_clock)


async def channel_through_a_master(engine: RedisEngine) -> int:
    """Move ``engine``'s invalidation channel on to a master, so that killing that node costs the engine both
    its channel and the master of a project, and return the master's port. Each new subscription goes through
    the next node: the channel's connection is closed until it lands on a master. (Promoting its node with a
    manual failover instead would be followed by the kill within the two node timeouts in which the masters do
    not vote on that shard again, and the kill would then not be failed over.)"""
    store = engine.cache_store
    for _ in range(2 * 6):
        port = int(store._pubsub.node.port)
        if await role(port) == "master":
            return port
        ups = store.channel_ups
        await store._disconnect(store._pubsub)
        with anyio.fail_after(SWITCH):
            await store.wait_channel_up(ups)
    raise AssertionError("the channel never went through a master")


async def test_a_killed_master_is_failed_over_and_the_same_engines_recover(
    redis_engines: Any, redis_raw: Any, redis_clock: FakeClock, redis_cluster_replicated: LocalCluster
) -> None:
    """The master holding a project's slot, which is also the node worker B hears cache invalidations through,
    is killed (SIGKILL). Until the cluster has promoted its replica, the project's commands fail, and every
    failure of two workers' commands of every kind on every master is BackendUnavailable, never a driver
    error. Afterwards the same engines learn the new layout by themselves and work on the project as before
    (cache and near cache, B subscribed again through another node; lock and idempotency scripts); B's
    subscription opened before the kill gets the next event A publishes, and a subscription resumed with the id
    before the kill loses nothing. The killed node comes back as a replica."""
    cluster = redis_cluster_replicated
    a, b = await redis_engines(), await redis_engines()
    victim = await channel_through_a_master(b)  # B's invalidation channel goes through this master
    replica = await replica_of(victim)
    masters = await primaries(redis_raw)
    [project] = await projects_on(redis_raw, a.prefix, victim)
    load = [(await projects_on(redis_raw, a.prefix, port, wanted=2))[1] for port in masters]
    key = f"{project}:github"
    await a.cache_store.save(key, entry(redis_clock, "before"), keep_for=60)
    assert (await b.cache_store.load(key)) == entry(redis_clock, "before")
    killed = False
    try:
        async with b.events.subscribe(project) as sub:
            events = aiter(sub)
            before = await a.events.publish(project, {"type": "before"})
            assert (await next_event(events, redis_clock)).id == before
            await replicated(victim, replica)
            async with Traffic.running([a, b], redis_clock, load) as traffic:
                cluster.kill(victim)
                killed = True
                with anyio.fail_after(SWITCH), pytest.raises(BackendUnavailable):
                    await a.cache_store.save(key, entry(redis_clock, "while it is down"), keep_for=60)
                await failed_over(cluster, old=victim, new=replica, within=HARD_SWITCH)
                traffic.switched()
                with anyio.fail_after(SWITCH):
                    await traffic.settled.wait()
            assert traffic.failures  # the dead master's commands failed meanwhile
            assert {type(failure) for failure in traffic.failures} == {BackendUnavailable}
            assert traffic.rounds > 0

            await still_works(a, b, redis_raw, redis_clock, project)
            assert int(b.cache_store._pubsub.node.port) != victim
            assert routed_to(a, project) == routed_to(b, project) == replica
            await events_go_on(a, events, project, before, redis_clock)
    finally:
        if killed:
            cluster.restart(victim)
            await synced_replica(victim, within=SWITCH)
    assert await master_of(victim) == replica
