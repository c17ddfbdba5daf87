"""The circuit breaker: pure transitions, the holder class, and a state-machine test of its invariants."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from integration_status._logging import capture_logs
from integration_status.core.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    acquire,
    advance,
    record_outcome,
    retry_at,
)
from integration_status.exceptions import ConfigurationError
from integration_status.testing import FakeClock

FAST = 0.1


def _fail(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        assert breaker.allow()
        breaker.record(success=False, duration=FAST)


def _ok(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        assert breaker.allow()
        breaker.record(success=True, duration=FAST)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0},
        {"window": -1},
        {"min_calls": 0},
        {"min_calls": 2.5},
        {"consecutive_failures": True},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"slow_call": 0},
        {"open_for": -3},
        {"half_open_permits": 0},
        {"half_open_max_wait": 0},
        {"window": "60"},
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    """Invalid breaker settings raise ConfigurationError naming the setting."""
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        BreakerConfig(**kwargs)


def test_defaults_match_the_documented_values() -> None:
    """The defaults are those of the documentation (sized for low-traffic providers)."""
    c = BreakerConfig()
    assert (c.window, c.min_calls, c.consecutive_failures, c.failure_rate) == (60.0, 5, 3, 0.5)
    assert (c.slow_call, c.open_for, c.half_open_permits, c.half_open_max_wait) == (2.0, 30.0, 1, 10.0)


def test_consecutive_failures_open_a_low_traffic_breaker() -> None:
    """Three failures 15 s apart open the breaker although the window holds fewer than min_calls calls."""
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, name="vercel")
    for _ in range(3):
        assert breaker.state == "closed"
        _fail(breaker)
        clock.advance(15)
    assert breaker.state == "open"


def test_a_success_resets_the_consecutive_count() -> None:
    """Failures interrupted by a success do not open a breaker below min_calls."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(min_calls=100), clock=clock)
    for _ in range(4):
        _fail(breaker, 2)
        _ok(breaker)
    assert breaker.state == "closed"


def test_failure_rate_over_the_window_opens() -> None:
    """With min_calls reached, a failure rate at the threshold opens the breaker."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(min_calls=4, consecutive_failures=10), clock=clock)
    _ok(breaker)
    _fail(breaker)
    _ok(breaker)
    assert breaker.state == "closed"
    _fail(breaker)  # 2 of 4 failed = 0.5
    assert breaker.state == "open"


def test_old_outcomes_leave_the_window() -> None:
    """Failures older than the window no longer count towards the rate."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(min_calls=4, consecutive_failures=10, window=60), clock=clock)
    _fail(breaker)
    _ok(breaker)
    _fail(breaker)
    clock.advance(61)
    _ok(breaker, 2)
    _fail(breaker)
    _ok(breaker)  # window now: ok ok fail ok -> 0.25
    assert breaker.state == "closed"
    assert len(breaker.snapshot.outcomes) == 4


def test_slow_success_counts_as_failure() -> None:
    """A success slower than slow_call counts as a failure; one exactly at slow_call does not."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(slow_call=2.0, min_calls=100), clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record(success=True, duration=2.5)
    assert breaker.allow()
    breaker.record(success=True, duration=2.0)
    assert breaker.snapshot.consecutive == 0
    for _ in range(3):
        assert breaker.allow()
        breaker.record(success=True, duration=2.01)
    assert breaker.state == "open"


def test_open_rejects_until_open_for_then_half_opens() -> None:
    """An open breaker rejects every call until open_for has elapsed, then lets one trial through."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(open_for=30), clock=clock)
    _fail(breaker, 3)
    opened = clock.monotonic()
    assert breaker.retry_at() == opened + 30
    clock.advance(29.9)
    assert not breaker.allow()
    assert breaker.state == "open"
    clock.advance(0.1)
    assert breaker.state == "half_open"
    assert breaker.retry_at() is None
    assert breaker.allow()
    assert not breaker.allow()
    assert breaker.retry_at() == clock.monotonic() + 10


def test_half_open_failure_reopens_and_success_closes() -> None:
    """A failed trial reopens the breaker for another open_for; a successful one closes it, window cleared."""
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    _fail(breaker, 3)
    clock.advance(30)
    _fail(breaker)
    assert breaker.state == "open"
    assert breaker.retry_at() == clock.monotonic() + 30
    clock.advance(30)
    _ok(breaker)
    assert breaker.state == "closed"
    assert breaker.snapshot == BreakerState()


