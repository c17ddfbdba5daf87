"""A circuit breaker per provider: pure transitions over a frozen :class:`BreakerState`, and a small holder.

::

    closed --(failure rate over the window, or N consecutive failures)--> open
    open --(open_for elapsed)--> half_open
    half_open --(every trial permit succeeded)--> closed        half_open --(any trial failed)--> open

A successful call slower than ``slow_call`` counts as a failure. The window counts call outcomes over the
last ``window`` seconds; with fewer than ``min_calls`` of them the rate is not trusted, but
``consecutive_failures`` failures in a row open the breaker anyway, so a provider polled only every 15 s still
trips it. A half-open trial that never reports back is reclaimed after ``half_open_max_wait`` so the breaker
cannot wedge half-open.

All times are ``clock.monotonic()`` seconds.

>>> config, state = BreakerConfig(), BreakerState()
>>> for t in (0, 15, 30):
...     state = record_outcome(state, config, t, success=False, duration=0.1)
>>> state.phase, acquire(state, config, 31)[1]
('open', False)
>>> state, allowed = acquire(state, config, 60)
>>> state.phase, allowed, acquire(state, config, 60)[1]
('half_open', True, False)
>>> record_outcome(state, config, 61, success=True, duration=0.1).phase
'closed'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import attrs

from integration_status._logging import get_logger
from integration_status.core.clock import Clock
from integration_status.exceptions import ConfigurationError

__all__ = [
    "BreakerConfig",
    "BreakerPhase",
    "BreakerState",
    "CircuitBreaker",
    "acquire",
    "advance",
    "record_outcome",
    "retry_at",
]

BreakerPhase: TypeAlias = Literal["closed", "open", "half_open"]


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"breaker {attribute.name} must be a positive number, not {value!r}")


def _count(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"breaker {attribute.name} must be an integer >= 1, not {value!r}")


def _rate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigurationError(f"breaker {attribute.name} must be in (0, 1], not {value!r}")


@attrs.frozen(kw_only=True)
class BreakerConfig:
    """When a breaker opens and how it recovers (seconds, counts, rates)."""

    window: float = attrs.field(default=60.0, validator=_positive)
    min_calls: int = attrs.field(default=5, validator=_count)
    consecutive_failures: int = attrs.field(default=3, validator=_count)
    failure_rate: float = attrs.field(default=0.5, validator=_rate)
    slow_call: float = attrs.field(default=2.0, validator=_positive)
    open_for: float = attrs.field(default=30.0, validator=_positive)
    half_open_permits: int = attrs.field(default=1, validator=_count)
    half_open_max_wait: float = attrs.field(default=10.0, validator=_positive)


@attrs.frozen(kw_only=True)
class BreakerState:
    """Everything a breaker knows. ``outcomes`` are ``(time, failed)`` pairs inside the window (closed only);
    ``trials`` are the start times of half-open trials that have not reported yet."""

    phase: BreakerPhase = "closed"
    outcomes: tuple[tuple[float, bool], ...] = ()
    consecutive: int = 0
    opened_at: float | None = None
    trials: tuple[float, ...] = ()
    trial_successes: int = 0


def _opened(now: float) -> BreakerState:
    return BreakerState(phase="open", opened_at=now)


def advance(state: BreakerState, config: BreakerConfig, now: float) -> BreakerState:
    """Apply the passage of time: open -> half_open after ``open_for``, reclaim overdue half-open trials, drop
    outcomes that left the window."""
    if state.phase == "open":
        assert state.opened_at is not None
        if now >= state.opened_at + config.open_for:
            return BreakerState(phase="half_open")
        return state
    if state.phase == "half_open":
        live = tuple(t for t in state.trials if now < t + config.half_open_max_wait)
        return state if live == state.trials else attrs.evolve(state, trials=live)
    kept = tuple(o for o in state.outcomes if o[0] > now - config.window)
    return state if kept == state.outcomes else attrs.evolve(state, outcomes=kept)


def acquire(state: BreakerState, config: BreakerConfig, now: float) -> tuple[BreakerState, bool]:
    """May a call go out now? In half-open this takes one trial permit."""
    state = advance(state, config, now)
    if state.phase == "closed":
        return state, True
    if state.phase == "open":
        return state, False
    if len(state.trials) + state.trial_successes >= config.half_open_permits:
        return state, False
    return attrs.evolve(state, trials=(*state.trials, now)), True


def record_outcome(
    state: BreakerState, config: BreakerConfig, now: float, *, success: bool, duration: float
) -> BreakerState:
    """Account for one finished call. A success slower than ``slow_call`` counts as a failure.

    While open, reports are ignored (they come from calls let through before it opened). In half-open a report
    settles the oldest outstanding trial; without one it is a late report of an earlier call and is ignored.
    """
    failed = not success or duration > config.slow_call
    state = advance(state, config, now)
    if state.phase == "open":
        return state
    if state.phase == "half_open":
        if not state.trials:
            return state
        if failed:
            return _opened(now)
        successes = state.trial_successes + 1
        if successes >= config.half_open_permits:
            return BreakerState()
        return attrs.evolve(state, trials=state.trials[1:], trial_successes=successes)
    outcomes = (*state.outcomes, (now, failed))
    consecutive = state.consecutive + 1 if failed else 0
    if consecutive >= config.consecutive_failures:
        return _opened(now)
    # Only a failure can open the breaker: a call that just worked is no reason to stop calling.
    if failed and len(outcomes) >= config.min_calls:
        failures = sum(1 for _, f in outcomes if f)
        if failures / len(outcomes) >= config.failure_rate:
            return _opened(now)
    return attrs.evolve(state, outcomes=outcomes, consecutive=consecutive)


def retry_at(state: BreakerState, config: BreakerConfig, now: float) -> float | None:
    """When a call will next be let through, or None if one would be let through now."""
    state = advance(state, config, now)
    if state.phase == "open":
        assert state.opened_at is not None
        return state.opened_at + config.open_for
    if state.phase == "half_open" and len(state.trials) + state.trial_successes >= config.half_open_permits:
        # Only a reclaimed trial frees a permit; a report frees none but closes or reopens the breaker.
        return min(state.trials) + config.half_open_max_wait if state.trials else None
    return None


_EVENTS: dict[BreakerPhase, str] = {
    "open": "integration_status.breaker.opened",
    "half_open": "integration_status.breaker.half_opened",
    "closed": "integration_status.breaker.closed",
}


class CircuitBreaker:
    """Holds one provider's :class:`BreakerState` and logs its transitions. Not thread-safe; use it from one
    event loop (every method is synchronous, so it is safe across tasks)."""

    def __init__(
        self,
        config: BreakerConfig | None = None,
        *,
        clock: Clock,
        name: str = "",
        on_transition: Callable[[BreakerPhase, BreakerPhase], None] | None = None,
    ) -> None:
        self.config = config if config is not None else BreakerConfig()
        self.name = name
        self._on_transition = on_transition
        self._clock = clock
        self._state = BreakerState()

    def _set(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        if new.phase != old.phase:
            get_logger(__name__).info(_EVENTS[new.phase], provider=self.name, previous=old.phase)
            if self._on_transition is not None:
                self._on_transition(old.phase, new.phase)

    @property
    def snapshot(self) -> BreakerState:
        """The current state (after applying the passage of time)."""
        self._set(advance(self._state, self.config, self._clock.monotonic()))
        return self._state

    @property
    def state(self) -> BreakerPhase:
        """``closed``, ``open`` or ``half_open``; an open breaker is half-open once ``open_for`` elapsed."""
        return self.snapshot.phase

    def allow(self) -> bool:
        """Whether a call may go out now. False while open; in half-open it takes a trial permit."""
        new, allowed = acquire(self._state, self.config, self._clock.monotonic())
        self._set(new)
        return allowed

    def record(self, *, success: bool, duration: float) -> None:
        """Report a finished call that :meth:`allow` let through; ``duration`` in seconds."""
        now = self._clock.monotonic()
        self._set(record_outcome(self._state, self.config, now, success=success, duration=duration))

    def retry_at(self) -> float | None:
        """The monotonic time at which a call will next be let through; None if one would be now."""
        return retry_at(self._state, self.config, self._clock.monotonic())

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self._state.phase!r})"
