"""Metrics and health statistics.

The service reports what happens through a :class:`Metrics` object at a few fixed points: an adapter fetch
finished, a request was answered, the cache served or missed, a breaker changed phase, an event stream opened
or ended, an action finished. Three implementations ship:

- :class:`NoMetrics`: does nothing (the default).
- :class:`HealthRecorder`: always on inside the service; keeps the rolling statistics behind
  ``GET {prefix}/health`` (see :mod:`integration_status.core.health`).
- :class:`PrometheusMetrics` (extra ``[prometheus]``): exports everything in the Prometheus text format, in
  its own ``CollectorRegistry`` unless given one.

::

    metrics = PrometheusMetrics()
    service = StatusService(connections=..., adapters=..., metrics=metrics)
    app.mount("/metrics", metrics.asgi_app())

Recording is plain integer arithmetic on the event loop (no locks, no prometheus_client calls); the Prometheus
families are built only when scraped. ``prometheus_client`` is imported the first time a
:class:`PrometheusMetrics` is made, never by ``import integration_status``.
"""

from integration_status.core.health import HealthReport, HealthThresholds
from integration_status.core.metrics import (
    BreakerPhaseName,
    CacheEvent,
    FetchOutcome,
    Metrics,
    NoMetrics,
)
from integration_status.core.rolling import RollingCounts
from integration_status.observability.prometheus import DURATION_BUCKETS, PrometheusMetrics, mark_process_dead
from integration_status.observability.recorder import HealthRecorder, combine

__all__ = [
    "DURATION_BUCKETS",
    "BreakerPhaseName",
    "CacheEvent",
    "FetchOutcome",
    "HealthRecorder",
    "HealthReport",
    "HealthThresholds",
    "Metrics",
    "NoMetrics",
    "PrometheusMetrics",
    "RollingCounts",
    "combine",
    "mark_process_dead",
]
