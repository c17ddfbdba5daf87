"""Replay floods against the webhook delivery log on both engines: a captured delivery resent under fresh,
unsigned delivery ids is never accepted and never writes a key; oversized ids are refused."""

from __future__ import annotations

from typing import Any

import pytest

from integration_status.backends.memory import MemoryDeliveryLog
from integration_status.core.webhooks import MAX_DELIVERY_ID_LENGTH
from integration_status.protocols import DeliveryLog
from integration_status.service.webhooks import handle_webhook
from integration_status.testing import FakeClock
from tests.web.test_webhooks import (
    GITHUB_PUSH,
    SANITY_DOCUMENT,
    Resolver,
    github_request,
    sanity_request,
    vercel_event,
    vercel_request,
)

pytestmark = pytest.mark.anyio

MEMORY_REPLAYS = 10_000
REDIS_REPLAYS = 2_000


async def _redis_keys(redis_raw: Any, prefix: str) -> int:
    return len([k async for k in redis_raw.scan_iter(match=f"{prefix}:delivery:*", count=1000)])


async def _deliver_once(log: DeliveryLog, clock: FakeClock) -> None:
    headers, body = github_request(GITHUB_PUSH)
    first = await handle_webhook("github", headers, body, resolve=Resolver(), deliveries=log, clock=clock)
    assert first.status == 200
    assert len(first.events) == 1


async def _replay_github(log: DeliveryLog, clock: FakeClock, replays: int) -> int:
    """Resend the captured push ``replays`` times under fresh X-GitHub-Delivery GUIDs; how many of the resends
    were accepted (answered without ``duplicate``)."""
    resolver = Resolver()
    headers, body = github_request(GITHUB_PUSH)
    accepted = 0
    for n in range(replays):
        forged = {**headers, "X-GitHub-Delivery": f"{n:08x}-0000-4000-8000-{n:012x}"}
        result = await handle_webhook("github", forged, body, resolve=resolver, deliveries=log, clock=clock)
        accepted += (
            result.status != 200 or result.body != {"ok": True, "duplicate": True} or bool(result.events)
        )
    return accepted


async def test_memory_log_replays_under_fresh_ids_accept_none_and_write_nothing() -> None:
    """10,000 resends of one captured delivery under new GUIDs: none accepted, the log holds the same two keys."""
    clock = FakeClock()
    log = MemoryDeliveryLog(clock=clock)
    await _deliver_once(log, clock)
    assert len(log) == 2
    assert await _replay_github(log, clock, MEMORY_REPLAYS) == 0
    assert len(log) == 2


async def test_redis_log_replays_under_fresh_ids_accept_none_and_write_nothing(
    redis_engine: Any, redis_raw: Any, redis_clock: FakeClock
) -> None:
    """The same flood against the shared Redis log: none accepted, no key added under the prefix."""
    await _deliver_once(redis_engine.deliveries, redis_clock)
    before = await _redis_keys(redis_raw, redis_engine.prefix)
    assert before == 2
    assert await _replay_github(redis_engine.deliveries, redis_clock, REDIS_REPLAYS) == 0
    assert await _redis_keys(redis_raw, redis_engine.prefix) == before


async def test_sanity_replay_under_fresh_idempotency_keys_writes_nothing() -> None:
    """A Sanity delivery resent within its signature window with new idempotency-key headers adds no entry."""
    clock = FakeClock()
    log = MemoryDeliveryLog(clock=clock)
    headers, body = sanity_request(SANITY_DOCUMENT, clock)
    await handle_webhook("sanity", headers, body, resolve=Resolver(), deliveries=log, clock=clock)
    size = len(log)
    for n in range(1000):
        forged = {**headers, "idempotency-key": f"forged-{n}"}
        result = await handle_webhook("sanity", forged, body, resolve=Resolver(), deliveries=log, clock=clock)
        assert result.body == {"ok": True, "duplicate": True}
    assert len(log) == size


