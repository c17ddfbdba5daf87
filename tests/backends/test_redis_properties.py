"""Invariants of the Redis stores, checked with Hypothesis against the real Redis."""

from __future__ import annotations

import uuid

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration_status.backends.redis import RedisEngine
from integration_status.protocols import RateDecision
from integration_status.testing import FakeClock

pytestmark = pytest.mark.redis


def sliding_window(
    hits: list[float], now: float, limit: int, window: float
) -> tuple[list[float], RateDecision]:
    """The reference model: a hit counts while it is less than one window old."""
    live = [t for t in hits if t > now - window]
    allowed = len(live) < limit
    if allowed:
        live.append(now)
    return live, RateDecision(
        allowed=allowed,
        limit=limit,
        remaining=limit - len(live),
        retry_after=0.0 if allowed else live[0] + window - now,
        reset=max(live) + window - now,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit=st.integers(min_value=1, max_value=6),
    window=st.sampled_from([1.0, 10.0, 60.0]),
    # steps in quarters of the window: hits land exactly one window apart often, and every instant is exact
    # in binary floating point
    quarters=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=25),
)
def test_rate_limiter_matches_the_sliding_window_model(
    redis_url: str, redis_prefix: str, limit: int, window: float, quarters: list[int]
) -> None:
    """For any timing of hits, every Redis decision equals the reference sliding-window model's."""
    clock = FakeClock()
    key = uuid.uuid4().hex

    async def scenario() -> None:
        async with RedisEngine.from_url(redis_url, prefix=redis_prefix, clock=clock) as engine:
            hits: list[float] = []
            for quarter in quarters:
                clock.advance(window * quarter / 4)
                hits, expected = sliding_window(hits, clock.time(), limit, window)
                assert await engine.rate_limiter.hit(key, limit=limit, window=window) == expected

    anyio.run(scenario)
