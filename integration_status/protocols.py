"""The seams: what the host fills in, what adapters implement, and what the engines (memory, Redis) provide.

Host seams: :class:`ConnectionResolver`, :class:`Authenticator`, :class:`Authorizer`, and a
:class:`~integration_status.core.policy.Policy`. Adapter seam: :class:`Adapter`. Engine seams:
:class:`CacheStore`, :class:`IdempotencyStore`, :class:`RateLimiter`, :class:`EventBus`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import attrs

from integration_status.models import Problem, ProviderKey
from integration_status.snapshot import ProviderSnapshot


@runtime_checkable
class Clock(Protocol):
    """Wall time, monotonic time and sleep, injected into every component (``clock=``).

    ``time()`` is wall-clock epoch seconds (shared across processes); ``monotonic()`` is for local durations;
    ``sleep()`` waits on the same clock. Tests pass :class:`integration_status.testing.FakeClock`.
    """

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


# --- credentials and connections ------------------------------------------------------------------------------


@attrs.frozen(repr=False)
class Secret:
    """A credential. Its repr and str never show the value; call :meth:`reveal` at the point of use.

    >>> Secret("ghp_abc")
    Secret('***')
    """

    _value: str = attrs.field(validator=attrs.validators.instance_of(str))

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def _secret(value: Secret | str | None) -> Secret | None:
    return Secret(value) if isinstance(value, str) else value


def _frozen_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class ProviderConnection:
    """How one project is linked to one provider, from the host's own storage.

    ``settings`` keys by provider (all strings):

    - github: ``repository`` ("owner/name"), ``branch`` (optional; the default branch otherwise)
    - vercel: ``project`` (id or name), ``team_id`` (optional)
    - sanity: ``project_id``, ``dataset`` (default "production"), ``studio_url`` (optional)
    - supabase: ``project_ref``; ``dsn`` (a Secret) enables the direct PostgreSQL probe
    """

    provider: ProviderKey
    # Values are not shown in reprs: a setting may hold a secret (e.g. a Vercel deploy hook URL).
    settings: Mapping[str, str] = attrs.field(
        factory=dict, converter=_frozen_map, hash=False, repr=lambda m: f"<keys {sorted(m)}>"
    )
    token: Secret | None = attrs.field(default=None, converter=_secret)
    dsn: Secret | None = attrs.field(default=None, converter=_secret)
    webhook_secret: Secret | None = attrs.field(default=None, converter=_secret)


@attrs.frozen(kw_only=True)
class ProjectConnections:
    """Which providers one project has linked. A provider that is absent is ``disconnected``."""

    project_id: str
    providers: Mapping[ProviderKey, ProviderConnection] = attrs.field(factory=dict, hash=False)

    def get(self, provider: ProviderKey) -> ProviderConnection | None:
        return self.providers.get(provider)


@runtime_checkable
class ConnectionResolver(Protocol):
    """project id -> its connections; None when the project does not exist (the endpoints answer 404)."""

    async def __call__(self, project_id: str) -> ProjectConnections | None: ...


# --- viewers --------------------------------------------------------------------------------------------------


def _roles(value: Any) -> frozenset[str]:
    return frozenset([value] if isinstance(value, str) else value)


@attrs.frozen(kw_only=True)
class Viewer:
    """Who is asking. ``roles`` apply to every project unless ``project_roles`` names the project; ``grants``
    add visibility beyond the role (``"repo"``, ``"org"``, ``"urls"``)."""

    user_id: str
    roles: frozenset[str] = attrs.field(factory=frozenset, converter=_roles)
    project_roles: Mapping[str, frozenset[str]] = attrs.field(factory=dict, hash=False)
    grants: frozenset[str] = attrs.field(factory=frozenset, converter=_roles)

    def roles_for(self, project_id: str) -> frozenset[str]:
        roles = self.project_roles.get(project_id)
        return self.roles if roles is None else frozenset(roles)


@attrs.frozen(kw_only=True)
class RequestInfo:
    """A framework-neutral view of an incoming request, handed to the host's Authenticator."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    #: The framework's own request object (Starlette ``Request``, Flask ``request``), for host code only.
    raw: Any = None


