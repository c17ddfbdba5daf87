"""The seams: what the host fills in, what adapters implement, and what the engines (memory, Redis) provide.

Host seams: :class:`ConnectionResolver`, :class:`Authenticator`, :class:`Authorizer`, and a
:class:`~integration_status.core.policy.Policy`. Adapter seam: :class:`Adapter`. Engine seams:
:class:`CacheStore`, :class:`IdempotencyStore`, :class:`RateLimiter`, :class:`EventBus`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import anyio
import attrs

from integration_status.models import Problem, ProviderKey
from integration_status.snapshot import ProviderSnapshot, Visibility


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


class RefreshableToken:
    """A credential that expires and that the host can mint again: a GitHub App installation token (one hour),
    an OAuth access token with a refresh token (Vercel, Supabase). ``mint`` is an async callable answering a
    fresh token (a :class:`Secret` or a string); ``token`` is the current one, if the host has it already.

    When a provider rejects the token (401), the adapter asks for a fresh one once and retries the call; only if
    that fails too, or minting fails, does the connection show ``oauth_revoked``. Concurrent calls that were
    rejected with the same token share one mint. The minted token is kept in this object only (process memory):
    the host keeps one instance per credential (per installation, per user) for as long as it is valid, e.g. in
    its resolver's own cache. Neither the repr nor any error shows a token.

    >>> async def mint() -> str:
    ...     return "ghs_fresh"
    >>> RefreshableToken(mint)
    RefreshableToken(***)
    """

    def __init__(
        self, mint: Callable[[], Awaitable[Secret | str]], *, token: Secret | str | None = None
    ) -> None:
        self._mint = mint
        self._token = Secret(token) if isinstance(token, str) else token
        self._lock = anyio.Lock()

    async def current(self) -> Secret:
        """The token to use now (minted on first use when the host gave none)."""
        token = self._token
        return token if token is not None else await self.refresh(None)

    async def refresh(self, rejected: Secret | None) -> Secret:
        """A fresh token after ``rejected`` was refused. If another caller already replaced ``rejected``, its
        token is answered without minting again."""
        async with self._lock:
            if self._token is not None and self._token != rejected:
                return self._token
            minted = await self._mint()
            self._token = Secret(minted) if isinstance(minted, str) else minted
            return self._token

    def __repr__(self) -> str:
        return "RefreshableToken(***)"

    __str__ = __repr__


#: What a connection may carry as its token: a fixed secret, or one the host can mint again.
Credential: TypeAlias = Secret | RefreshableToken


def _secret(value: Secret | str | None) -> Secret | None:
    return Secret(value) if isinstance(value, str) else value


def _credential(value: Credential | str | None) -> Credential | None:
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
    #: A :class:`Secret` (a string is wrapped), or a :class:`RefreshableToken` for a token that expires.
    token: Credential | None = attrs.field(default=None, converter=_credential)
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
    if type(value) is frozenset:  # most viewers are built per request: the common case costs one check
        return value
    return frozenset([value] if isinstance(value, str) else value)


def _project_roles(value: Mapping[str, Iterable[str]] | None) -> Mapping[str, frozenset[str]]:
    # Sets, lists or a single role name per project, as host code naturally writes them.
    if not value:
        return {}
    return {project: _roles(roles) for project, roles in value.items()}


@attrs.frozen(kw_only=True)
class Viewer:
    """Who is asking. ``roles`` apply to every project unless ``project_roles`` names the project; ``grants``
    add visibility beyond the role (``"repo"``, ``"org"``, ``"urls"``)."""

    user_id: str
    # frozenset() is immutable: one default object instead of a factory call per viewer (one per request).
    roles: frozenset[str] = attrs.field(default=frozenset(), converter=_roles)
    project_roles: Mapping[str, frozenset[str]] = attrs.field(
        factory=dict, hash=False, converter=_project_roles
    )
    grants: frozenset[str] = attrs.field(default=frozenset(), converter=_roles)

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


#: ``viewer -> may they read the detailed checks?`` (the host decides, e.g. staff only). The checks name providers
#: and their error rates, which tell an outsider which integrations a deployment has and how they are doing.
HealthAuthorizer: TypeAlias = Callable[[Viewer], Awaitable[bool]]


@runtime_checkable
class Authorizer(Protocol):
    """May this viewer see this project at all? False answers 404, never 403, so existence is not revealed."""

    async def __call__(self, viewer: Viewer, project_id: str) -> bool: ...


# --- adapters -------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FetchContext:
    """What an adapter gets with each fetch: the clock, its time budget (seconds, from ``started``) and the
    provider's previous snapshot for this project, if one is cached (e.g. to keep a displayed measurement steady
    while it only jitters, see :func:`~integration_status.snapshot.steady_ms`, or to send back the validators of
    its answers, see :class:`~integration_status.snapshot.Validators`)."""

    clock: Clock
    timeout: float
    started: float  # clock.monotonic() when the fetch began
    previous: ProviderSnapshot | None = None
    #: The cache's refresh interval (seconds), which an adapter may stretch (``ProviderSnapshot.fresh_for``)
    #: while a provider's rate budget runs low; None when the caller has no cache.
    ttl: float | None = None
    #: The project being checked (None when the caller does not say).
    project_id: str | None = None
    #: Whether the provider's signed webhooks are arriving for this project (polling may slow down).
    webhooks_arriving: bool = False

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
    at subscribe time carries it, so a client that reconnects with it misses nothing.

    A subscription may also offer ``poll() -> StoredEvent | None``: the next event if it is already there,
    without waiting (None otherwise). Both built-in buses do; the event streams then send every event that is
    waiting in one write instead of one write each."""

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

    # Optional: ``async def first_seen_all(self, delivery_ids: Sequence[str], ttl: float) -> int`` records the
    # ids in order while each is new and stops at the first one remembered, leaving it and the rest as they
    # were; it answers how many were new. What ``first_seen`` in a loop does, in one step (one round trip to a
    # shared store); a log without it is asked id by id.


