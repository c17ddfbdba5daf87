"""The Prometheus export of :mod:`integration_status.observability` (extra ``[prometheus]``).

Recording is plain arithmetic on dicts and lists; ``prometheus_client`` is imported when a
:class:`PrometheusMetrics` is made and used only to describe the families at scrape time.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from integration_status.core.clock import SYSTEM_CLOCK, Clock
from integration_status.core.rolling import RollingCounts

__all__ = ["DURATION_BUCKETS", "MULTIPROC_ENV", "PrometheusMetrics", "mark_process_dead"]

#: Seconds. 0.45 is the default status deadline, 0.5 the p95 target.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.45, 0.5, 1.0, 2.5, 5.0, 10.0)
BREAKER_VALUES: Final[Mapping[str, int]] = {"closed": 0, "half_open": 1, "open": 2}
INSTALL_HINT: Final = "pip install 'integration-status[prometheus]'"
#: prometheus_client's switch for multiprocess mode: the directory of the per-process value files.
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def _import_prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.multiprocess
    except ImportError as exc:
        raise ImportError(f"PrometheusMetrics needs prometheus-client: {INSTALL_HINT}") from exc
    return prometheus_client


class _Histogram:
    __slots__ = ("buckets", "count", "total")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.count = 0
        self.total = 0.0


def _nested(table: dict[str, dict[str, int]], a: str, b: str) -> None:
    inner = table.get(a)
    if inner is None:
        inner = table[a] = {}
    inner[b] = inner.get(b, 0) + 1


class PrometheusMetrics:
    """Prometheus export (extra ``[prometheus]``). Families, with their labels:

    - ``integration_status_request_duration`` histogram (seconds), ``{endpoint, provider}``: adapter fetches
      as ``endpoint="fetch", provider=<github|vercel|sanity|supabase>``; whole requests as
      ``endpoint=<status|actions>, provider="all"``
    - ``integration_status_responses_total`` counter ``{endpoint, code}`` (the 304 ratio of ``status``)
    - ``integration_adapter_calls_total`` counter ``{provider, outcome}``, outcome ok/timeout/error/auth
    - ``integration_adapter_timeout_rate`` / ``integration_adapter_error_rate`` gauges ``{provider}`` over the
      last ``window`` seconds
    - ``integration_action_total`` counter ``{provider, action, outcome}``, outcome ok/timeout/error;
      ``integration_action_success_rate`` gauge ``{provider, action}`` over the window
    - ``integration_sse_connection_count`` gauge
    - ``integration_cache_events_total`` counter ``{event}``, event hit/miss/stale
    - ``integration_breaker_state`` gauge ``{provider}``: the worst phase among the provider's breakers,
      0 closed, 1 half-open, 2 open; ``integration_breakers`` gauge ``{provider, state}``: how many are in
      each phase

    A rate gauge has no sample for a key with no calls in the window.

    **Several worker processes** (``uvicorn --workers N``, gunicorn): with ``PROMETHEUS_MULTIPROC_DIR`` set in
    the environment before the server starts (or ``multiprocess=True``), every worker records into
    prometheus_client's per-process files in that directory and a scrape of any worker answers the sum over all
    of them: counters and histograms summed, ``integration_sse_connection_count`` and ``integration_breakers``
    summed over live workers, ``integration_breaker_state`` the worst over live workers. The windowed rate
    gauges are left out then (one worker's window says nothing of the others): take rates of the counters in
    PromQL instead. A worker that exits normally marks itself dead (its live gauges leave the sum); for one
    that was killed (SIGKILL, the OOM killer) leaves its live gauges behind until the next scrape, which drops
    those of every process that no longer exists (the directory must belong to one server's processes, as
    prometheus_client requires); :func:`mark_process_dead` drops them at once (gunicorn's ``child_exit`` hook).
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        window: float = 300.0,
        buckets: tuple[float, ...] = DURATION_BUCKETS,
        multiprocess: bool | None = None,
    ) -> None:
        prometheus_client = _import_prometheus()
        self._client = prometheus_client
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        if multiprocess is None:
            multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self._mp: _Multiprocess | None = None
        if multiprocess:
            self._mp = _Multiprocess(prometheus_client, tuple(sorted(buckets)))
            # Registered first, so it runs first at every scrape: the live gauges of workers that are gone
            # leave before the value files are read.
            self.registry.register(_DeadWorkers())
            prometheus_client.multiprocess.MultiProcessCollector(self.registry)
        self._bounds = tuple(sorted(buckets))
        self._requests: dict[str, _Histogram] = {}
        self._fetches: dict[str, _Histogram] = {}
        self._responses: dict[str, dict[str, int]] = {}
        self._calls: dict[str, dict[str, int]] = {}
        self._actions: dict[str, dict[str, int]] = {}  # "provider\0action" -> outcome -> n
        self._cache: dict[str, int] = {"hit": 0, "miss": 0, "stale": 0}
        self._breakers: dict[str, dict[str, int]] = {}
        self._sse = 0
        self._fetch_window = RollingCounts(clock=clock, window=window)
        self._action_window = RollingCounts(clock=clock, window=window)
        if self._mp is None:
            self.registry.register(_Collector(self))

    # --- recording (event loop; plain arithmetic) -------------------------------------------------------

    def _observe(self, table: dict[str, _Histogram], key: str, seconds: float) -> None:
        hist = table.get(key)
        if hist is None:
            hist = table[key] = _Histogram(len(self._bounds) + 1)
        hist.buckets[bisect.bisect_left(self._bounds, seconds)] += 1
        hist.count += 1
        hist.total += seconds

    def observe_fetch(self, provider: str, seconds: float, outcome: str) -> None:
        self._observe(self._fetches, provider, seconds)
        _nested(self._calls, provider, outcome)
        self._fetch_window.add(provider, outcome)
        if self._mp is not None:
            self._mp.durations.labels("fetch", provider).observe(seconds)
            self._mp.calls.labels(provider, outcome).inc()

    def observe_request(self, endpoint: str, seconds: float, status: int) -> None:
        self._observe(self._requests, endpoint, seconds)
        _nested(self._responses, endpoint, str(status))
        if self._mp is not None:
            self._mp.durations.labels(endpoint, "all").observe(seconds)
            self._mp.responses.labels(endpoint, str(status)).inc()

    def cache(self, event: str) -> None:
        self._cache[event] = self._cache.get(event, 0) + 1
        if self._mp is not None:
            self._mp.cache.labels(event).inc()

    def breaker_state(self, provider: str, state: str, previous: str) -> None:
        phases = self._breakers.get(provider)
        if phases is None:
            phases = self._breakers[provider] = {"closed": 0, "half_open": 0, "open": 0}
        phases[state] += 1
        if self._mp is not None:
            self._mp.breakers.labels(provider, state).inc()
        # Breakers are born closed without a report; only count down what was counted up.
        if phases[previous] > 0:
            phases[previous] -= 1
            if self._mp is not None:
                self._mp.breakers.labels(provider, previous).dec()
        if self._mp is not None:
            worst = max((BREAKER_VALUES[p] for p, n in phases.items() if n > 0), default=0)
            self._mp.breaker_state.labels(provider).set(worst)

    def sse_connections(self, delta: int, *, dropped: bool = False) -> None:
        self._sse += delta
        if self._mp is not None:
            self._mp.sse.inc(delta)

    def action(self, provider: str, action: str, outcome: str) -> None:
        key = f"{provider}\0{action}"
        _nested(self._actions, key, outcome)
        self._action_window.add(key, outcome)
        if self._mp is not None:
            self._mp.actions.labels(provider, action, outcome).inc()

    # --- export ---------------------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the exposition format ``accept`` asks for: ``(body, content type)``."""
        encoder, content_type = self._client.exposition.choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app serving the registry at any path: a route, e.g. ``Route("/metrics", metrics.asgi_app())``
        or FastAPI's ``app.add_route("/metrics", metrics.asgi_app())``, or a mount (which answers at
        ``/metrics/``; ``/metrics`` redirects there)."""
        return _AsgiApp(self._client.make_asgi_app(registry=self.registry))

    def flask_view(self) -> Callable[[], tuple[bytes, int, dict[str, str]]]:
        """A Flask view function serving the registry (Flask is not imported here: a view may return a tuple),
        e.g. ``app.add_url_rule("/metrics", view_func=metrics.flask_view())``."""

        def view() -> tuple[bytes, int, dict[str, str]]:
            from flask import request  # imported when the view runs, so this module never needs Flask

            body, content_type = self.render(request.headers.get("Accept"))
            return body, 200, {"Content-Type": content_type}

        view.__name__ = "integration_status_metrics"
        return view

    def _families(self) -> Iterator[Any]:
        m = self._client.metrics_core
        durations = m.HistogramMetricFamily(
            "integration_status_request_duration",
            "Seconds per adapter fetch (endpoint=fetch, by provider) and per whole request (provider=all).",
            labels=["endpoint", "provider"],
        )
        for provider, hist in tuple(self._fetches.items()):
            durations.add_metric(["fetch", provider], self._cumulative(hist), hist.total)
        for endpoint, hist in tuple(self._requests.items()):
            durations.add_metric([endpoint, "all"], self._cumulative(hist), hist.total)
        yield durations
        yield self._counter(
            m,
            "integration_status_responses",
            "Responses by endpoint and HTTP status.",
            ["endpoint", "code"],
            self._responses,
        )
        yield self._counter(
            m,
            "integration_adapter_calls",
            "Adapter fetches by outcome.",
            ["provider", "outcome"],
            self._calls,
        )
        yield self._counter(
            m,
            "integration_action",
            "Quick actions run, by outcome.",
            ["provider", "action", "outcome"],
            self._actions,
            split=True,
        )
        timeout_rate = m.GaugeMetricFamily(
            "integration_adapter_timeout_rate",
            "Share of adapter fetches that timed out in the window.",
            labels=["provider"],
        )
        error_rate = m.GaugeMetricFamily(
            "integration_adapter_error_rate",
            "Share of adapter fetches that failed otherwise in the window.",
            labels=["provider"],
        )
        for provider in self._fetch_window.keys():  # noqa: SIM118 - not a dict
            t = self._fetch_window.totals(provider)
            if calls := sum(t.values()):
                timeout_rate.add_metric([provider], t.get("timeout", 0) / calls)
                error_rate.add_metric([provider], t.get("error", 0) / calls)
        yield timeout_rate
        yield error_rate
        success = m.GaugeMetricFamily(
            "integration_action_success_rate",
            "Share of quick actions that succeeded in the window.",
            labels=["provider", "action"],
        )
        for key in self._action_window.keys():  # noqa: SIM118 - not a dict
            t = self._action_window.totals(key)
            if runs := sum(t.values()):
                success.add_metric(key.split("\0"), t.get("ok", 0) / runs)
        yield success
        yield m.GaugeMetricFamily("integration_sse_connection_count", "Open event streams.", value=self._sse)
        cache = m.CounterMetricFamily(
            "integration_cache_events", "Provider cache decisions.", labels=["event"]
        )
        for event, n in tuple(self._cache.items()):
            cache.add_metric([event], n)
        yield cache
        state = m.GaugeMetricFamily(
            "integration_breaker_state",
            "Worst breaker phase per provider: 0 closed, 1 half-open, 2 open.",
            labels=["provider"],
        )
        counts = m.GaugeMetricFamily(
            "integration_breakers", "Breakers per provider and phase.", labels=["provider", "state"]
        )
        for provider, phases in tuple(self._breakers.items()):
            worst = max((BREAKER_VALUES[p] for p, n in tuple(phases.items()) if n > 0), default=0)
            state.add_metric([provider], worst)
            for phase, n in tuple(phases.items()):
                counts.add_metric([provider, phase], n)
        yield state
        yield counts

    def _cumulative(self, hist: _Histogram) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*map(str, self._bounds), "+Inf"), tuple(hist.buckets), strict=True):
            running += n
            out.append((bound, running))
        return out

    @staticmethod
    def _counter(
        m: Any,
        name: str,
        doc: str,
        labels: list[str],
        table: dict[str, dict[str, int]],
        *,
        split: bool = False,
    ) -> Any:
        family = m.CounterMetricFamily(name, doc, labels=labels)
        for key, inner in tuple(table.items()):
            head = key.split("\0") if split else [key]
            for sub, n in tuple(inner.items()):
                family.add_metric([*head, sub], n)
        return family


class _Multiprocess:
    """The same families as prometheus_client metrics, whose values live in the per-process files of
    ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode). They are registered nowhere: the
    scrape reads the files through a ``MultiProcessCollector``."""

    def __init__(self, client: Any, buckets: tuple[float, ...]) -> None:
        def counter(name: str, doc: str, labels: list[str]) -> Any:
            return client.Counter(name, doc, labels, registry=None)

        def gauge(name: str, doc: str, labels: list[str], mode: str) -> Any:
            return client.Gauge(name, doc, labels, registry=None, multiprocess_mode=mode)

        self.durations = client.Histogram(
            "integration_status_request_duration",
            "Seconds per adapter fetch (endpoint=fetch, by provider) and per whole request (provider=all).",
            ["endpoint", "provider"],
            buckets=buckets,
            registry=None,
        )
        self.responses = counter(
            "integration_status_responses", "Responses by endpoint and HTTP status.", ["endpoint", "code"]
        )
        self.calls = counter(
            "integration_adapter_calls", "Adapter fetches by outcome.", ["provider", "outcome"]
        )
        self.actions = counter(
            "integration_action", "Quick actions run, by outcome.", ["provider", "action", "outcome"]
        )
        self.cache = counter("integration_cache_events", "Provider cache decisions.", ["event"])
        # Summed over live workers: a connection or a breaker belongs to a process that is still there.
        self.sse = gauge("integration_sse_connection_count", "Open event streams.", [], "livesum")
        self.breakers = gauge(
            "integration_breakers", "Breakers per provider and phase.", ["provider", "state"], "livesum"
        )
        self.breaker_state = gauge(
            "integration_breaker_state",
            "Worst breaker phase per provider: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            "livemax",
        )
        # A worker that exits normally leaves the live sums; a killed one needs mark_process_dead(pid).
        atexit.register(_mark_self_dead)


def mark_process_dead(pid: int) -> None:
    """Drop the live gauges of a worker process that is gone (multiprocess mode), e.g. from gunicorn's
    ``child_exit(server, worker)`` hook: ``mark_process_dead(worker.pid)``. Counters keep its counts."""
    if os.environ.get(MULTIPROC_ENV):
        _import_prometheus().multiprocess.mark_process_dead(pid)


#: A live gauge's value file in the multiprocess directory: ``gauge_live<mode>_<pid>.db``.
_LIVE_GAUGE_FILE: Final = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def _gone(pid: int) -> bool:
    """Whether no process has ``pid`` (one of another user's still counts as there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists
        return False
    return False


class _DeadWorkers:
    """A collector that yields nothing: at each scrape it drops the live gauges of worker processes that no
    longer exist (killed, so they could not mark themselves dead), whatever server supervises them."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            try:
                names = os.listdir(directory)
            except OSError:
                names = []
            pids = {int(m.group(1)) for name in names if (m := _LIVE_GAUGE_FILE.match(name))}
            for pid in sorted(pids):
                if pid != os.getpid() and _gone(pid):
                    with contextlib.suppress(FileNotFoundError):  # another worker's scrape got there first
                        mark_process_dead(pid)
        return iter(())


def _mark_self_dead() -> None:
    # The pid at exit, not at start: a server that forks after loading the app runs this in each worker.
    mark_process_dead(os.getpid())


class _Collector:
    """Builds the families at scrape time."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self._metrics._families()


class _AsgiApp:
    """An ASGI app as an object rather than a function: Starlette's ``Route`` calls a function endpoint with a
    request, but runs any other callable as an ASGI app, so the registry can be served at exactly ``/metrics``."""

    __slots__ = ("_app",)

    def __init__(self, app: Callable[..., Any]) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)