@runtime_checkable
class Authenticator(Protocol):
    """request -> Viewer, or None for an unauthenticated request (401)."""

    async def __call__(self, request: RequestInfo) -> Viewer | None: ...


@runtime_checkable
class Authorizer(Protocol):
    """May this viewer see this project at all? False answers 404, never 403, so existence is not revealed."""

    async def __call__(self, viewer: Viewer, project_id: str) -> bool: ...


# --- adapters -------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FetchContext:
    """What an adapter gets with each fetch: the clock, its time budget (seconds, from ``started``) and the
    provider's previous snapshot for this project, if one is cached (e.g. to keep a displayed measurement steady
    while it only jitters, see :func:`~integration_status.snapshot.steady_ms`)."""

    clock: Clock
    timeout: float
    started: float  # clock.monotonic() when the fetch began
    previous: ProviderSnapshot | None = None

    def remaining(self) -> float:
        return max(0.0, self.timeout - (self.clock.monotonic() - self.started))


@attrs.frozen(kw_only=True)
class ActionRequest:
    """A validated quick action request, as an action handler receives it."""

    project_id: str
    provider: ProviderKey
    action: str
    payload: Any = None
    user_id: str = ""


@attrs.frozen(kw_only=True)
class ActionOutcome:
    """The result of an action. ``done=False`` answers 202: the work goes on and reports through events.
    ``data`` is extra JSON for the UI (e.g. ``{"url": ...}`` for open-studio or connect)."""

    operation_id: str
    done: bool = True
    data: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    #: Whether the provider's state changed (its cache entry is invalidated and a status:update follows).
    changes_state: bool = True


async def _no_checkpoint(data: Mapping[str, Any]) -> None:
    """A context built without the service (tests, direct calls) records nothing."""


@attrs.frozen(kw_only=True)
class ActionContext:
    """Services an action handler may use: publish events, run work on after answering (202), the clock."""

    clock: Clock
    operation_id: str
    timeout: float
    publish: Callable[[Mapping[str, Any]], Awaitable[None]]
    spawn: Callable[[Callable[[], Awaitable[None]]], None]
    snapshot: ProviderSnapshot | None = None
    #: Record what a retry needs to reconcile this action if the worker dies (e.g. the provider's deployment
    #: id), as soon as it is known. The service records the start itself, before calling the handler.
    checkpoint: Callable[[Mapping[str, Any]], Awaitable[None]] = _no_checkpoint
    #: Set when an earlier attempt with the same Idempotency-Key stopped after it may have reached the
    #: provider: its last checkpoint. Only handlers marked ``@reconciling`` are called with it; they must
    #: reconcile (look the operation up, follow it), never simply run again. ``resume["answered"]`` is True
    #: when that attempt's answer was stored and only its follow-up (e.g. following a deployment) is left.
    resume: Mapping[str, Any] | None = attrs.field(default=None, hash=False)


ActionHandler: TypeAlias = Callable[
    [ActionRequest, ProviderConnection, ActionContext], Awaitable[ActionOutcome]
]


