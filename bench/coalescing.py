"""Benchmark 3: 100 concurrent cold status requests -> provider calls per provider (bar: exactly 1), in
memory; with Redis (two services sharing one Redis) when the Redis engine is available."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import anyio

from bench._common import Outcome, report, skipped
from integration_status.models import ProviderKey
from integration_status.protocols import Viewer
from integration_status.service import StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.snapshot import ProviderSnapshot
from integration_status.testing import ScriptedAdapter, StaticConnections, snapshot

PROVIDERS: tuple[ProviderKey, ...] = ("sanity", "github", "vercel", "supabase")
VIEWER = Viewer(user_id="bench", roles={"owner"})
REDIS_URL = "redis://127.0.0.1:6379/0"


def _slow(provider: ProviderKey) -> Callable[[], Awaitable[ProviderSnapshot]]:
    async def fetch() -> ProviderSnapshot:
        await anyio.sleep(0.1)  # long enough that every request arrives while the first fetch runs
        return snapshot(provider)

    return fetch


def _adapters() -> list[ScriptedAdapter]:
    return [ScriptedAdapter(p, _slow(p)) for p in PROVIDERS]


async def _cold(services: list[StatusService], requests: int) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(requests):
            tg.start_soon(services[i % len(services)].status, "p1", VIEWER)


async def _memory(requests: int) -> dict[str, int]:
    adapters = _adapters()
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p1", *PROVIDERS),
        adapters=adapters,
    )
    async with service:
        await _cold([service], requests)
    return {str(a.provider): a.calls for a in adapters}


async def _redis(requests: int) -> dict[str, int]:
    from integration_status.backends.redis import RedisEngine  # type: ignore[import-not-found,unused-ignore]

    prefix = f"bench-{secrets.token_hex(4)}:"
    adapters = _adapters()
    counts: dict[str, int] = dict.fromkeys(PROVIDERS, 0)
    services = [
        StatusService(
            authorizer=allow_global_roles,
            connections=StaticConnections.linked("p1", *PROVIDERS),
            adapters=adapters,
            engine=RedisEngine.from_url(REDIS_URL, prefix=prefix),
        )
        for _ in range(2)
    ]
    async with services[0], services[1]:
        await _cold(services, requests)
    for a in adapters:
        counts[a.provider] = a.calls
    return counts


def redis_engine_available() -> bool:
    try:
        from integration_status.backends.redis import RedisEngine  # noqa: F401
    except ImportError:
        return False
    return True


def run(smoke: bool = False) -> list[Outcome]:
    requests = 100
    calls = anyio.run(_memory, requests)
    print(f"[coalescing] memory: {requests} concurrent cold requests -> calls per provider {calls}")
    worst = max(calls.values())
    outcomes = [report("coalescing_memory_calls", worst, "== 1", worst == 1, fmt="{:.0f}")]
    if not redis_engine_available():
        outcomes.append(skipped("coalescing_redis_calls", "redis engine not available"))
        return outcomes
    calls = anyio.run(_redis, requests)
    print(f"[coalescing] redis, two services: {requests} concurrent cold requests -> calls {calls}")
    worst = max(calls.values())
    outcomes.append(report("coalescing_redis_calls", worst, "== 1", worst == 1, fmt="{:.0f}"))
    return outcomes


if __name__ == "__main__":
    run()
