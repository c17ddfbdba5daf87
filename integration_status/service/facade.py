"""The facade a host builds once: :class:`StatusService`.

>>> service = StatusService(connections=my_resolver, adapters=[GitHubAdapter(http=http)])  # doctest: +SKIP
>>> async with service:                                                                    # doctest: +SKIP
...     result = await service.status("proj_1", viewer, if_none_match=None)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import structlog

from integration_status.core.aggregator import Aggregator, AggregatorConfig, cache_key, split_cache_key
from integration_status.core.cache import SnapshotCache
from integration_status.core.clock import SYSTEM_CLOCK, Clock, epoch_ms, utcnow
from integration_status.core.connections import ConnectionLimiter
from integration_status.core.events import redact_event
from integration_status.core.idempotency import DEFAULT_LEASE, IdempotencyGuard
from integration_status.core.policy import Policy, ProviderView, RolePolicy, grants_for, view_item
from integration_status.exceptions import ConfigurationError, NotFound, Unauthorized
from integration_status.models import PROVIDERS, IntegrationStatus, ProviderKey, StatusUpdate
from integration_status.observability import HealthRecorder, Metrics, combine
from integration_status.protocols import (
    ActionHandler,
    Adapter,
    Authenticator,
    Authorizer,
    CacheEntry,
    ConnectionResolver,
    ProjectConnections,
    RequestInfo,
    StoredEvent,
    Subscription,
    Viewer,
)
from integration_status.service.render import RENDER_BUCKET, EnvelopeCache, StatusResult, validate_project_id
from integration_status.service.settings import Settings
from integration_status.service.streams import FrameCache, StatusFrames, StreamHub
from integration_status.service.webhooks import WebhookResolver, WebhookResult, handle_webhook

__all__ = ["EVENT_PROVIDER", "Settings", "StatusResult", "StatusService", "validate_project_id"]

#: Which provider's visibility applies to an event type.
EVENT_PROVIDER: dict[str, ProviderKey] = {
    "deploy:started": "vercel",
    "deploy:finished": "vercel",
    "github:push": "github",
    "sanity:webhook": "sanity",
}

_log = structlog.get_logger("integration_status.service")

#: Seconds an idempotency lease outlives the action timeout (the answer still has to be stored).
LEASE_MARGIN = 30.0


async def _allow_members(viewer: Viewer, project_id: str) -> bool:
    return bool(viewer.roles_for(project_id))


class StatusService:
    """Builds status envelopes per viewer from raw, cached provider snapshots.

    Start it once with the host app (``async with service:``, or ``lifespan=service.lifespan``): it owns the task
    group where background refreshes run.
    """

    def __init__(
        self,
        *,
        connections: ConnectionResolver,
        adapters: Iterable[Adapter] | Mapping[ProviderKey, Adapter] = (),
        authenticator: Authenticator | None = None,
        authorizer: Authorizer | None = None,
        policy: Policy | None = None,
        settings: Settings | None = None,
        engine: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: Any = None,
        action_handlers: Mapping[tuple[str, str], ActionHandler] | None = None,
        webhooks: WebhookResolver | None = None,
        metrics: Metrics | None = None,
        health: HealthRecorder | None = None,
    ) -> None:
        from integration_status.backends.memory import MemoryEngine
        from integration_status.service.actions import ActionRunner

        self.settings = settings or Settings()
        self.clock = clock
        # Health statistics are always kept; ``metrics`` (e.g. PrometheusMetrics) gets the same reports.
        self.health = health if health is not None else HealthRecorder(clock=clock)
        self.metrics: Metrics = combine(self.health, metrics)
        self._connections = connections
        self._authenticator = authenticator
        self._authorizer = authorizer or _allow_members
        self.policy: Policy = policy or RolePolicy()
        if isinstance(adapters, Mapping):
            self.adapters: dict[ProviderKey, Adapter] = dict(adapters)
        else:
            self.adapters = {}
            for adapter in adapters:
                if adapter.provider in self.adapters:
                    raise ConfigurationError(f"two adapters for {adapter.provider}")
                self.adapters[adapter.provider] = adapter
        self.engine = engine if engine is not None else MemoryEngine(clock=clock)
        self.cache = SnapshotCache(
            self.engine.cache_store,
            clock=clock,
            ttl=self.settings.cache_ttl,
            jitter=self.settings.cache_jitter,
            rng=rng,
            on_change=self._cache_changed,
        )
        self.aggregator = Aggregator(
            adapters=self.adapters,
            cache=self.cache,
            clock=clock,
            config=AggregatorConfig(
                adapter_timeout=self.settings.adapter_timeout,
                deadline=self.settings.deadline,
                breaker=self.settings.breaker,
            ),
            metrics=self.metrics,
        )
        self.idempotency = IdempotencyGuard(
            self.engine.idempotency,
            clock=clock,
            keep_for=self.settings.idempotency_ttl,
            # The in-flight lease must outlive the longest action, or a retry could run it a second time.
            lease=max(DEFAULT_LEASE, self.settings.action_timeout + LEASE_MARGIN),
        )
        self.actions = ActionRunner(self, overrides=action_handlers)
        self.sse_connections = ConnectionLimiter(
            per_viewer=self.settings.sse_per_viewer, per_process=self.settings.sse_per_process
        )
        self._webhooks = webhooks
        self.closing = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._users = 0
        self._change_listeners: list[Callable[[str, ProviderKey], Awaitable[None]]] = [self._announce]
        self._envelopes = EnvelopeCache(clock=clock)
        #: Heartbeats and shutdown of every event stream, and the frames they share (see ``fanout``).
        self.streams = StreamHub(clock=clock, interval=self.settings.heartbeat, spawn=self._spawn)
        self._status_frames = StatusFrames(clock=clock, bucket=RENDER_BUCKET)
        self._event_frames = FrameCache()

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._users += 1
        if self._users > 1:
            return self
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await stack.enter_async_context(self.engine)
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
        except BaseException:
            self._users -= 1
            await stack.aclose()
            raise
        self._exit_stack = stack
        self.closing = anyio.Event()
        self.streams.reopen()
        self.cache.start(self._spawn)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._users -= 1
        if self._users > 0 or self._exit_stack is None:
            return
        assert self._task_group is not None
        self.closing.set()  # event streams end cleanly before the background work is cancelled
        self.streams.shutdown()
        self._task_group.cancel_scope.cancel()
        stack, self._exit_stack = self._exit_stack, None
        try:
            await stack.aclose()
        finally:
            self._task_group = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """A Starlette/FastAPI ``lifespan``: ``FastAPI(lifespan=service.lifespan)``."""
        async with self:
            yield

    @property
    def running(self) -> bool:
        return self._task_group is not None

    def _require_running(self) -> anyio.abc.TaskGroup:
        if self._task_group is None:
            raise ConfigurationError(
                "StatusService is not running: enter it with `async with service:` or pass "
                "`lifespan=service.lifespan` to your app"
            )
        return self._task_group

    def _spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            # One failing background job (a refresh after an action, a deploy being followed) must not cancel
            # the task group that every request relies on: log its kind and go on.
            try:
                await fn()
            except Exception as exc:
                _log.warning("integration_status.service.background_failed", error=type(exc).__name__)

        self._require_running().start_soon(run)

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` in the service's background task group (it ends with the service)."""
        self._spawn(fn)

    # --- status ---------------------------------------------------------------------------------------------

    async def authenticate(self, request: RequestInfo) -> Viewer:
        """The host's Authenticator; 401 when it returns None or none is configured."""
        if self._authenticator is None:
            raise Unauthorized("no authenticator is configured")
        viewer = await self._authenticator(request)
        if viewer is None:
            raise Unauthorized("authentication required")
        return viewer

    async def project(self, project_id: object, viewer: Viewer) -> ProjectConnections:
        """Validate the id and check access: 400, then 404 for unknown projects and projects the viewer may not
        see (the same answer, so existence is not revealed)."""
        project_id = validate_project_id(project_id)
        connections = await self._connections(project_id)
        if connections is None or not await self._authorizer(viewer, project_id):
            raise NotFound("project not found")
        return connections

    async def status(
        self, project_id: object, viewer: Viewer, *, if_none_match: str | None = None
    ) -> StatusResult:
        """The viewer's status envelope with its ETag; ``not_modified`` when ``if_none_match`` matches."""
        self._require_running()
        connections = await self.project(project_id, viewer)
        project_id = connections.project_id
        views = await self.aggregator.collect(project_id, connections)
        grants = grants_for(self.policy, viewer, project_id, PROVIDERS)  # views come in PROVIDERS order
        return self._envelopes.answer(project_id, views, grants, if_none_match)

    async def items(self, connections: ProjectConnections, viewer: Viewer) -> tuple[IntegrationStatus, ...]:
        """The four items of a project, as ``viewer`` sees them now."""
        views = await self.aggregator.collect(connections.project_id, connections)
        return self.render(connections.project_id, views, viewer)

    def render(
        self, project_id: str, views: Iterable[ProviderView], viewer: Viewer
    ) -> tuple[IntegrationStatus, ...]:
        """Raw views -> the viewer's redacted items (pure apart from reading the clock)."""
        now = utcnow(self.clock)
        return tuple(
            view_item(
                view,
                allowed=self.policy.allowed_actions(viewer, project_id, view.provider),
                visibility=self.policy.visibility(viewer, project_id, view.provider),
                now=now,
            )
            for view in views
        )

    # --- change notification --------------------------------------------------------------------------------

    def on_change(self, listener: Callable[[str, ProviderKey], Awaitable[None]]) -> None:
        """Call ``listener(project_id, provider)`` whenever a provider's cached content or problem changes."""
        self._change_listeners.append(listener)

    async def _cache_changed(self, key: str, entry: CacheEntry) -> None:
        project_id, provider = split_cache_key(key)
        for listener in self._change_listeners:
            try:
                await listener(project_id, provider)
            except Exception:
                _log.exception("integration_status.service.listener_failed", provider=provider)

    async def _announce(self, project_id: str, provider: ProviderKey) -> None:
        await self.publish(
            project_id, {"type": "status:update", "projectId": project_id, "ts": self.now_ms()}
        )

    async def refresh_provider(self, project_id: str, provider: ProviderKey) -> None:
        """Drop a provider's cached freshness, fetch it again, and announce the result with a status:update
        (whether or not it changed: the caller just did something to the provider)."""
        await self.cache.invalidate(cache_key(project_id, provider))
        connections = await self._connections(project_id)
        if connections is not None:
            await self.aggregator.refresh(project_id, provider, connections)
        await self._announce(project_id, provider)

    def now_ms(self) -> int:
        return epoch_ms(self.clock)

    # --- actions --------------------------------------------------------------------------------------------

    async def act(
        self,
        viewer: Viewer,
        body: object,
        *,
        idempotency_key: str | None,
        method: str = "POST",
        path: str = "",
    ) -> Any:
        """Run a quick action (see :mod:`integration_status.service.actions`); returns an ``ActionResult``."""
        self._require_running()
        return await self.actions.act(
            viewer=viewer, body=body, idempotency_key=idempotency_key, method=method, path=path
        )

    # --- events ---------------------------------------------------------------------------------------------

    async def publish(self, project_id: str, event: Mapping[str, Any]) -> str:
        """Put a raw (unredacted) event on the project's bus; returns its id."""
        return await self.engine.events.publish(project_id, event)

    async def events_ready(self, project_id: str) -> None:
        """Raise BackendUnavailable when the event bus cannot serve ``project_id`` now (before a stream starts);
        a bus without a ``ready`` check is taken as ready."""
        ready = getattr(self.engine.events, "ready", None)
        if ready is not None:
            await ready(project_id)

    def subscribe(
        self, project_id: str, *, last_event_id: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """Raw events of one project, resuming after ``last_event_id`` (see the EventBus protocol)."""
        return self.engine.events.subscribe(project_id, last_event_id=last_event_id)

    async def snapshot_event(self, connections: ProjectConnections, viewer: Viewer) -> dict[str, Any]:
        """A ``status:update`` carrying the viewer's current items."""
        items = await self.items(connections, viewer)
        return StatusUpdate(project_id=connections.project_id, items=items, ts=self.now_ms()).to_json()

    async def event_for(
        self, stored: StoredEvent, connections: ProjectConnections, viewer: Viewer
    ) -> dict[str, Any] | None:
        """One raw event as ``viewer`` may see it. Raw ``status:update`` events are markers: the viewer's own
        current items are rendered for them."""
        kind = stored.data.get("type")
        if kind == "status:update":
            event = await self.snapshot_event(connections, viewer)
            event["ts"] = stored.data.get("ts", event["ts"])
            return event
        provider = EVENT_PROVIDER.get(str(kind))
        if provider is None:
            return None
        visibility = self.policy.visibility(viewer, connections.project_id, provider)
        redacted = redact_event(stored.data, visibility)
        return None if redacted is None else dict(redacted)

    async def snapshot_frame(
        self, connections: ProjectConnections, viewer: Viewer, *, event_id: str | None, ts: object = None
    ) -> tuple[bytes, tuple[IntegrationStatus, ...]]:
        """:meth:`snapshot_event` encoded as an SSE frame with ``event_id``, and the items it carries. Viewers
        with the same permissions share the rendering and the bytes."""
        project_id = connections.project_id
        views = await self.aggregator.collect(project_id, connections)
        policy = self.policy
        grants = tuple(
            (
                policy.allowed_actions(viewer, project_id, v.provider),
                policy.visibility(viewer, project_id, v.provider),
            )
            for v in views
        )
        return self._status_frames.frame(
            project_id, views, grants, event_id=event_id, ts=self.now_ms() if ts is None else ts
        )

    async def event_frame(
        self, stored: StoredEvent, connections: ProjectConnections, viewer: Viewer
    ) -> tuple[bytes | None, tuple[IntegrationStatus, ...] | None]:
        """:meth:`event_for` encoded as an SSE frame (None: not sent to this viewer), with the items of a
        ``status:update`` (else None). Redacted and encoded once per event and kind of viewer."""
        kind = stored.data.get("type")
        if kind == "status:update":
            return await self.snapshot_frame(
                connections, viewer, event_id=stored.id, ts=stored.data.get("ts")
            )
        provider = EVENT_PROVIDER.get(str(kind))
        if provider is None:
            return None, None
        visibility = self.policy.visibility(viewer, connections.project_id, provider)
        return self._event_frames.frame(connections.project_id, stored, visibility), None

    # --- webhooks -------------------------------------------------------------------------------------------

    async def ingest_webhook(self, provider: str, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        """Verify a provider webhook, publish its events, refresh the provider and announce it."""
        self._require_running()
        if self._webhooks is None:
            resolver: WebhookResolver = _no_webhooks
        else:
            resolver = self._webhooks
        result = await handle_webhook(
            provider, headers, body, resolve=resolver, deliveries=self.engine.deliveries, clock=self.clock
        )
        # 202 too: an authentic delivery we send no event for (a deleted branch) may still outdate the status.
        if result.status in (200, 202) and result.project_id is not None:
            try:
                for event in result.events:
                    await self.publish(result.project_id, event)
            except BaseException:
                # Not published: forget the delivery so the provider's retry counts instead of being a duplicate.
                with anyio.CancelScope(shield=True):
                    for key in result.recorded:
                        with contextlib.suppress(Exception):
                            await self.engine.deliveries.forget(key)
                raise
            if result.invalidate and provider in EVENT_PROVIDER.values():
                project_id, key = result.project_id, provider

                async def refresh() -> None:
                    await self.refresh_provider(project_id, key)  # type: ignore[arg-type]

                self.spawn(refresh)
        return result


async def _no_webhooks(provider: str, headers: Mapping[str, str], payload: Any) -> None:
    return None