@runtime_checkable
class Adapter(Protocol):
    """One provider. ``fetch`` returns a raw snapshot or raises a
    :class:`~integration_status.exceptions.ProviderError`; it must respect ``ctx.remaining()``."""

    provider: ProviderKey

    async def fetch(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot: ...

    def action_handlers(self) -> Mapping[str, ActionHandler]: ...


# --- engines --------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CacheEntry:
    """A cached raw snapshot. Times are wall-clock epoch seconds so entries mean the same in every worker."""

    snapshot: ProviderSnapshot
    fresh_until: float
    changed_at: datetime  # when the content last changed (the item's updatedAt)
    checked_at: float
    #: The problem of the most recent failed refresh, if the last attempt failed (served with stale: true).
    error: Problem | None = None
    error_at: float | None = None


class CacheStore(Protocol):
    """Where raw snapshots live (process memory, or Redis shared by workers)."""

    async def load(self, key: str) -> CacheEntry | None: ...

    async def save(self, key: str, entry: CacheEntry, *, keep_for: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def try_lock(self, key: str, ttl: float) -> str | None:
        """Take the cross-worker refresh lock; an owner token, or None when another worker holds it."""
        ...

    async def unlock(self, key: str, token: str) -> None: ...


@attrs.frozen(kw_only=True)
class StoredResponse:
    """A finished action response kept for idempotent replay."""

    status: int
    body: Mapping[str, Any] = attrs.field(hash=False)
    headers: Mapping[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen(kw_only=True)
class BeginResult:
    """The answer of :meth:`IdempotencyStore.begin`.

    - ``started``: this caller holds the lease (``token``) and must ``complete`` or ``release`` it
    - ``resume``: an earlier attempt checkpointed (it may have reached the provider) and its worker stopped:
      this caller holds the lease (``token``) and must reconcile from ``checkpoint``, never simply re-run
    - ``replay``: a finished response with the same fingerprint (``response``); with a ``token`` too when the
      attempt's follow-up (e.g. following a deployment) was abandoned and this caller took it over
    - ``in_flight``: another request with this key is running (409)
    - ``mismatch``: the key was used for a different request (422)
    """

    state: Literal["started", "resume", "replay", "in_flight", "mismatch"]
    token: str | None = None
    response: StoredResponse | None = None
    checkpoint: Mapping[str, Any] | None = attrs.field(default=None, hash=False)


class IdempotencyStore(Protocol):
    """The contract is in :mod:`integration_status.core.idempotency`."""

    async def begin(self, key: str, fingerprint: str, *, lease: float, keep_for: float) -> BeginResult: ...

    async def checkpoint(self, key: str, token: str, data: Mapping[str, Any], *, lease: float) -> bool: ...

    async def complete(
        self, key: str, token: str, response: StoredResponse, *, keep_for: float, follow: float | None = None
    ) -> None: ...

    async def renew(self, key: str, token: str, *, lease: float) -> bool: ...

    async def settle(self, key: str, token: str) -> None: ...

    async def release(self, key: str, token: str) -> None: ...

    async def claim_abandoned(self, *, lease: float, limit: int) -> list[tuple[str, BeginResult]]: ...


@attrs.frozen(kw_only=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    #: Seconds until a slot frees (0 when allowed).
    retry_after: float
    #: Seconds until the window is entirely clear.
    reset: float


class RateLimiter(Protocol):
    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision: ...


@attrs.frozen(kw_only=True)
class StoredEvent:
    """An event as the bus keeps it: its id (the SSE ``id:``) and its raw (unredacted) JSON."""

    id: str
    data: Mapping[str, Any] = attrs.field(hash=False)


class Subscription(Protocol):
    """Events of one project, in id order. ``gap`` is True when the Last-Event-ID given at subscribe time had
    already fallen out of the buffer (the client must get a fresh snapshot). ``resume_id`` is the id of the
    newest event before those this subscription delivers (None when the project has none yet): a snapshot sent
    at subscribe time carries it, so a client that reconnects with it misses nothing."""

    gap: bool
    resume_id: str | None

    def __aiter__(self) -> AsyncIterator[StoredEvent]: ...


class EventBus(Protocol):
    async def publish(self, project_id: str, event: Mapping[str, Any]) -> str: ...

    def subscribe(
        self, project_id: str, *, last_event_id: str | None = None
    ) -> AbstractAsyncContextManager[Subscription]: ...


class DeliveryLog(Protocol):
    """Remembers delivery ids for replay protection (process memory, or a shared store for many workers)."""

    async def first_seen(self, delivery_id: str, ttl: float) -> bool:
        """Record ``delivery_id`` for ``ttl`` seconds; True the first time, False while it is remembered."""
        ...

    async def forget(self, delivery_id: str) -> None:
        """Drop ``delivery_id`` (a delivery whose events could not be published, so its retry must count)."""
        ...