@pytest.mark.parametrize("provider", ["github", "vercel", "sanity"])
async def test_a_delivery_id_over_the_bound_is_a_400_and_records_nothing(provider: str) -> None:
    """A delivery id longer than MAX_DELIVERY_ID_LENGTH is refused with the error object; the log stays empty."""
    clock = FakeClock()
    log = MemoryDeliveryLog(clock=clock)
    long_id = "d" * (MAX_DELIVERY_ID_LENGTH + 1)
    if provider == "github":
        headers, body = github_request(GITHUB_PUSH, delivery=long_id)
    elif provider == "vercel":
        headers, body = vercel_request(vercel_event("deployment.created", delivery=long_id))
    else:
        headers, body = sanity_request(SANITY_DOCUMENT, clock, **{"idempotency-key": long_id})
    result = await handle_webhook(provider, headers, body, resolve=Resolver(), deliveries=log, clock=clock)
    assert result.status == 400
    assert result.body["error"]["code"] == "invalid_request"
    assert str(MAX_DELIVERY_ID_LENGTH) in result.body["error"]["message"]
    assert len(log) == 0


async def test_a_delivery_id_at_the_bound_is_accepted() -> None:
    """Exactly MAX_DELIVERY_ID_LENGTH characters is still a valid delivery id."""
    clock = FakeClock()
    log = MemoryDeliveryLog(clock=clock)
    headers, body = github_request(GITHUB_PUSH, delivery="d" * MAX_DELIVERY_ID_LENGTH)
    result = await handle_webhook("github", headers, body, resolve=Resolver(), deliveries=log, clock=clock)
    assert result.status == 200
    assert len(result.events) == 1


async def test_a_delivery_signed_before_the_log_can_remember_is_a_duplicate() -> None:
    """A Vercel delivery whose signed createdAt is older than replay_ttl - tolerance is answered as a replay and
    writes nothing: its first acceptance may have been forgotten already."""
    clock = FakeClock()
    log = MemoryDeliveryLog(clock=clock)
    event = vercel_event("deployment.created")
    headers, body = vercel_request(event)
    clock.advance(event["createdAt"] / 1000 - clock.time() + 86_400 - 300)
    result = await handle_webhook("vercel", headers, body, resolve=Resolver(), deliveries=log, clock=clock)
    assert result.body == {"ok": True, "duplicate": True}
    assert result.events == ()
    assert len(log) == 0


async def test_a_github_push_with_an_old_pushed_at_is_a_duplicate() -> None:
    """A push whose signed repository.pushed_at is a day old is not accepted, even on an empty log."""
    clock = FakeClock()
    log = MemoryDeliveryLog(clock=clock)
    old = {
        **GITHUB_PUSH,
        "repository": {**GITHUB_PUSH["repository"], "pushed_at": int(clock.time()) - 86_400},
    }
    headers, body = github_request(old)
    result = await handle_webhook("github", headers, body, resolve=Resolver(), deliveries=log, clock=clock)
    assert result.body == {"ok": True, "duplicate": True}
    fresh = {**GITHUB_PUSH, "repository": {**GITHUB_PUSH["repository"], "pushed_at": int(clock.time()) - 5}}
    headers, body = github_request(fresh)
    result = await handle_webhook("github", headers, body, resolve=Resolver(), deliveries=log, clock=clock)
    assert len(result.events) == 1


@pytest.mark.parametrize("header", ["x-hub-signature-256", "sanity-webhook-signature"])
async def test_an_oversized_signature_header_is_malformed(header: str) -> None:
    """A signature header of 1 MB is a 401 malformed_signature, read no further than its length."""
    clock = FakeClock()
    provider = "github" if header.startswith("x-hub") else "sanity"
    headers, body = (
        github_request(GITHUB_PUSH) if provider == "github" else sanity_request(SANITY_DOCUMENT, clock)
    )
    headers = {k: v for k, v in headers.items() if k.lower() != header}
    headers[header] = "sha256=" + "a" * 1_000_000 if provider == "github" else "t=1,v1=" + "a" * 1_000_000
    log = MemoryDeliveryLog(clock=clock)
    result = await handle_webhook(provider, headers, body, resolve=Resolver(), deliveries=log, clock=clock)
    assert result.status == 401
    assert result.body["error"]["message"] == "Malformed webhook signature"
