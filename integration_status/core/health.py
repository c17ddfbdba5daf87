"""The health decision: a pure function from a frozen :class:`HealthStats` of recent statistics to a
:class:`HealthReport`.

The thresholds are the ones of the requirements' "Health Checks": each adapter's timeout and error rate under
5%, the status endpoint's p95 under 500 ms, and SSE connection stability over 99%. A check with fewer than
``min_samples`` observations in the window passes (there is too little traffic to judge), and says so.

>>> snap = HealthStats(window=300.0, adapters=(AdapterStats(provider="github", calls=40, timeouts=3),))
>>> report = evaluate(snap)
>>> report.healthy, [c.name for c in report.checks if not c.passed]
(False, ['adapter.github'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import attrs

from integration_status.protocols import HealthAuthorizer

__all__ = [
    "LIVENESS",
    "AdapterStats",
    "HealthAuthorizer",
    "HealthCheck",
    "HealthReport",
    "HealthStats",
    "HealthThresholds",
    "SseStats",
    "evaluate",
    "percentile",
]


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class HealthThresholds:
    """Where healthy ends. Rates are fractions (0.05 = 5%), durations seconds."""

    max_adapter_failure_rate: float = attrs.field(default=0.05, validator=[attrs.validators.ge(0)])
    max_status_p95: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    min_sse_stability: float = attrs.field(
        default=0.99, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    min_samples: int = attrs.field(default=20, validator=attrs.validators.ge(1))


@attrs.frozen(kw_only=True)
class AdapterStats:
    """One provider's adapter calls in the window. ``auth`` calls (access lost) are the provider answering
    correctly and count as neither timeouts nor errors."""

    provider: str
    calls: int = attrs.field(default=0, validator=_non_negative)
    timeouts: int = attrs.field(default=0, validator=_non_negative)
    errors: int = attrs.field(default=0, validator=_non_negative)

    @property
    def failure_rate(self) -> float:
        """(timeouts + errors) / calls; 0 without calls."""
        return (self.timeouts + self.errors) / self.calls if self.calls else 0.0


@attrs.frozen(kw_only=True)
class SseStats:
    """Event streams: open now, and in the window how many ended and how many of those ended by an error
    (a client going away is a normal end)."""

    open: int = attrs.field(default=0, validator=_non_negative)
    ended: int = attrs.field(default=0, validator=_non_negative)
    dropped: int = attrs.field(default=0, validator=_non_negative)

    @property
    def stability(self) -> float:
        """1 - dropped / ended; 1 when none ended."""
        return 1.0 - self.dropped / self.ended if self.ended else 1.0


@attrs.frozen(kw_only=True)
class HealthStats:
    """Everything the decision looks at, frozen at one moment. ``status_durations`` are the most recent
    status request durations (seconds), in any order."""

    window: float
    adapters: tuple[AdapterStats, ...] = ()
    status_durations: tuple[float, ...] = ()
    sse: SseStats = attrs.field(factory=SseStats)


@attrs.frozen(kw_only=True)
class HealthCheck:
    """One check: what was observed against which limit, on how many samples."""

    name: str
    passed: bool
    observed: float | None
    threshold: float
    samples: int
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "passed": self.passed,
            "threshold": self.threshold,
            "samples": self.samples,
        }
        if self.observed is not None:  # optional fields are omitted, never null
            out["observed"] = round(self.observed, 6)
        if self.detail:
            out["detail"] = self.detail
        return out


@attrs.frozen(kw_only=True)
class HealthReport:
    """The verdict: healthy when every check passed. ``http_status`` is 200 or 503."""

    checks: tuple[HealthCheck, ...]
    window: float

    @property
    def healthy(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def http_status(self) -> int:
        return 200 if self.healthy else 503

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "degraded",
            "windowSeconds": self.window,
            "checks": [c.to_json() for c in self.checks],
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``; None when empty.

    >>> percentile([0.1, 0.2, 0.3, 0.4], 95)
    0.4
    """
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {q!r}")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _too_few(samples: int, thresholds: HealthThresholds) -> str:
    return f"fewer than {thresholds.min_samples} samples" if samples < thresholds.min_samples else ""


def evaluate(stats: HealthStats, thresholds: HealthThresholds | None = None) -> HealthReport:
    """Judge ``stats``: one check per adapter (``adapter.<provider>``), ``status.p95`` and
    ``sse.stability``. A rate or percentile passes strictly inside its limit, or with too few samples."""
    t = thresholds or HealthThresholds()
    checks: list[HealthCheck] = []
    for adapter in sorted(stats.adapters, key=lambda a: a.provider):
        few = _too_few(adapter.calls, t)
        checks.append(
            HealthCheck(
                name=f"adapter.{adapter.provider}",
                passed=bool(few) or adapter.failure_rate < t.max_adapter_failure_rate,
                observed=adapter.failure_rate if adapter.calls else None,
                threshold=t.max_adapter_failure_rate,
                samples=adapter.calls,
                detail=few or f"{adapter.timeouts} timeouts, {adapter.errors} errors",
            )
        )
    durations = stats.status_durations
    p95 = percentile(durations, 95)
    few = _too_few(len(durations), t)
    checks.append(
        HealthCheck(
            name="status.p95",
            passed=bool(few) or (p95 is not None and p95 < t.max_status_p95),
            observed=p95,
            threshold=t.max_status_p95,
            samples=len(durations),
            detail=few,
        )
    )
    sse = stats.sse
    few = _too_few(sse.ended, t)
    checks.append(
        HealthCheck(
            name="sse.stability",
            passed=bool(few) or sse.stability > t.min_sse_stability,
            observed=sse.stability if sse.ended else None,
            threshold=t.min_sse_stability,
            samples=sse.ended,
            detail=few or f"{sse.open} open, {sse.dropped} of {sse.ended} ended by an error",
        )
    )
    return HealthReport(checks=tuple(checks), window=stats.window)


#: The health answer for everyone else: the process is up and serving. Always 200: a provider's outage must not
#: take the instances out of a load balancer's rotation.
LIVENESS: Final = {"status": "ok"}
