"""The Redis engine itself: optional import, connection checks, failing closed when Redis goes away."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis.asyncio
import redis.exceptions as rexc

from integration_status import allow_global_roles
from integration_status._logging import capture_logs
from integration_status.backends._redis_base import ClusterScript, only_unreachable
from integration_status.backends._redis_events import READ_OUTAGE, READ_RETRY
from integration_status.backends.redis import RedisEngine
from integration_status.exceptions import BackendUnavailable, ConfigurationError
from integration_status.testing import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_import_without_redis_names_the_extra() -> None:
    """Importing the engine without the redis package raises ImportError with the pip extra to install."""
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "try:\n"
        "    import integration_status.backends.redis\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'integration-status[redis]'" in out.stdout


def test_backends_package_does_not_import_redis() -> None:
    """The core and the backends package load without pulling in the redis driver."""
    code = (
        "import sys, integration_status.backends, integration_status.protocols; print('redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_repr_hides_the_password() -> None:
    """The engine's repr names the endpoint and prefix, never the URL's password."""
    engine = RedisEngine.from_url("redis://:s3cr3t-pw@cache.internal:6380/2", prefix="app")
    assert repr(engine) == "RedisEngine(endpoint='cache.internal:6380', prefix='app')"


@pytest.mark.parametrize(
    ("url", "match"),
    [("http://127.0.0.1:6379", "must start with redis://"), ("redis://127.0.0.1:notaport", "malformed")],
)
def test_bad_urls_are_configuration_errors(url: str, match: str) -> None:
    """A URL that is not a Redis URL is refused at construction."""
    with pytest.raises(ConfigurationError, match=match):
        RedisEngine.from_url(url)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"prefix": ""}, "prefix"),
        ({"prefix": "my app"}, "prefix"),
        ({"prefix": "my{app}"}, "braces"),  # hash tags are the key layout's own
        ({"pool_size": 0}, "pool_size"),
        ({"socket_timeout": 0}, "socket_timeout"),
        ({"queue_size": 0}, "queue_size"),
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, Any], match: str) -> None:
    """An empty prefix (keys mixed with other apps) or a nonsensical pool/timeout/queue is refused."""
    with pytest.raises(ConfigurationError, match=match):
        RedisEngine.from_url("redis://127.0.0.1:6379", **options)


async def test_connect_to_a_closed_port_is_a_configuration_error() -> None:
    """connect() to a closed port raises ConfigurationError naming host:port, never the password."""
    port = _closed_port()
    engine = RedisEngine.from_url(f"redis://:s3cr3t-pw@127.0.0.1:{port}/0", socket_timeout=0.5)
    try:
        with pytest.raises(ConfigurationError) as info:
            await engine.connect()
    finally:
        await engine.aclose()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "s3cr3t-pw" not in str(info.value)
    assert "s3cr3t-pw" not in repr(info.value.__cause__)


async def test_entering_with_redis_away_starts_and_recovers(redis_proxy: Any) -> None:
    """A Redis that does not answer when the engine starts (a worker restarted during an outage) is logged, not
    raised: the engine starts, what needs Redis fails with BackendUnavailable meanwhile, and once the server is
    back the same engine works, near cache listener included."""
    redis_proxy.cut()
    engine = RedisEngine.from_url(f"redis://:s3cr3t-pw@127.0.0.1:{redis_proxy.port}/0", socket_timeout=0.5)
    with capture_logs() as logs:
        async with engine:
            with pytest.raises(BackendUnavailable):
                await engine.deliveries.first_seen("during", 60)
            assert engine.cache_store.coherent is False
            redis_proxy.restore()
            with anyio.fail_after(10):
                await engine.cache_store.wait_channel_up(0)
            assert engine.cache_store.coherent is True
            assert await engine.deliveries.first_seen(f"after-{uuid.uuid4().hex}", 60) is True
    [started] = [e for e in logs if e["event"] == "integration_status.redis.unavailable_at_start"]
    assert started["endpoint"] == f"127.0.0.1:{redis_proxy.port}"
    assert "s3cr3t-pw" not in repr(logs)


@pytest.mark.parametrize("url", ["redis://nobody:n0t-the-pw@127.0.0.1:6379/0", "redis://127.0.0.1:6379/99"])
async def test_entering_a_redis_that_refuses_the_engine_is_a_configuration_error(
    redis_url: str, url: str
) -> None:
    """A Redis that answers and refuses the engine (an unknown user, a database it does not have) is a
    configuration to fix, not an outage to wait out: entering raises ConfigurationError naming host:port,
    never the password."""
    engine = RedisEngine.from_url(url, socket_timeout=0.5)
    with pytest.raises(ConfigurationError, match=r"cannot use Redis at 127\.0\.0\.1:6379") as info:
        async with engine:
            pass
    assert "n0t-the-pw" not in str(info.value)


@pytest.mark.parametrize(
    ("exc", "unreachable"),
    [
        (rexc.ConnectionError("Error 111 connecting"), True),
        (rexc.TimeoutError("Timeout connecting"), True),
        (ConnectionResetError(104, "reset"), True),
        (rexc.ClusterDownError("CLUSTERDOWN The cluster is down"), True),
        (rexc.AuthenticationError("invalid username-password pair"), False),
        (rexc.AuthorizationError("NOPERM"), False),
        (rexc.ResponseError("ERR DB index is out of range"), False),
        (rexc.RedisClusterException("Cluster mode is not enabled on this node"), False),
    ],
)
def test_only_a_silent_redis_counts_as_unreachable(exc: BaseException, unreachable: bool) -> None:
    """What waiting can mend (refused, reset, timed out, no quorum yet) against what only a change of
    configuration can (a refused login, a plain Redis where a cluster was configured, a bad database)."""
    assert only_unreachable(exc) is unreachable


def test_a_cluster_no_node_of_which_answers_counts_as_unreachable() -> None:
    """The cluster driver's "cannot be connected" is raised from the last node's connection error."""
    exc = rexc.RedisClusterException("Redis Cluster cannot be connected")
    exc.__cause__ = rexc.ConnectionError("Error 111 connecting to 127.0.0.1:7000")
    assert only_unreachable(exc) is True


def test_a_cluster_engine_says_so_and_hides_the_password() -> None:
    """cluster=True builds cluster clients without connecting; the repr says cluster, never the password."""
    engine = RedisEngine.from_url("redis://:s3cr3t-pw@cache.internal:7000", prefix="app", cluster=True)
    assert repr(engine) == "RedisEngine(endpoint='cache.internal:7000', prefix='app', cluster=True)"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("unix:///run/redis.sock", "redis:// or rediss://"),
        ("redis://127.0.0.1:7000/3", "database 0"),
        ("http://127.0.0.1:7000", "must start with redis://"),
    ],
)
def test_bad_cluster_urls_are_configuration_errors(url: str, match: str) -> None:
    """A cluster is reached over TCP and has database 0 only: anything else is refused at construction."""
    with pytest.raises(ConfigurationError, match=match):
        RedisEngine.from_url(url, cluster=True)


TRANSPORT_FAILURES = [
    pytest.param(
        RuntimeError("unable to perform operation on <TCPTransport closed=True>"), id="uvloop-closed"
    ),
    pytest.param(asyncio.IncompleteReadError(b"", 10), id="eof"),
    pytest.param(ConnectionResetError(104, "Connection reset by peer"), id="reset"),
    pytest.param(TimeoutError(), id="timeout"),
    pytest.param(BrokenPipeError(), id="broken-pipe"),
    # What a cluster answers during a failover or a resharding, past the driver's redirections.
    pytest.param(rexc.ClusterDownError("CLUSTERDOWN The cluster is down"), id="cluster-down"),
    pytest.param(rexc.MasterDownError("MASTERDOWN Link with MASTER is down"), id="master-down"),
    pytest.param(rexc.TryAgainError("TRYAGAIN Multiple keys request during rehashing"), id="try-again"),
    pytest.param(rexc.MovedError("3999 127.0.0.1:6381"), id="moved"),
    pytest.param(rexc.AskError("3999 127.0.0.1:6381"), id="ask"),
    pytest.param(rexc.ClusterError("TTL exhausted."), id="redirections-exhausted"),
    pytest.param(rexc.SlotNotCoveredError("Slot 3999 not covered by the cluster"), id="slot-not-covered"),
    pytest.param(rexc.RedisClusterException("Redis Cluster cannot be connected"), id="cluster-unreachable"),
    pytest.param(rexc.MaxConnectionsError(), id="max-connections"),
]


@pytest.mark.parametrize("failure", TRANSPORT_FAILURES)
def test_every_transport_failure_is_backend_unavailable(failure: Exception) -> None:
    """What a broken connection raises on asyncio or uvloop, wrapped by the driver or not, becomes
    BackendUnavailable naming the endpoint and the operation (never a 500 upstream)."""
    engine = RedisEngine.from_url("redis://:hunter2@127.0.0.1:6390/0", prefix="p")
    with (
        pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:6390 .* while reading") as caught,
        engine._s.errors("reading"),
    ):
        raise failure
    assert caught.value.__cause__ is failure
    assert "hunter2" not in str(caught.value)


async def test_an_attribute_error_of_the_driver_is_backend_unavailable_and_one_of_ours_is_not() -> None:
    """A connection closed by another task under a command (the cluster driver closes all its connections when
    it learns the layout again, during a failover) makes the driver raise AttributeError from its own code: no
    socket writer is left. That is BackendUnavailable; an AttributeError raised outside the driver is a bug and
    propagates as it is."""
    engine = RedisEngine.from_url("redis://127.0.0.1:6390/0", prefix="p")
    connection = redis.asyncio.Connection(host="127.0.0.1", port=6390)
    # What the driver finds under it when another task tore the connection down mid-command: a writer that no
    # longer has what the driver reaches for (newer drivers check for a missing writer, not for this).
    connection._writer = object()  # type: ignore[assignment]
    with (
        pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:6390 is unreachable while reading") as caught,
        engine._s.errors("reading"),
    ):
        await connection._send_packed_command([b"PING"])
    connection._writer = None  # never connected: nothing for the driver to close
    assert isinstance(caught.value.__cause__, AttributeError)
    with pytest.raises(AttributeError), engine._s.errors("reading"):
        _ = engine.no_such_attribute  # type: ignore[attr-defined]


def test_cluster_clients_patch_their_slot_map_from_moved_and_send_unknown_scripts_whole() -> None:
    """Both cluster clients follow a MOVED answer by patching the slot it names, never by dropping every
    connection to learn the whole layout again (the driver's default on every fifth MOVED, which fails the
    commands in flight on healthy nodes during a failover); the engine's scripts are ClusterScripts."""
    engine = RedisEngine.from_url("redis://127.0.0.1:6390", prefix="p", cluster=True)
    clients: list[Any] = [engine._s.client, engine._s.reader]
    assert [client.reinitialize_steps for client in clients] == [0, 0]
    assert isinstance(engine._s.client.register_script("return 1"), ClusterScript)
    assert isinstance(engine.rate_limiter._hit, ClusterScript)