def test_half_open_needs_every_permit_to_succeed() -> None:
    """With two permits, one success is not enough to close; both succeeding closes."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(half_open_permits=2), clock=clock)
    _fail(breaker, 3)
    clock.advance(30)
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()
    breaker.record(success=True, duration=FAST)
    assert breaker.state == "half_open"
    assert not breaker.allow()  # the used permit is not given back
    breaker.record(success=True, duration=FAST)
    assert breaker.state == "closed"


def test_a_lost_trial_is_reclaimed_after_half_open_max_wait() -> None:
    """A trial that never reports back frees its permit after half_open_max_wait: no wedged breaker."""
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(half_open_max_wait=10), clock=clock)
    _fail(breaker, 3)
    clock.advance(30)
    assert breaker.allow()
    clock.advance(9.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()
    breaker.record(success=True, duration=FAST)
    assert breaker.state == "closed"


def test_reports_while_open_are_ignored() -> None:
    """Late reports of calls let through before the breaker opened neither close nor extend it."""
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    _fail(breaker, 3)
    clock.advance(10)
    breaker.record(success=True, duration=FAST)
    breaker.record(success=False, duration=FAST)
    assert breaker.state == "open"
    assert breaker.retry_at() == clock.monotonic() + 20


def test_transitions_are_logged_with_the_provider_name() -> None:
    """opened, half_opened and closed are logged once each, with the provider name."""
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, name="sanity")
    with capture_logs() as logs:
        _fail(breaker, 3)
        clock.advance(30)
        assert breaker.state == "half_open"
        _ok(breaker)
    assert [(e["event"], e["provider"]) for e in logs] == [
        ("integration_status.breaker.opened", "sanity"),
        ("integration_status.breaker.half_opened", "sanity"),
        ("integration_status.breaker.closed", "sanity"),
    ]


def test_pure_functions_do_not_mutate_their_input() -> None:
    """The transition functions return new states and leave their arguments alone."""
    config = BreakerConfig()
    state = BreakerState()
    after = record_outcome(state, config, 1.0, success=False, duration=FAST)
    assert state == BreakerState()
    assert after.outcomes == ((1.0, True),)
    opened = BreakerState(phase="open", opened_at=0.0)
    assert advance(opened, config, 29.0) is opened
    assert acquire(opened, config, 30.0) == (BreakerState(phase="half_open", trials=(30.0,)), True)
    assert retry_at(opened, config, 5.0) == 30.0


class BreakerMachine(RuleBasedStateMachine):
    """Drive a breaker with random calls, reports and time steps; check it against the documented rules."""

    @initialize(
        min_calls=st.integers(1, 8),
        consecutive=st.integers(1, 5),
        rate=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
        permits=st.integers(1, 3),
    )
    def setup(self, min_calls: int, consecutive: int, rate: float, permits: int) -> None:
        self.config = BreakerConfig(
            window=60,
            min_calls=min_calls,
            consecutive_failures=consecutive,
            failure_rate=rate,
            slow_call=2.0,
            open_for=30,
            half_open_permits=permits,
            half_open_max_wait=10,
        )
        self.clock = FakeClock()
        self.breaker = CircuitBreaker(self.config, clock=self.clock, name="x")
        self.in_flight: list[float] = []  # start times of calls let through and not reported
        self.history: list[tuple[float, bool]] = []  # (time, failed) of reports made while closed
        self.opened_at: float | None = None
        self.trials_started = 0

    def _phase(self) -> str:
        return self.breaker.snapshot.phase

    @rule()
    def call(self) -> None:
        before = self._phase()
        now = self.clock.monotonic()
        allowed = self.breaker.allow()
        if before == "open":
            assert self.opened_at is not None
            # While open, nothing passes before open_for has elapsed.
            assert not allowed or now >= self.opened_at + self.config.open_for
        if before == "closed":
            assert allowed
        if allowed:
            self.in_flight.append(now)

    @precondition(lambda self: bool(self.in_flight))
    @rule(success=st.booleans(), duration=st.sampled_from([0.1, 1.9, 2.0, 2.1, 5.0]))
    def report(self, success: bool, duration: float) -> None:
        self.in_flight.pop(0)
        failed = not success or duration > self.config.slow_call
        before = self._phase()
        now = self.clock.monotonic()
        self.breaker.record(success=success, duration=duration)
        after = self._phase()
        if before == "closed":
            self.history.append((now, failed))
            window = [f for t, f in self.history if t > now - self.config.window]
            run = 0
            for _, f in reversed(self.history):
                if not f:
                    break
                run += 1
            if after == "open":
                # Only a failure opens it: a full window over the rate, or enough failures in a row.
                assert failed
                assert run >= self.config.consecutive_failures or (
                    len(window) >= self.config.min_calls
                    and sum(window) / len(window) >= self.config.failure_rate
                )
                self.history.clear()
            else:
                assert run < self.config.consecutive_failures
                if failed and len(window) >= self.config.min_calls:
                    assert sum(window) / len(window) < self.config.failure_rate
        if before == "half_open" and after == "closed":
            assert not failed
        if after == "open" and before != "open":
            self.opened_at = now
        if before == "open":
            assert after == "open"  # reports never move an open breaker
        if after == "closed" and before != "closed":
            self.history.clear()

    @rule(seconds=st.sampled_from([0.5, 5.0, 10.0, 15.0, 29.9, 30.0, 61.0]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def permits_are_bounded(self) -> None:
        state = self.breaker.snapshot
        if state.phase == "half_open":
            assert len(state.trials) + state.trial_successes <= self.config.half_open_permits
            assert all(self.clock.monotonic() - t < self.config.half_open_max_wait for t in state.trials)
        else:
            assert state.trials == ()

    @invariant()
    def open_means_rejected_until_retry_at(self) -> None:
        state = self.breaker.snapshot
        if state.phase == "open":
            at = self.breaker.retry_at()
            assert at is not None
            assert at > self.clock.monotonic()
            assert state.outcomes == ()


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_breaker_state_machine = BreakerMachine.TestCase
