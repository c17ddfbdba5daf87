"""The facade a host builds once: :class:`StatusService`.

>>> service = StatusService(connections=my_resolver, adapters=[GitHubAdapter(http=http)])  # doctest: +SKIP
>>> async with service:                                                                    # doctest: +SKIP
...     result = await service.status("proj_1", viewer, if_none_match=None)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
from cachetools import LRUCache

from integration_status._logging import get_logger
from integration_status.backends.memory import MemoryEngine
from integration_status.core.activity import WebhookActivity
from integration_status.core.aggregator import Aggregator, AggregatorConfig, cache_key, split_cache_key
from integration_status.core.cache import SnapshotCache
from integration_status.core.clock import SYSTEM_CLOCK, Clock, epoch_ms
from integration_status.core.connections import ConnectionLimiter
from integration_status.core.etag import etag_key
from integration_status.core.idempotency import DEFAULT_LEASE, IdempotencyGuard
from integration_status.core.policy import Grants, ProviderView, RolePolicy, grants_for
from integration_status.exceptions import BackendUnavailable, ConfigurationError, NotFound, Unauthorized
from integration_status.models import PROVIDERS, ProviderKey, StatusItem
from integration_status.observability import HealthRecorder, combine
from integration_status.protocols import (
    ActionHandler,
    Adapter,
    Authenticator,
    Authorizer,
    CacheEntry,
    ConnectionResolver,
    Engine,
    HealthAuthorizer,
    Metrics,
    Policy,
    ProjectConnections,
    RequestInfo,
    Subscription,
    Viewer,
    WebhookResolver,
)
from integration_status.service.actions import ActionResult, ActionRunner
from integration_status.service.render import Renderer, StatusResult, validate_project_id
from integration_status.service.settings import Settings
from integration_status.service.streams import EVENT_PROVIDER, EventStreams, Writer
from integration_status.service.webhooks import WebhookResult, handle_webhook
from integration_status.snapshot import Visibility

__all__ = ["StatusService", "allow_global_roles", "allow_project_members"]

#: Cache keys whose announced changes are counted (the least recently changed are forgotten).
CHANGE_COUNTS = 10_000

_log = get_logger("integration_status.service")

#: Seconds an idempotency lease outlives the action timeout (the answer still has to be stored).
LEASE_MARGIN = 30.0


async def allow_project_members(viewer: Viewer, project_id: str) -> bool:
    """The default Authorizer: a role for this very project (global roles alone would open every project id
    to anyone who has one)."""
    return bool(viewer.project_roles.get(project_id))


_allow_members = allow_project_members


async def allow_global_roles(viewer: Viewer, project_id: str) -> bool:
    """The Authorizer for hosts whose global roles mean "every project": any role, global or for the project."""
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
        engine: Engine | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: Any = None,
        action_handlers: Mapping[tuple[str, str], ActionHandler] | None = None,
        webhooks: WebhookResolver | None = None,
        metrics: Metrics | None = None,
        health: HealthRecorder | None = None,
        health_authorizer: HealthAuthorizer | None = None,
    ) -> None:

        self.settings = settings or Settings()
        self.clock = clock
        # Health statistics are always kept; ``metrics`` (e.g. PrometheusMetrics) gets the same reports.
        self.health = health if health is not None else HealthRecorder(clock=clock)
        #: Who may read the detailed health checks (None: nobody; everyone gets the liveness answer).
        self.health_authorizer = health_authorizer
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
        self.engine: Engine = engine if engine is not None else MemoryEngine(clock=clock)
        self.cache = SnapshotCache(
            self.engine.cache_store,
            clock=clock,
            ttl=self.settings.cache_ttl,
            jitter=self.settings.cache_jitter,
            rng=rng,
            on_change=self._cache_changed,
        )
        #: When each provider's signed webhooks last arrived per project (their polling slows down meanwhile).
        self.webhook_activity = WebhookActivity()
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
            activity=self.webhook_activity,
        )
        self.idempotency = IdempotencyGuard(
            self.engine.idempotency,
            clock=clock,
            keep_for=self.settings.idempotency_ttl,
            # The in-flight lease must outlive the longest action, or a retry could run it a second time.
            lease=max(DEFAULT_LEASE, self.settings.action_timeout + LEASE_MARGIN),
        )
        self.actions = ActionRunner(self, overrides=action_handlers)
        self._webhooks = webhooks
        self.closing = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        # Plain asyncio tasks (spawn_plain), cancelled when the service stops; the done callback is made once.
        self._plain: set[asyncio.Task[None]] = set()
        self._plain_done = self._forget_plain
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._users = 0
        self._change_listeners: list[Callable[[str, ProviderKey], Awaitable[None]]] = [self._announce]
        # Content changes announced per cache key, so that a refresh announces once (see refresh_provider).
        self._changes: LRUCache[str, int] = LRUCache(maxsize=CHANGE_COUNTS)
        secret = self.settings.etag_secret
        #: The one render cache: envelopes, ETags and frames, shared by viewers of one class.
        self.renderer = Renderer(clock=clock, key=None if secret is None else etag_key(secret.reveal()))
        #: Every event stream of this service (caps, snapshot, replay, fan-out, heartbeats, shutdown).
        self.streams = EventStreams(
            self,
            renderer=self.renderer,
            clock=clock,
            metrics=self.metrics,
            heartbeat=self.settings.heartbeat,
            per_viewer=self.settings.sse_per_viewer,
            per_process=self.settings.sse_per_process,
            spawn=self._spawn,
            write_interval=self.settings.sse_write_interval,
        )

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._users += 1
        if self._users > 1:
            return self
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await stack.enter_async_context(self.engine)
            if self.settings.etag_secret is None and hasattr(self.engine, "shared_etag_key"):
                await self._agree_on_etag_key()
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
        except BaseException:
            self._users -= 1
            await stack.aclose()
            raise
        self._exit_stack = stack
        self.closing = anyio.Event()
        self.streams.reopen()
        self.cache.start(self._spawn)
        self.actions.start(self._spawn)
        return self

    async def _agree_on_etag_key(self) -> None:
        """Workers on a shared engine agree on the key their tags are signed with, now and each time the engine
        agrees again (its connection came back). A store that does not answer now leaves this worker with a
        key of its own until it does: its tags differ from the other workers' meanwhile, which costs clients
        200s, never wrong answers."""
        follow = getattr(self.engine, "on_etag_key", None)
        if follow is not None:
            follow(self.renderer.use_key)
        try:
            self.renderer.use_key(await self.engine.shared_etag_key())  # type: ignore[attr-defined]
        except BackendUnavailable as exc:
            _log.warning("integration_status.service.etag_key_pending", error=str(exc))

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._users -= 1
        if self._users > 0 or self._exit_stack is None:
            return
        assert self._task_group is not None
        self.closing.set()  # event streams end cleanly before the background work is cancelled
        self.streams.shutdown()
        for task in list(self._plain):
            task.cancel()  # each ends at its next step; the loop runs on while the task group closes
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

    def spawn_plain(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``fn`` as a plain task of the running asyncio loop, kept by the service and cancelled when it
        stops (on any other loop: :meth:`spawn`). For small jobs that live as long as a connection, one per
        open event stream: a task of an anyio task group carries a handle, a cancel scope and an event of its
        own, some twenty objects more per stream for every full garbage collection to walk. What ``fn`` raises
        is logged, as for :meth:`spawn`. :class:`ConfigurationError` when the service is not running."""
        self._require_running()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on asyncio
            self._spawn(fn)
            return
        task = loop.create_task(fn())
        self._plain.add(task)
        task.add_done_callback(self._plain_done)

    def _forget_plain(self, task: asyncio.Task[None]) -> None:
        self._plain.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.warning("integration_status.service.background_failed", error=type(exc).__name__)

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

    async def connections_of(self, project_id: str) -> ProjectConnections | None:
        """The host's connections of ``project_id`` (its ConnectionResolver), with no viewer check: for work the
        service does on its own (a refresh, an abandoned action finished by another worker)."""
        return await self._connections(project_id)

    async def status(
        self, project_id: object, viewer: Viewer, *, if_none_match: str | None = None
    ) -> StatusResult:
        """The viewer's status envelope with its ETag; ``not_modified`` when ``if_none_match`` matches."""
        if self._task_group is None:
            self._require_running()
        # project(), inline: this is the most polled path (400, then the same 404 for unknown and forbidden).
        project_id = validate_project_id(project_id)
        connections = await self._connections(project_id)
        if connections is None or not await self._authorizer(viewer, project_id):
            raise NotFound("project not found")
        project_id = connections.project_id
        views = await self.aggregator.collect(project_id, connections)
        grants = grants_for(self.policy, viewer, project_id, PROVIDERS)
        return self.renderer.answer(project_id, views, grants, if_none_match)

    async def items(self, connections: ProjectConnections, viewer: Viewer) -> tuple[StatusItem, ...]:
        """The four items of a project, as ``viewer`` sees them now."""
        project_id = connections.project_id
        views = await self.aggregator.collect(project_id, connections)
        return self.renderer.rendering(project_id, views, self.grants(viewer, project_id)).items

    async def views(self, connections: ProjectConnections) -> tuple[ProviderView, ...]:
        """The project's raw provider views (in :data:`PROVIDERS` order), within the deadline."""
        return await self.aggregator.collect(connections.project_id, connections)

    def grants(self, viewer: Viewer, project_id: str) -> Grants:
        """What ``viewer`` may do and see for each provider (in :data:`PROVIDERS` order): its viewer class."""
        return grants_for(self.policy, viewer, project_id, PROVIDERS)

    def visibility(self, viewer: Viewer, project_id: str, provider: ProviderKey) -> Visibility:
        """What ``viewer`` may see of ``provider``'s names and URLs."""
        return self.policy.visibility(viewer, project_id, provider)

    # --- change notification --------------------------------------------------------------------------------

    def on_change(self, listener: Callable[[str, ProviderKey], Awaitable[None]]) -> None:
        """Call ``listener(project_id, provider)`` whenever a provider's cached content or problem changes."""
        self._change_listeners.append(listener)

    async def _cache_changed(self, key: str, entry: CacheEntry) -> None:
        project_id, provider = split_cache_key(key)
        self._changes[key] = self._changes.get(key, 0) + 1
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
        (whether or not it changed: the caller just did something to the provider). A change is announced by
        the cache already: one status:update per refresh, not two (each costs a wake-up of every open stream)."""
        key = cache_key(project_id, provider)
        changes = self._changes.get(key, 0)
        await self.cache.invalidate(key)
        connections = await self._connections(project_id)
        if connections is not None:
            await self.aggregator.refresh(project_id, provider, connections)
        if self._changes.get(key, 0) == changes:
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
    ) -> ActionResult:
        """Run a quick action (see :mod:`integration_status.service.actions` for the order of checks)."""
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

    def open_stream(
        self, viewer: Viewer, connections: ProjectConnections, *, last_event_id: str | None = None
    ) -> Writer:
        """The body of one event stream (see :mod:`integration_status.service.streams`)."""
        return self.streams.open(viewer, connections, last_event_id)

    @property
    def sse_connections(self) -> ConnectionLimiter:
        """The open event streams of this process, per viewer and in total, and their caps."""
        return self.streams.caps

    # --- webhooks -------------------------------------------------------------------------------------------

    async def ingest_webhook(self, provider: str, headers: Mapping[str, str], body: bytes) -> WebhookResult:
        """Verify a provider webhook, publish its events, refresh the provider and announce it."""
        self._require_running()
        if self._webhooks is None:
            resolver: WebhookResolver = _no_webhooks
        else:
            resolver = self._webhooks
        result = await handle_webhook(
            provider,
            headers,
            body,
            resolve=resolver,
            deliveries=self.engine.deliveries,
            clock=self.clock,
            # An engine that records a delivery and publishes its events in one step (one round trip).
            publish_delivery=getattr(self.engine, "publish_delivery", None),
        )
        # 202 too: an authentic delivery we send no event for (a deleted branch) may still outdate the status.
        if result.status in (200, 202) and result.project_id is not None:
            if not result.body.get("duplicate"):
                self.webhook_activity.note(provider, result.project_id, now=self.clock.time())
            try:
                for event in () if result.published else result.events:
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
