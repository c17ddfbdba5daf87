from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status.core.ratelimit import (
    ACTION_WINDOW,
    decide,
    rate_key,
    rate_limit_headers,
    reset_seconds,
    retry_after_seconds,
)
from integration_status.protocols import RateDecision


def run(times: list[float], *, limit: int = 5, window: float = 60) -> list[RateDecision]:
    hits: tuple[float, ...] = ()
    out = []
    for t in times:
        decision, hits = decide(hits, t, limit=limit, window=window)
        out.append(decision)
    return out


def test_five_per_minute_then_refused() -> None:
    """The first five hits in a minute pass with falling `remaining`; the sixth is refused."""
    decisions = run([0, 1, 2, 3, 4, 5])
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert decisions[5].retry_after == 55  # the hit at 0 frees its slot at 60


def test_window_rolls_a_slot_frees_exactly_one_window_after_its_hit() -> None:
    """A hit at t frees its slot at t + window, not at a minute boundary."""
    decisions = run([0, 10, 20, 30, 40, 59.999, 60, 60.5, 70])
    assert [d.allowed for d in decisions] == [True, True, True, True, True, False, True, False, True]


def test_refused_hits_do_not_extend_the_wait() -> None:
    """Hammering while refused does not push the next free slot further away."""
    decisions = run([0, 0, 0, 0, 0, *range(1, 60), 60])
    assert all(not d.allowed for d in decisions[5:-1])
    assert decisions[-1].allowed


def test_retry_after_counts_down_and_reset_is_when_everything_clears() -> None:
    """retry_after is the oldest hit's expiry; reset the newest hit's."""
    hits = (10.0, 20.0, 30.0)
    decision, kept = decide(hits, 40.0, limit=3, window=60)
    assert not decision.allowed
    assert decision.retry_after == 30
    assert decision.reset == 50
    assert kept == hits
    allowed, kept = decide((10.0,), 40.0, limit=3, window=60)
    assert allowed.allowed
    assert allowed.retry_after == 0
    assert allowed.reset == 60
    assert kept == (10.0, 40.0)


def test_expired_hits_are_pruned_from_the_log() -> None:
    """The returned log holds only hits still inside the window."""
    _, kept = decide((1.0, 2.0, 50.0), 62.5, limit=5, window=60)
    assert kept == (50.0, 62.5)


@pytest.mark.parametrize(("limit", "window"), [(0, 60), (-1, 60), (5, 0), (5, -1)])
def test_nonsense_limits_are_refused(limit: int, window: float) -> None:
    """A limit below 1 or a non-positive window is a configuration error."""
    with pytest.raises(ValueError, match="must be"):
        decide((), 0, limit=limit, window=window)


# Whole milliseconds, as the decision compares them; a window from 0.5 s to 2 min.
times_ms = st.lists(st.integers(min_value=0, max_value=500_000), max_size=60).map(sorted)
windows_ms = st.integers(min_value=500, max_value=120_000)


@given(times_ms, st.integers(min_value=1, max_value=6), windows_ms)
def test_never_more_than_limit_hits_in_any_window(ts: list[int], limit: int, window: int) -> None:
    """For any hit times, no window of `window` seconds ever contains more than `limit` allowed hits."""
    decisions = run([t / 1000 for t in ts], limit=limit, window=window / 1000)
    allowed = [t for t, d in zip(ts, decisions, strict=True) if d.allowed]
    for t in allowed:
        assert sum(1 for u in allowed if t - window < u <= t) <= limit
    for d in decisions:
        assert 0 <= d.remaining < limit or (not d.allowed and d.remaining == 0)


@given(
    times_ms, st.integers(min_value=1, max_value=6), windows_ms, st.integers(min_value=0, max_value=10**12)
)
def test_waiting_retry_after_seconds_is_always_enough(
    ts: list[int], limit: int, window: int, base: int
) -> None:
    """A refused client that waits the advertised whole seconds is admitted, whatever the clock's offset."""
    hits: tuple[float, ...] = ()
    for t in ts:
        now = (base + t) / 1000
        decision, hits = decide(hits, now, limit=limit, window=window / 1000)
        if not decision.allowed:
            wait = retry_after_seconds(decision)
            assert decision.retry_after > 0
            later, _ = decide(hits, now + wait, limit=limit, window=window / 1000)
            assert later.allowed
            sooner, _ = decide(hits, now + decision.retry_after - 0.001, limit=limit, window=window / 1000)
            assert not sooner.allowed


def test_float_noise_does_not_refuse_a_client_that_waited() -> None:
    """0.1 + 60 - 1.1 is 58.99999999999999 in floats; the client waiting 59 s must still get in."""
    hits = (0.1,)
    refused_now, hits = decide(hits, 1.1, limit=1, window=60)
    assert retry_after_seconds(refused_now) == 59
    assert decide(hits, 1.1 + 59, limit=1, window=60)[0].allowed


def refused(retry_after: float, reset: float = 60) -> RateDecision:
    return RateDecision(allowed=False, limit=5, remaining=0, retry_after=retry_after, reset=reset)


@pytest.mark.parametrize(
    ("retry_after", "seconds"), [(0.0001, 1), (0.9, 1), (1.0, 1), (1.2, 2), (59.999, 60)]
)
def test_retry_after_seconds_rounds_up_to_at_least_one(retry_after: float, seconds: int) -> None:
    """Retry-After is whole seconds, rounded up, never 0."""
    assert retry_after_seconds(refused(retry_after)) == seconds


def test_headers_of_a_refusal() -> None:
    """A refusal carries the policy, the state and a Retry-After equal to retry_after_seconds."""
    decision = refused(12.2, reset=50.5)
    assert rate_limit_headers(decision) == {
        "RateLimit-Policy": "5;w=60",
        "RateLimit": "limit=5, remaining=0, reset=51",
        "Retry-After": str(retry_after_seconds(decision)),
    }
    assert retry_after_seconds(decision) == 13


def test_headers_of_an_allowed_hit_have_no_retry_after() -> None:
    """An admitted action gets the RateLimit headers but no Retry-After."""
    decision, _ = decide((), 0, limit=5, window=ACTION_WINDOW)
    headers = rate_limit_headers(decision)
    assert headers == {"RateLimit-Policy": "5;w=60", "RateLimit": "limit=5, remaining=4, reset=60"}
    assert reset_seconds(decision) == math.ceil(decision.reset)


def test_rate_keys_separate_users_and_projects() -> None:
    """Each (user, project) has its own key, and separator tricks do not merge two."""
    assert rate_key("u", "p") == rate_key("u", "p")
    assert rate_key("u", "p") != rate_key("u", "q")
    assert rate_key("u", "p") != rate_key("p", "u")
    assert rate_key("a:b", "c") != rate_key("a", "b:c")
