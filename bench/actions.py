"""Benchmark 6: quick actions under concurrency.

50 concurrent requests with one Idempotency-Key -> handler executions (bar: exactly 1); 50 concurrent
requests with distinct keys from one user -> admitted (bar: exactly 5, the default limit per minute).
In memory; with Redis when the Redis engine is available."""

from __future__ import annotations

import functools
import secrets
from typing import Any

import anyio

from bench._common import Outcome, report, skipped
from bench.coalescing import REDIS_URL, redis_engine_available
from integration_status.exceptions import RateLimitExceeded
from integration_status.protocols import (
    ActionContext,
    ActionOutcome,
    ActionRequest,
    ProviderConnection,
    Viewer,
)
from integration_status.service import StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.testing import ScriptedAdapter, StaticConnections

VIEWER = Viewer(user_id="bench", roles={"owner"})
BODY = {"projectId": "p1", "provider": "vercel", "action": "deploy"}


async def _round(engine: Any, *, one_key: bool, requests: int = 50) -> tuple[int, int]:
    """(handler executions, admitted requests)."""
    executions = 0

    async def deploy(
        request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        nonlocal executions
        executions += 1
        await anyio.sleep(0.05)  # the others arrive while this one runs
        return ActionOutcome(operation_id=ctx.operation_id, changes_state=False)

    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p1", "vercel"),
        adapters=[ScriptedAdapter("vercel")],
        action_handlers={("vercel", "deploy"): deploy},
        engine=engine,
    )
    admitted = 0
    prefix = secrets.token_hex(4)

    async def one(i: int) -> None:
        nonlocal admitted
        key = f"{prefix}-same" if one_key else f"{prefix}-{i}"
        try:
            result = await service.act(VIEWER, BODY, idempotency_key=key)
        except RateLimitExceeded:
            return
        except Exception as exc:  # a concurrent duplicate answers 409 while the first runs
            if getattr(exc, "http_status", None) == 409:
                return
            raise
        if result.status < 300 and not result.replayed:
            admitted += 1

    async with service, anyio.create_task_group() as tg:
        for i in range(requests):
            tg.start_soon(one, i)
    return executions, admitted


def _engines() -> dict[str, Any]:
    engines: dict[str, Any] = {"memory": lambda: None}
    if redis_engine_available():
        from integration_status.backends.redis import RedisEngine  # type: ignore[import-not-found,unused-ignore]

        engines["redis"] = lambda: RedisEngine.from_url(REDIS_URL, prefix=f"bench-{secrets.token_hex(4)}:")
    return engines


def run(smoke: bool = False) -> list[Outcome]:
    outcomes = []
    engines = _engines()
    for name, make in engines.items():
        executions, _ = anyio.run(functools.partial(_round, make(), one_key=True))
        _, admitted = anyio.run(functools.partial(_round, make(), one_key=False))
        print(
            f"[actions] {name}: 50 with one key -> {executions} execution(s); "
            f"50 distinct keys -> {admitted} admitted"
        )
        outcomes.append(
            report(f"actions_{name}_one_key_executions", executions, "== 1", executions == 1, fmt="{:.0f}")
        )
        outcomes.append(
            report(f"actions_{name}_distinct_admitted", admitted, "== 5", admitted == 5, fmt="{:.0f}")
        )
    if "redis" not in engines:
        outcomes.append(skipped("actions_redis", "redis engine not available"))
    return outcomes


if __name__ == "__main__":
    run()
