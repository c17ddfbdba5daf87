"""Shared fixtures: the anyio backend, and where the Redis engine tests run.

Every test that asks for ``redis_target`` (directly or through the Redis engine fixtures in
tests/backends/conftest.py) runs twice: on the single test Redis (``plain``) and on a local three-master Redis
Cluster (``cluster``) started once per session. A test that needs the single Redis itself (its URL, or a proxy
in front of it) is marked ``redis_single`` or asks for ``redis_url``/``redis_proxy``, and runs on ``plain`` only;
one about the cluster itself is marked ``redis_cluster_only``. Failover tests use ``redis_cluster_replicated``
instead: a cluster with a replica per master, one per test module (they swap its nodes' roles).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_cluster import KINDS, NODE_TIMEOUT_MS, LocalCluster, RedisTarget, binaries, target_of
from tests.services import missing

_SINGLE_ONLY = frozenset({"redis_url", "redis_proxy"})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_kind" not in metafunc.fixturenames:
        return
    single = metafunc.definition.get_closest_marker("redis_single") is not None
    single = single or bool(_SINGLE_ONLY & set(metafunc.fixturenames))
    if metafunc.definition.get_closest_marker("redis_cluster_only") is not None:
        kinds = ["cluster"]
    else:
        kinds = ["plain"] if single else list(KINDS)
    metafunc.parametrize("redis_kind", kinds, indirect=True)


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A three-master Redis Cluster on free loopback ports for the whole session; skips without the binaries
    (fails under CI=true)."""
    if binaries() is None:
        missing("redis-server/redis-cli not installed: cannot start a local Redis Cluster")
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def redis_cluster_replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three masters with one replica each (six nodes) and a short cluster-node-timeout, for one test module;
    skips without the binaries (fails under CI=true). Its tests may fail masters over: each finds the roles
    as they are, and leaves all six nodes running."""
    if binaries() is None:
        missing("redis-server/redis-cli not installed: cannot start a local Redis Cluster")
    cluster = LocalCluster(
        tmp_path_factory.mktemp("redis-cluster-replicated"), replicas=1, node_timeout=NODE_TIMEOUT_MS
    )
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_target(redis_kind: str, request: pytest.FixtureRequest) -> RedisTarget:
    """The Redis this test runs on (see the module docstring)."""
    return target_of(redis_kind, request)
