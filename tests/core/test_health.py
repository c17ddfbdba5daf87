"""The pure health decision: thresholds, sample minimums, percentiles and the JSON report."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from integration_status.core.health import (
    AdapterStats,
    HealthStats,
    HealthThresholds,
    SseStats,
    evaluate,
    percentile,
)

FAST = tuple([0.01] * 40)


def adapter_stats() -> st.SearchStrategy[AdapterStats]:
    return st.builds(
        lambda provider, ok, timeouts, errors: AdapterStats(
            provider=provider, calls=ok + timeouts + errors, timeouts=timeouts, errors=errors
        ),
        st.sampled_from(["github", "vercel", "sanity", "supabase"]),
        st.integers(0, 200),
        st.integers(0, 20),
        st.integers(0, 20),
    )


snapshots = st.builds(
    HealthStats,
    window=st.just(300.0),
    adapters=st.lists(adapter_stats(), max_size=4, unique_by=lambda a: a.provider).map(tuple),
    status_durations=st.lists(st.floats(0, 3, allow_nan=False), max_size=60).map(tuple),
    sse=st.builds(
        lambda ended, dropped, open_: SseStats(open=open_, ended=ended + dropped, dropped=dropped),
        st.integers(0, 300),
        st.integers(0, 10),
        st.integers(0, 50),
    ),
)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200), st.floats(1, 100))
def test_percentile_is_the_nearest_rank(values: list[float], q: float) -> None:
    """The q-th percentile is a member with at least ceil(q% of n) values at or below it, fewer below."""
    p = percentile(values, q)
    assert p in values
    rank = math.ceil(q / 100 * len(values))
    assert sum(v <= p for v in values) >= rank
    assert sum(v < p for v in values) < rank


def test_percentile_of_nothing_is_none() -> None:
    """No durations, no percentile."""
    assert percentile([], 95) is None


@given(snapshots)
def test_healthy_exactly_when_every_judged_figure_is_inside_its_limit(snap: HealthStats) -> None:
    """The verdict matches the requirements' thresholds, applied only where there are enough samples."""
    t = HealthThresholds()
    adapters_ok = all(
        a.calls < t.min_samples or (a.timeouts + a.errors) / a.calls < 0.05 for a in snap.adapters
    )
    durations = sorted(snap.status_durations)
    p95_ok = len(durations) < t.min_samples or durations[math.ceil(0.95 * len(durations)) - 1] < 0.5
    sse = snap.sse
    sse_ok = sse.ended < t.min_samples or 1 - sse.dropped / sse.ended > 0.99
    report = evaluate(snap, t)
    assert report.healthy == (adapters_ok and p95_ok and sse_ok)
    assert report.http_status == (200 if report.healthy else 503)
    assert len(report.checks) == len(snap.adapters) + 2


@given(snapshots)
def test_report_json_lists_every_check(snap: HealthStats) -> None:
    """The JSON body names each check with whether it passed, and the overall status agrees."""
    report = evaluate(snap)
    body = report.to_json()
    assert body["status"] == ("ok" if report.healthy else "degraded")
    assert [c["name"] for c in body["checks"]] == [c.name for c in report.checks]
    assert all(isinstance(c["passed"], bool) for c in body["checks"])


def test_five_percent_failures_is_already_unhealthy() -> None:
    """The limit is strict: 1 timeout in 20 calls (5%) fails, 1 in 21 passes."""
    at = HealthStats(window=300, adapters=(AdapterStats(provider="vercel", calls=20, timeouts=1),))
    under = HealthStats(window=300, adapters=(AdapterStats(provider="vercel", calls=21, errors=1),))
    assert not evaluate(at).healthy
    assert evaluate(under).healthy


def test_too_few_samples_pass_and_say_so() -> None:
    """A provider failing its only call does not make the service unhealthy; the check explains why."""
    snap = HealthStats(window=300, adapters=(AdapterStats(provider="github", calls=1, timeouts=1),))
    check = evaluate(snap).checks[0]
    assert check.passed
    assert check.samples == 1
    assert "fewer than 20 samples" in check.detail


def test_slow_p95_fails_with_the_observed_value() -> None:
    """p95 at or over 500 ms fails and reports the observed p95."""
    snap = HealthStats(window=300, status_durations=(*FAST[:36], 0.6, 0.7, 0.8, 0.9))
    report = evaluate(snap)
    check = next(c for c in report.checks if c.name == "status.p95")
    assert not check.passed
    assert check.observed == 0.7
    assert report.http_status == 503


def test_sse_stability_counts_drops_among_ended_streams() -> None:
    """One stream in 100 ended by an error is exactly 99%: not over the limit; one in 101 is."""
    assert not evaluate(HealthStats(window=300, sse=SseStats(ended=100, dropped=1))).healthy
    assert evaluate(HealthStats(window=300, sse=SseStats(ended=101, dropped=1))).healthy
