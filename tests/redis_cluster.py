"""A throwaway three-master Redis Cluster on loopback, started from the ``redis-server`` and ``redis-cli``
binaries for one test session (see the ``redis_cluster`` fixture in tests/conftest.py), and the two targets
every Redis engine test runs on: the single test Redis and that cluster. With ``replicas=1`` each master gets a
replica (six nodes), for the failover tests (the ``redis_cluster_replicated`` fixture, one per test module).

Each node runs in the foreground as a child process with its config, and nothing else, in a temporary directory;
``stop()`` ends exactly those processes. Ports are free loopback ports whose cluster-bus port (port + 10000) is
free too.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import socket
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs
import pytest

from tests.polling import wait_until
from tests.services import REDIS_URL, require_redis

if TYPE_CHECKING:
    from integration_status.backends.redis import RedisEngine

SERVER = "/usr/bin/redis-server"
CLI = "/usr/bin/redis-cli"
HOST = "127.0.0.1"
MASTERS = 3
#: How long the cluster may take to form (seconds): a few hundred milliseconds is usual.
FORM_WITHIN = 30.0
#: The replicated cluster's cluster-node-timeout (ms): a master that stops answering for this long is failed
#: over to its replica (in about twice that, all told), so a test can wait for it.
NODE_TIMEOUT_MS = 1000


def binaries() -> tuple[str, str] | None:
    """The server and cli binaries, or None when either is missing."""
    server = shutil.which(SERVER) or shutil.which("redis-server")
    cli = shutil.which(CLI) or shutil.which("redis-cli")
    return (server, cli) if server and cli else None


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports below 55535 whose bus port (+10000) is free as well."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port < 55535 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


class LocalCluster:
    """Three masters, all slots assigned, and ``replicas`` replicas per master (none by default); ``url`` points
    at the first node. ``node_timeout`` (milliseconds) is the nodes' ``cluster-node-timeout``: how long a master
    may stop answering before its replica is promoted (Redis's default, 15 s, when None)."""

    def __init__(self, directory: Path, *, replicas: int = 0, node_timeout: int | None = None) -> None:
        found = binaries()
        if found is None:
            raise FileNotFoundError("redis-server and redis-cli are needed for a local Redis Cluster")
        self._server, self._cli = found
        self._dir = directory
        self.replicas = replicas
        self._node_timeout = node_timeout
        self.ports = free_ports(MASTERS * (1 + replicas))
        self._procs: list[subprocess.Popen[bytes]] = []
        #: How much of each node's log a failure message quotes (its end).
        self.log_tail = 300

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.ports[0]}/0"

    def start(self) -> None:
        try:
            for port in self.ports:
                self._procs.append(self._spawn(port))
            for port in self.ports:
                self._wait(lambda p=port: self._cli_ok(p, "ping", expect="PONG"), f"node {port} to answer")
            subprocess.run(
                [
                    self._cli,
                    "--cluster",
                    "create",
                    *(f"{HOST}:{port}" for port in self.ports),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=FORM_WITHIN,
            )
            for port in self.ports:
                self._wait(
                    lambda p=port: self._cli_ok(p, "cluster", "info", expect="cluster_state:ok"),
                    f"node {port} to report cluster_state:ok",
                )
            for port in self.ports:
                self._wait(lambda p=port: self._synced(p), f"node {port} to be a master or a synced replica")
        except BaseException:
            self.stop()
            raise

    def _synced(self, port: int) -> bool:
        """Whether the node is a master, or a replica whose link to its master is up (it can be promoted)."""
        return self._cli_ok(port, "info", "replication", expect="role:master") or self._cli_ok(
            port, "info", "replication", expect="master_link_status:up"
        )

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        timeout = [] if self._node_timeout is None else ["--cluster-node-timeout", str(self._node_timeout)]
        log = (self._dir / f"node-{port}.log").open("ab")
        with log:
            return subprocess.Popen(
                [
                    self._server,
                    "--port",
                    str(port),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self._dir / f"nodes-{port}.conf"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--bind",
                    HOST,
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self._dir),
                    # A replica syncs at once (Redis waits 5 s by default for more replicas to share a sync).
                    "--repl-diskless-sync-delay",
                    "0",
                    *timeout,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
            )

    def _cli_ok(self, port: int, *command: str, expect: str) -> bool:
        try:
            done = subprocess.run(
                [self._cli, "-h", HOST, "-p", str(port), *command], capture_output=True, timeout=5
            )
        except subprocess.TimeoutExpired:
            return False
        return expect in done.stdout.decode(errors="replace")

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        """Wait (bounded, with the suite's one poll helper) for the nodes to do something; a node that
        exits meanwhile ends the wait at once, with the nodes' logs. The helper runs in a thread of its own, so
        that the cluster can also be started from an async fixture (whose event loop is running here)."""

        def done() -> bool:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"a Redis Cluster node exited while waiting for {what}: {self._logs()}"
                    )
            return ready()

        try:
            with ThreadPoolExecutor(1) as pool:
                pool.submit(anyio.run, functools.partial(wait_until, done, within=FORM_WITHIN)).result()
        except TimeoutError:
            raise RuntimeError(f"timed out waiting for {what}: {self._logs()}") from None

    def _logs(self) -> str:
        tails = []
        for log in sorted(self._dir.glob("node-*.log")):
            tails.append(f"{log.name}: {log.read_text(errors='replace')[-self.log_tail :]}")
        return " | ".join(tails)

    def stop(self) -> None:
        """End the node processes this object started (and only those), then wait for them."""
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)

    def pid(self, port: int) -> int:
        """The process id of the node on ``port`` (to pause it with SIGSTOP in a fault test)."""
        return self._procs[self.ports.index(port)].pid

    def kill(self, port: int) -> None:
        """End the node on ``port`` at once (SIGKILL, no shutdown of its own), as a crashed server."""
        proc = self._procs[self.ports.index(port)]
        proc.kill()
        proc.wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start the node on ``port`` again after :meth:`kill`, with the cluster configuration it saved: it
        rejoins the cluster (a master that was failed over comes back as a replica). Returns at once; the
        caller waits for the role it expects."""
        index = self.ports.index(port)
        if self._procs[index].poll() is None:
            raise RuntimeError(f"the node on {port} is still running")
        self._procs[index] = self._spawn(port)


KINDS: Final = ("plain", "cluster")


@attrs.frozen
class RedisTarget:
    """Where a Redis engine test runs: the single test Redis (``plain``) or the local cluster (``cluster``)."""

    kind: str
    url: str

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"

    def engine(self, **options: Any) -> RedisEngine:
        """``RedisEngine.from_url`` on this target (``cluster=True`` for the cluster)."""
        from integration_status.backends.redis import RedisEngine

        return RedisEngine.from_url(self.url, cluster=self.cluster, **options)

    def raw(self) -> Any:
        """An async client that sees every key (a cluster client on the cluster), answering str."""
        if self.cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster.from_url(self.url, decode_responses=True)
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(self.url, decode_responses=True)

    def purge(self, prefix: str) -> None:
        """Delete every key under ``prefix`` (on every node of the cluster)."""
        import redis
        import redis.cluster

        client: Any = (
            redis.cluster.RedisCluster.from_url(self.url) if self.cluster else redis.Redis.from_url(self.url)
        )
        try:
            for key in list(client.scan_iter(match=f"{prefix}:*", count=1000)):
                client.delete(key)
        finally:
            nodes = client.get_nodes() if self.cluster else []
            client.close()
            for node in nodes:  # the sync cluster client's close() leaves its nodes' pools open
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()


def target_of(kind: str, request: pytest.FixtureRequest) -> RedisTarget:
    """The target named ``kind``: the single test Redis (``plain``; skips without it, fails under CI=true) or
    the session's local cluster (``cluster``). The ``redis_target`` fixture, and fixtures choosing their own."""
    if kind == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return RedisTarget(kind="cluster", url=cluster.url)
    return RedisTarget(kind="plain", url=require_redis(REDIS_URL))