async def test_cancellation_is_not_mapped() -> None:
    """A cancelled command stays a cancellation (deadlines rely on it), not an outage."""
    engine = RedisEngine.from_url("redis://127.0.0.1:6390/0", prefix="p")
    with anyio.CancelScope() as scope, engine._s.errors("reading"):
        scope.cancel()
        await anyio.sleep_forever()
    assert scope.cancelled_caught


async def test_connect_succeeds_against_the_real_redis(redis_target: Any, redis_prefix: str) -> None:
    """connect() against the live server (or cluster) returns; aclose() may be called twice."""
    engine = redis_target.engine(prefix=redis_prefix)
    await engine.connect()
    await engine.aclose()
    await engine.aclose()


OPERATIONS: dict[str, Any] = {
    # A key never read before: one read before is answered by the near cache until the channel is noticed down.
    "cache.load": lambda e: e.cache_store.load(uuid.uuid4().hex),
    "cache.try_lock": lambda e: e.cache_store.try_lock("k", 5),
    "idempotency.begin": lambda e: e.idempotency.begin("k", "fp", lease=5, keep_for=60),
    "rate_limiter.hit": lambda e: e.rate_limiter.hit("k", limit=5, window=60),
    "deliveries.first_seen": lambda e: e.deliveries.first_seen("d", 60),
    "events.publish": lambda e: e.events.publish("p1", {"n": 1}),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_redis_going_away_mid_flight_fails_closed(
    redis_engines: Any, redis_proxy: Any, operation: str
) -> None:
    """When the server goes away after start-up, every store raises BackendUnavailable naming the endpoint."""
    engine = await redis_engines(url=redis_proxy.url, socket_timeout=0.5)
    await OPERATIONS[operation](engine)  # works through the proxy
    redis_proxy.cut()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{redis_proxy.port}"):
        await OPERATIONS[operation](engine)


async def test_reader_failure_reaches_subscribers(
    redis_engines: Any, redis_proxy: Any, redis_clock: FakeClock
) -> None:
    """A subscriber whose reader loses Redis for good gets BackendUnavailable once the reads have failed for
    READ_OUTAGE seconds (not before), and the reader is gone."""
    engine = await redis_engines(url=redis_proxy.url, socket_timeout=0.5)
    async with engine.events.subscribe("p1") as sub:
        assert engine.events.reader_count() == 1
        got: list[BaseException] = []

        async def next_event() -> None:
            try:
                await anext(aiter(sub))
            except BackendUnavailable as exc:
                got.append(exc)

        with anyio.fail_after(5):  # a bound on the reader's socket work, not a wait for time to pass
            async with anyio.create_task_group() as tg:
                tg.start_soon(next_event)
                paused = redis_clock.next_sleep()
                redis_proxy.cut()
                await paused.wait()  # failed at once, retried, failed: pausing on the engine's clock
                again = redis_clock.next_sleep()
                redis_clock.advance(READ_OUTAGE - 0.5)
                await again.wait()  # retried and paused again: not an outage yet
                assert not got
                redis_clock.advance(1.0)  # past the window: the next failure reaches the subscriber
        assert len(got) == 1
        assert engine.events.reader_count() == 0
    assert engine.events.subscriber_count() == 0


async def test_reads_failing_for_less_than_the_outage_window_end_no_subscriber(
    redis_engines: Any, redis_proxy: Any, redis_clock: FakeClock
) -> None:
    """Reads that fail for a while (a worker whose loop lags behind its socket timeout, a proxy restarting):
    the reader retries from where it was, and once Redis answers again the subscriber gets every event, in
    order, with no error."""
    engine = await redis_engines(url=redis_proxy.url, socket_timeout=0.5)
    publisher = await redis_engines()  # another worker, straight to Redis
    async with engine.events.subscribe("p1") as sub:
        events = aiter(sub)
        with anyio.fail_after(5):  # a bound on the reader's socket work, not a wait for time to pass
            paused = redis_clock.next_sleep()
            redis_proxy.cut()
            await paused.wait()  # retrying, paused on the engine's clock
            again = redis_clock.next_sleep()
            redis_clock.advance(READ_OUTAGE / 2)
            await again.wait()
            ids = [await publisher.events.publish("p1", {"n": n}) for n in (1, 2)]
            redis_proxy.restore()
            redis_clock.advance(READ_RETRY)
            assert [(await anext(events)).id for _ in ids] == ids
        assert engine.events.reader_count() == 1


async def test_engine_recovers_when_redis_comes_back(redis_engines: Any, redis_proxy: Any) -> None:
    """After an outage the same engine works again once the server is back, without being rebuilt."""
    engine = await redis_engines(url=redis_proxy.url, socket_timeout=0.5)
    assert await engine.deliveries.first_seen("before", 60) is True
    redis_proxy.cut()
    with pytest.raises(BackendUnavailable):
        await engine.deliveries.first_seen("during", 60)
    redis_proxy.restore()
    assert await engine.deliveries.first_seen("after", 60) is True
    assert await engine.deliveries.first_seen("before", 60) is False


# --- the shared ETag key ------------------------------------------------------------------------------------


async def test_workers_on_one_redis_share_an_etag_key(redis_engines: Any, redis_raw: Any) -> None:
    """Engines on one Redis and prefix derive the same ETag key from one value stored once with SET NX; the
    stored value is not the key itself."""
    a, b = await redis_engines(), await redis_engines()
    key_a, key_b = await a.shared_etag_key(), await b.shared_etag_key()
    assert key_a == key_b
    assert len(key_a) == 32
    stored = await redis_raw.get(f"{a.prefix}:etag-key")
    assert stored
    assert stored.encode() != key_a
    assert await redis_raw.ttl(f"{a.prefix}:etag-key") == -1


def etag_worker(engine: Any) -> Any:
    """A service (one worker) with one linked provider on ``engine``."""
    from integration_status.service import StatusService
    from integration_status.testing import ScriptedAdapter, StaticConnections, snapshot

    return StatusService(
        connections=StaticConnections.linked("p", "github"),
        adapters=[ScriptedAdapter("github", snapshot("github"))],
        engine=engine,
        clock=FakeClock(),
        authorizer=allow_global_roles,
    )


async def etag_of(service: Any) -> str:
    from integration_status.protocols import Viewer

    return str((await service.status("p", Viewer(user_id="o", roles={"owner"}))).etag)


@contextlib.contextmanager
def agreements(engine: Any) -> Iterator[anyio.abc.ObjectReceiveStream[bytes]]:
    """Every ETag key ``engine`` agrees on meanwhile (registered after the service's renderer, so the
    renderer already uses a key when it arrives here)."""
    send, receive = anyio.create_memory_object_stream[bytes](10)
    engine.on_etag_key(send.send_nowait)
    with send, receive:
        yield receive


@pytest.mark.redis_single
async def test_a_worker_started_while_redis_is_away_takes_the_shared_etag_key_when_it_is_back(
    redis_url: str, redis_prefix: str, redis_proxy: Any
) -> None:
    """A worker that starts during an outage starts anyway (with a key of its own), and takes the deployment's
    ETag key as soon as its connection is back: both workers then hand one client one tag."""
    one_engine = RedisEngine.from_url(redis_url, prefix=redis_prefix)
    redis_proxy.cut()
    two_engine = RedisEngine.from_url(redis_proxy.url, prefix=redis_prefix, socket_timeout=0.5)
    async with etag_worker(one_engine) as one, etag_worker(two_engine) as two:
        assert two.running
        shared = await etag_of(one)
        with agreements(two_engine) as agreed:
            redis_proxy.restore()
            with anyio.fail_after(10):
                assert await agreed.receive() == await one_engine.shared_etag_key()
        assert await etag_of(two) == shared


@pytest.mark.redis_single
async def test_after_a_redis_restart_that_kept_nothing_the_workers_agree_again(
    redis_url: str, redis_prefix: str, redis_proxy: Any, redis_raw: Any
) -> None:
    """Redis comes back empty: the first worker back stores the value it had again (its tags do not change),
    and a worker started meanwhile, which stored a new one, is followed by the workers that come back after it:
    every worker ends up with the key that is stored."""
    old_engine = RedisEngine.from_url(redis_proxy.url, prefix=redis_prefix, socket_timeout=0.5)
    async with etag_worker(old_engine) as old:
        with agreements(old_engine) as agreed:
            before = await etag_of(old)
            stored = await redis_raw.get(f"{redis_prefix}:etag-key")
            # Redis restarts and keeps nothing; this worker comes back first and stores its value again.
            redis_proxy.cut()
            await redis_raw.delete(f"{redis_prefix}:etag-key")
            redis_proxy.restore()
            with anyio.fail_after(10):
                await agreed.receive()
            assert await redis_raw.get(f"{redis_prefix}:etag-key") == stored
            assert await etag_of(old) == before
            # Again, but a new worker starts before the old one is back: the old one takes the new value.
            redis_proxy.cut()
            await redis_raw.delete(f"{redis_prefix}:etag-key")
            async with etag_worker(RedisEngine.from_url(redis_url, prefix=redis_prefix)) as new:
                fresh = await etag_of(new)
                assert fresh != before
                redis_proxy.restore()
                with anyio.fail_after(10):
                    await agreed.receive()
                assert await etag_of(old) == fresh


async def test_services_on_shared_redis_hand_out_the_same_etag(redis_target: Any, redis_prefix: str) -> None:
    """Two services (two workers) on one Redis prefix and no configured secret give one client the same ETag."""
    async with (
        etag_worker(redis_target.engine(prefix=redis_prefix)) as one,
        etag_worker(redis_target.engine(prefix=redis_prefix)) as two,
    ):
        assert await etag_of(one) == await etag_of(two)


async def test_a_lost_invalidation_channel_is_warned_of_once_per_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However many times the listener tries to subscribe again while Redis is away, the loss is one warning;
    the attempts after it are debug lines (the network is faked: every attempt to open the channel fails)."""
    engine = RedisEngine.from_url(f"redis://127.0.0.1:{_closed_port()}/0", socket_timeout=0.5)
    store = engine.cache_store
    attempts = 0

    async def unreachable() -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 4:
            store._stopping = True  # the engine stops: the listener ends after this attempt
        raise BackendUnavailable("Redis at 127.0.0.1 is unreachable while subscribing to cache invalidations")

    monkeypatch.setattr(store, "_open", unreachable)
    try:
        with capture_logs() as logs, anyio.fail_after(10):
            await store.listen()
    finally:
        await engine.aclose()
    lost = [e["log_level"] for e in logs if e["event"] == "integration_status.redis.cache.channel_lost"]
    assert attempts == 4
    assert lost == ["warning", "debug", "debug"]  # the fourth ended with the engine: not a loss