#: A webhook delivery recorded and published in one step, as an engine may offer it (``publish_delivery``):
#: ``(project_id, events, delivery_keys, ttl)`` -> the events' ids, or None when one of the keys was already
#: known (then nothing after it is recorded and nothing is published). See ``DeliveryLog.first_seen_all``.
PublishDelivery: TypeAlias = Callable[
    [str, Sequence[Mapping[str, Any]], Sequence[str], float], Awaitable[list[str] | None]
]


class Engine(Protocol):
    """Where a service keeps what its workers share: the cache store, idempotency records, the rate limiter,
    the event bus and the webhook delivery log. ``MemoryEngine`` (one process) and ``RedisEngine`` (many
    workers) implement it; the service enters it (``async with``) when it starts and leaves it when it stops."""

    @property
    def cache_store(self) -> CacheStore: ...

    @property
    def idempotency(self) -> IdempotencyStore: ...

    @property
    def rate_limiter(self) -> RateLimiter: ...

    @property
    def events(self) -> EventBus: ...

    @property
    def deliveries(self) -> DeliveryLog: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any: ...


# --- webhooks -------------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class WebhookTarget:
    """The integration a delivery belongs to, as the host's resolver finds it."""

    project_id: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: The per-integration signing secret configured at the provider.
    secret: Secret = attrs.field(validator=attrs.validators.instance_of(Secret))


#: ``(provider, headers with lower-case names, parsed JSON body) -> target``, or None for an unknown
#: integration (404). GitHub: by ``repository.full_name``; Vercel: by ``payload.project.id``; Sanity: by the
#: ``sanity-project-id`` header. The body is not yet authenticated when the resolver sees it: look it up,
#: never act on it.
WebhookResolver: TypeAlias = Callable[[str, Mapping[str, str], Any], Awaitable[WebhookTarget | None]]


# --- policy and metrics ---------------------------------------------------------------------------------------


@runtime_checkable
class Policy(Protocol):
    """What a viewer may do (action ids) and see (:class:`Visibility`) for one provider of one project."""

    def allowed_actions(self, viewer: Viewer, project_id: str, provider: ProviderKey) -> frozenset[str]: ...

    def visibility(self, viewer: Viewer, project_id: str, provider: ProviderKey) -> Visibility: ...


#: ``ok``; ``timeout``; ``error`` (any other failure); ``auth`` (access lost: the provider answered
#: correctly).
FetchOutcome: TypeAlias = Literal["ok", "timeout", "error", "auth"]
#: ``hit``: a fresh entry served with no call; ``miss``: no fresh entry, a refresh was awaited;
#: ``stale``: the last good value served because the refresh failed or missed the deadline.
CacheEvent: TypeAlias = Literal["hit", "miss", "stale"]
BreakerPhaseName: TypeAlias = Literal["closed", "half_open", "open"]


class Metrics(Protocol):
    """Where the service reports. Every method is called on the event loop and must return quickly."""

    def observe_fetch(self, provider: str, seconds: float, outcome: FetchOutcome) -> None:
        """One adapter fetch finished (or timed out) after ``seconds``."""

    def observe_request(self, endpoint: str, seconds: float, status: int) -> None:
        """One ``status`` or ``actions`` request was answered with HTTP ``status`` after ``seconds``."""

    def cache(self, event: CacheEvent) -> None:
        """A provider was served fresh (``hit``), refreshed (``miss``) or served ``stale``."""

    def breaker_state(self, provider: str, state: BreakerPhaseName, previous: BreakerPhaseName) -> None:
        """One of ``provider``'s breakers (there is one per project) moved from ``previous`` to ``state``."""

    def sse_connections(self, delta: int, *, dropped: bool = False) -> None:
        """An event stream opened (+1) or ended (-1); ``dropped`` when it ended by an error on our side."""

    def action(self, provider: str, action: str, outcome: str) -> None:
        """A quick action ran to an outcome: ``ok``, ``timeout`` or ``error``."""
