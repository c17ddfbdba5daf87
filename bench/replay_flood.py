"""Webhook replay flood: one captured GitHub push resent 100,000 times under fresh ``X-GitHub-Delivery`` GUIDs,
through the webhook handler, against the memory and the Redis delivery logs (Redis on 127.0.0.1:6379, skipped
when it is not there). Bars: 0 resends accepted, 0 log entries added, RSS growth < 5 MB.

In process; logging is at warnings (the duplicate answers log at info).
"""

from __future__ import annotations

import gc
import json
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from bench._common import Outcome, report, rss_kib, skipped
from integration_status.backends.memory import MemoryDeliveryLog
from integration_status.core.clock import SYSTEM_CLOCK
from integration_status.protocols import DeliveryLog, Secret
from integration_status.service.webhooks import WebhookTarget, handle_webhook, sign_github

REPLAYS = 100_000
BAR_KIB = 5 * 1024
SECRET = "bench-webhook-secret"
REDIS = ("127.0.0.1", 6379)

PUSH: dict[str, Any] = {
    "ref": "refs/heads/main",
    "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    "deleted": False,
    "repository": {"full_name": "acme/shop"},
}


async def _resolve(provider: str, headers: Any, payload: Any) -> WebhookTarget:
    return WebhookTarget(project_id="demo", secret=Secret(SECRET))


async def _flood(
    log: DeliveryLog, replays: int, entries: Callable[[], Awaitable[int]]
) -> tuple[int, int, int]:
    """One delivery, then ``replays`` resends of it under fresh ids: (accepted resends, entries the resends
    added to the log, RSS growth in KiB)."""
    body = json.dumps(PUSH).encode()
    headers = {"x-github-event": "push", "x-github-delivery": str(uuid.uuid4()), **sign_github(SECRET, body)}
    first = await handle_webhook(
        "github", headers, body, resolve=_resolve, deliveries=log, clock=SYSTEM_CLOCK
    )
    assert first.events, first.body
    gc.collect()
    before, size = rss_kib(os.getpid()), await entries()
    accepted = 0
    for n in range(replays):
        forged = {**headers, "x-github-delivery": f"{n:08x}-{uuid.uuid4()}"}
        result = await handle_webhook(
            "github", forged, body, resolve=_resolve, deliveries=log, clock=SYSTEM_CLOCK
        )
        accepted += result.body.get("duplicate") is not True
    gc.collect()
    return accepted, await entries() - size, rss_kib(os.getpid()) - before


def _redis_up() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1.0):
            return True
    except OSError:
        return False


async def _redis(replays: int) -> tuple[int, int, int]:
    """:func:`_flood` against a RedisEngine under a throwaway prefix (its keys are deleted afterwards)."""
    from integration_status.backends.redis import RedisEngine

    prefix = f"bench-replay-{uuid.uuid4().hex[:8]}"
    engine = RedisEngine.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0", prefix=prefix)
    async with engine:
        client = engine._s.client

        async def keys() -> int:
            return len([k async for k in client.scan_iter(match=f"{prefix}:delivery:*", count=1000)])

        try:
            return await _flood(engine.deliveries, replays, keys)
        finally:
            stale = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if stale:
                await client.delete(*stale)


def run(smoke: bool = False) -> list[Outcome]:
    replays = 2_000 if smoke else REPLAYS
    log = MemoryDeliveryLog(clock=SYSTEM_CLOCK)

    async def entries() -> int:
        return len(log)

    accepted, added, grown = anyio.run(_flood, log, replays, entries)
    print(f"[replay] memory: {replays} resends, {accepted} accepted, log +{added} entries, RSS +{grown} KiB")
    outcomes = [
        report("replay_memory_accepted", accepted, "0", accepted == 0, fmt="{:.0f}"),
        report("replay_memory_entries_added", added, "0", added == 0, fmt="{:.0f}"),
        report("replay_memory_rss_kib", grown, f"< {BAR_KIB}", grown < BAR_KIB, fmt="{:.0f}"),
    ]
    if not _redis_up():
        return [*outcomes, skipped("replay_redis_keys_added", "no Redis on 127.0.0.1:6379")]
    r_accepted, r_added, r_grown = anyio.run(_redis, replays)
    print(f"[replay] redis: {replays} resends, {r_accepted} accepted, +{r_added} keys, RSS +{r_grown} KiB")
    return [
        *outcomes,
        report("replay_redis_accepted", r_accepted, "0", r_accepted == 0, fmt="{:.0f}"),
        report("replay_redis_keys_added", r_added, "0", r_added == 0, fmt="{:.0f}"),
    ]
