"""Quick actions: validation, permission, idempotency, the rate limit, dispatch and the result, in that order.

The order (docs/design.md, "Actions"): 401 -> project (400 / 404) -> 403 when the role may run nothing here ->
400 (body, Idempotency-Key) -> 403 for this action -> 400 not connected / listed with ``can: false`` ->
idempotency (replay / 409 / 422) -> 429 -> run. Idempotency comes before the rate limit so a replay never
costs a slot.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

import attrs

from integration_status._logging import get_logger
from integration_status.core.aggregator import cache_key
from integration_status.core.cache import SnapshotCache
from integration_status.core.clock import epoch_ms
from integration_status.core.deadline import call_with_timeout
from integration_status.core.idempotency import (
    Attempt,
    IdempotencyGuard,
    can_reconcile,
    fingerprint,
    parse_idempotency_key,
    scope_key,
)
from integration_status.core.ratelimit import rate_key, rate_limit_headers, retry_after_seconds
from integration_status.exceptions import (
    BackendUnavailable,
    Forbidden,
    InvalidRequest,
    OutcomeUnknown,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    RateLimitExceeded,
)
from integration_status.models import PROVIDERS, ProviderKey, StatusItem
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    Adapter,
    BeginResult,
    Clock,
    Engine,
    Metrics,
    Policy,
    ProjectConnections,
    ProviderConnection,
    StoredResponse,
    Viewer,
)
from integration_status.service.settings import Settings
from integration_status.snapshot import PROVIDER_ACTIONS

_log = get_logger("integration_status.service.actions")

#: How many abandoned actions one sweep finishes at most.
SWEEP_BATCH: Final = 20
#: How deep an action's ``payload`` may nest (hosts' payloads are small records; deeper is abuse).
MAX_PAYLOAD_DEPTH: Final = 32
#: HTTP status of an action whose provider failed, by problem code (the body carries the code).
PROVIDER_FAILURE_STATUS: Final[Mapping[str, int]] = {
    "oauth_revoked": 502,
    "rate_limited": 503,
    "timeout": 504,
    "unknown": 502,
}


@attrs.frozen(kw_only=True)
class ActionCall:
    """A validated action request body."""

    project_id: str
    provider: ProviderKey
    action: str
    payload: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"projectId": self.project_id, "provider": self.provider, "action": self.action}
        if self.payload is not None:
            out["payload"] = self.payload
        return out


def parse_action_body(body: object) -> ActionCall:
    """Validate ``{projectId, provider, action, payload?}``; errors name the field (400 invalid_request)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("body must be a JSON object")
    unknown = set(body) - {"projectId", "provider", "action", "payload"}
    if unknown:
        raise InvalidRequest(f"unknown field: {sorted(unknown)[0]}")
    project_id = _string_field(body, "projectId")
    if not project_id or len(project_id) > 200 or not project_id.isprintable():
        raise InvalidRequest("projectId must be a non-empty string of at most 200 printable characters")
    provider: Any = _string_field(body, "provider")
    if provider not in PROVIDERS:
        raise InvalidRequest(f"provider must be one of {', '.join(PROVIDERS)}")
    action = _string_field(body, "action")
    known = [a for a, _ in PROVIDER_ACTIONS[provider]]
    if action not in known:
        raise InvalidRequest(f"action must be one of {', '.join(known)} for {provider}")
    payload = body.get("payload")
    if _depth(payload) > MAX_PAYLOAD_DEPTH:
        raise InvalidRequest(f"payload nests deeper than {MAX_PAYLOAD_DEPTH} levels")
    return ActionCall(project_id=project_id, provider=provider, action=action, payload=payload)


def _string_field(body: Mapping[str, Any], name: str) -> str:
    """``body[name]``, a string: 400 ``{name} is required`` when the field is missing, ``{name} must be a
    string`` when it is there with another type (a number, ``null``, an object)."""
    if name not in body:
        raise InvalidRequest(f"{name} is required")
    value = body[name]
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value


def _depth(value: Any, limit: int = MAX_PAYLOAD_DEPTH + 1) -> int:
    """Levels of nested lists and objects in ``value`` (a scalar is 0), counting no further than ``limit``;
    breadth first, so no recursion however deep the input."""
    level, frontier = 0, [value]
    while level < limit:
        containers = [item for item in frontier if isinstance(item, dict | list)]
        if not containers:
            return level
        level += 1
        frontier = [
            child for item in containers for child in (item.values() if isinstance(item, dict) else item)
        ]
    return level


@attrs.frozen(kw_only=True)
class ActionResult:
    """What the actions endpoint answers: status, JSON body, extra headers, and whether it was a replay."""

    status: int
    body: Mapping[str, Any] = attrs.field(hash=False)
    headers: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    replayed: bool = False


def new_operation_id() -> str:
    return "op_" + secrets.token_urlsafe(12)


def failure_body(exc: ProviderError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A provider failure as the actions endpoint answers it (no secrets: messages come from our error tree)."""
    error: dict[str, Any] = {"code": exc.problem_code, "message": str(exc)}
    if exc.hint:
        error["hint"] = exc.hint
    headers: dict[str, str] = {}
    if isinstance(exc, ProviderRateLimited) and exc.retry_after is not None:
        seconds = max(1, round(exc.retry_after))
        error["retryAfter"] = seconds
        headers["Retry-After"] = str(seconds)
    return PROVIDER_FAILURE_STATUS[exc.problem_code], {"success": False, "error": error}, headers


class ActionHost(Protocol):
    """What the action pipeline uses of the service (``StatusService`` is one): its collaborators, the project
    check, the viewer's current items, the bus and the background task group."""

    @property
    def settings(self) -> Settings: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def cache(self) -> SnapshotCache: ...

    @property
    def idempotency(self) -> IdempotencyGuard: ...

    @property
    def adapters(self) -> Mapping[ProviderKey, Adapter]: ...

    async def project(self, project_id: object, viewer: Viewer) -> ProjectConnections: ...

    async def connections_of(self, project_id: str) -> ProjectConnections | None: ...

    async def items(self, connections: ProjectConnections, viewer: Viewer) -> tuple[StatusItem, ...]: ...

    async def publish(self, project_id: str, event: Mapping[str, Any]) -> str: ...

    async def refresh_provider(self, project_id: str, provider: ProviderKey) -> None: ...

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None: ...


class ActionRunner:
    """Runs quick actions for an :class:`ActionHost` (the service)."""

    def __init__(
        self,
        service: ActionHost,
        *,
        overrides: Mapping[tuple[str, str], ActionHandler] | None = None,
    ) -> None:
        self._service = service
        self._overrides = dict(overrides or {})

    def start(self, spawn: Callable[[Callable[[], Awaitable[None]]], None]) -> None:
        """Start looking for actions that a dead worker left unfinished (with the service). Only for a store
        that other processes share: a store in this process's memory dies with its worker."""
        store = self._service.idempotency.store
        if getattr(store, "shared", False) and callable(getattr(store, "claim_abandoned", None)):
            spawn(self._sweep)

    async def _sweep(self) -> None:
        """Every half lease: finish the attempts and follow-ups whose worker died (its lease ran out), so that
        a deploy answered 202 still reaches deploy:finished though its client never retries."""
        guard = self._service.idempotency
        while True:
            await self._service.clock.sleep(guard.lease / 2)
            try:
                claimed = await guard.store.claim_abandoned(lease=guard.lease, limit=SWEEP_BATCH)
            except BackendUnavailable:
                continue  # the store is away: the next sweep tries again
            for scope, begun in claimed:
                try:
                    finished = await self._finish_abandoned(scope, begun)
                    if not finished and begun.state == "resume" and begun.token is not None:
                        # This worker cannot finish it: hand the attempt back (its lease ends, as when an
                        # attempt fails), so that the client's retry is answered as after any dead worker
                        # instead of finding it taken by this sweep.
                        await guard.store.release(scope, begun.token)
                except Exception as exc:
                    _log.warning("integration_status.action.abandoned_failed", error=type(exc).__name__)

    async def _finish_abandoned(self, scope: str, begun: BeginResult) -> bool:
        """Finish a claimed attempt or follow-up; False when this worker cannot (the attempt was recorded
        without its request, or this worker has no handler for the action)."""
        service = self._service
        request = (begun.checkpoint or {}).get("request")
        if not isinstance(request, Mapping):
            return False  # recorded without its request: only the client's retry can finish it
        call = parse_action_body({k: v for k, v in request.items() if k != "userId"})
        viewer = Viewer(user_id=str(request.get("userId", "")))
        connections = await service.connections_of(call.project_id)
        connection = None if connections is None else connections.get(call.provider)
        handler = self.handler(call.provider, call.action)
        if handler is None:
            return False
        _log.info("integration_status.action.abandoned", provider=call.provider, action=call.action)

        async def action(attempt: Attempt) -> StoredResponse:
            conn = connection or ProviderConnection(provider=call.provider)
            return await self._dispatch(call, viewer, conn, handler, attempt)

        await service.idempotency.finish_abandoned(scope=scope, begun=begun, action=action)
        return True

    def handler(self, provider: ProviderKey, action: str) -> ActionHandler | None:
        override = self._overrides.get((provider, action))
        if override is not None:
            return override
        adapter = self._service.adapters.get(provider)
        return None if adapter is None else adapter.action_handlers().get(action)

    async def act(
        self,
        *,
        viewer: Viewer,
        body: object,
        idempotency_key: str | None,
        method: str = "POST",
        path: str = "",
    ) -> ActionResult:
        service = self._service
        if not isinstance(body, Mapping):
            raise InvalidRequest("body must be a JSON object")
        # The project first (400 for a bad id, 404 when unknown or hidden), then a role that may run nothing
        # there is refused before anything else is looked at (a viewer's POST is 403).
        connections = await service.project(_string_field(body, "projectId"), viewer)
        project_id = connections.project_id
        if not any(service.policy.allowed_actions(viewer, project_id, p) for p in PROVIDERS):
            raise Forbidden("your role may not run actions in this project")
        call = parse_action_body(body)
        key = parse_idempotency_key(idempotency_key)
        if call.action not in service.policy.allowed_actions(viewer, call.project_id, call.provider):
            raise Forbidden(f"your role may not run {call.action} on {call.provider}")
        connection = connections.get(call.provider)
        if connection is None and call.action != "connect":
            raise InvalidRequest(
                f"{call.provider} is not connected for this project", hint="Connect it first"
            )
        await self._check_can(call, connections, viewer)
        handler = self.handler(call.provider, call.action)
        if handler is None:
            raise InvalidRequest(f"{call.action} is not available on this server for {call.provider}")
        decision_headers: dict[str, str] = {}

        async def run(attempt: Attempt) -> StoredResponse:
            if attempt.resume is not None:  # the first attempt spent the rate-limit slot already
                return await self._dispatch(
                    call, viewer, connection or ProviderConnection(provider=call.provider), handler, attempt
                )
            decision = await service.engine.rate_limiter.hit(
                rate_key(viewer.user_id, call.project_id),
                limit=service.settings.rate_limit,
                window=service.settings.rate_window,
            )
            decision_headers.update(rate_limit_headers(decision, window=service.settings.rate_window))
            if not decision.allowed:
                raise RateLimitExceeded(
                    f"at most {decision.limit} actions per {service.settings.rate_window:g}s per user and project",
                    hint="Wait before trying again",
                    retry_after=retry_after_seconds(decision),
                )
            return await self._dispatch(
                call, viewer, connection or ProviderConnection(provider=call.provider), handler, attempt
            )

        try:
            stored, replayed = await service.idempotency.execute(
                scope=scope_key(viewer.user_id, call.project_id, key),
                fingerprint=fingerprint(method, path, call.to_json()),
                action=run,
            )
        except RateLimitExceeded as exc:
            exc.headers = dict(decision_headers)  # type: ignore[attr-defined]
            raise
        headers = {**stored.headers, **decision_headers}
        if replayed:
            headers = {**stored.headers, "Idempotent-Replayed": "true"}
        return ActionResult(status=stored.status, body=stored.body, headers=headers, replayed=replayed)

    async def _check_can(self, call: ActionCall, connections: ProjectConnections, viewer: Viewer) -> None:
        """The action as listed for this viewer right now must have ``can: true`` (the same rule that greys it
        out in the UI: token expired, rate limited, nothing to act on)."""
        items = await self._service.items(connections, viewer)
        item = next((i for i in items if i.key == call.provider), None)
        listed = None if item is None else next((a for a in item.actions if a.id == call.action), None)
        if listed is not None and not listed.can:
            reason = listed.reason or "not available now"
            raise InvalidRequest(f"{call.action} cannot run now: {reason}", hint=reason)

    async def _dispatch(
        self,
        call: ActionCall,
        viewer: Viewer,
        connection: ProviderConnection,
        handler: ActionHandler,
        attempt: Attempt,
    ) -> StoredResponse:
        service = self._service
        resume = attempt.resume
        operation_id = str((resume or {}).get("operationId") or new_operation_id())
        if resume is not None and not can_reconcile(handler):
            if attempt.follow_only:
                return StoredResponse(status=204, body={})  # nothing this handler can take over
            return self._failed(call, outcome_unknown(call))
        entry = await service.cache.peek(cache_key(call.project_id, call.provider))
        # What every checkpoint carries: a resumed attempt answers and reports under the same operation id,
        # and knows since when to look for the provider's operation.
        base = {
            "operationId": operation_id,
            "at": int((resume or {}).get("at") or epoch_ms(service.clock)),
            # Enough for a live worker to finish what this one started, should it die with no client retrying.
            "request": {**call.to_json(), "userId": viewer.user_id},
        }
        if resume is None:
            # Recorded before the provider can be called: from here on a crash is resumed, never re-run.
            await attempt.checkpoint(base)

        async def publish(event: Mapping[str, Any]) -> None:
            await service.publish(call.project_id, event)

        async def checkpoint(data: Mapping[str, Any]) -> None:
            await attempt.checkpoint({**base, **data})

        def spawn(fn: Callable[[], Awaitable[None]]) -> None:
            service.spawn(attempt.follow(fn))

        ctx = ActionContext(
            clock=service.clock,
            operation_id=operation_id,
            timeout=service.settings.action_timeout,
            publish=publish,
            spawn=spawn,
            snapshot=None if entry is None else entry.snapshot,
            checkpoint=checkpoint,
            # ``answered``: the response is stored already, only the follow-up is left to take over.
            resume=None if resume is None else {**resume, "answered": attempt.follow_only},
        )
        request = ActionRequest(
            project_id=call.project_id,
            provider=call.provider,
            action=call.action,
            payload=call.payload,
            user_id=viewer.user_id,
        )
        try:
            outcome: ActionOutcome = await call_with_timeout(
                service.clock, service.settings.action_timeout, lambda: handler(request, connection, ctx)
            )
        except TimeoutError:
            outcome_exc: ProviderError = ProviderTimeout(
                f"{call.provider} {call.action} did not finish in time", provider=call.provider
            )
            return self._failed(call, outcome_exc)
        except ProviderError as exc:
            if attempt.follow_only:
                raise  # the stored answer stands; the follow-up is left to the next retry
            return self._failed(call, exc)
        if attempt.follow_only:
            return StoredResponse(status=204, body={})  # discarded: the stored answer is replayed
        _log.info(
            "integration_status.action.succeeded",
            provider=call.provider,
            action=call.action,
            done=outcome.done,
        )
        service.metrics.action(call.provider, call.action, "ok")
        if outcome.changes_state:
            service.spawn(_refresh_later(service.refresh_provider, call.project_id, call.provider))
        body: dict[str, Any] = {"success": True, "operationId": outcome.operation_id or operation_id}
        body.update({k: v for k, v in outcome.data.items() if k not in body})
        return StoredResponse(status=200 if outcome.done else 202, body=body)

    def _failed(self, call: ActionCall, exc: ProviderError) -> StoredResponse:
        _log.info(
            "integration_status.action.failed",
            provider=call.provider,
            action=call.action,
            code=exc.problem_code,
        )
        outcome = "timeout" if exc.problem_code == "timeout" else "error"
        self._service.metrics.action(call.provider, call.action, outcome)
        status, body, headers = failure_body(exc)
        return StoredResponse(status=status, body=body, headers=headers)


def outcome_unknown(call: ActionCall) -> OutcomeUnknown:
    """The answer to a retry of an action whose worker stopped after it may have reached the provider, when
    the provider cannot be asked what happened."""
    return OutcomeUnknown(
        f"The outcome of {call.provider} {call.action} is unknown: the server handling it stopped after it may "
        f"have reached {call.provider}",
        provider=call.provider,
        hint=f"Check {call.provider} for it before running it again with a new Idempotency-Key",
    )


def _refresh_later(
    refresh: Callable[[str, ProviderKey], Awaitable[None]], project_id: str, provider: ProviderKey
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await refresh(project_id, provider)

    return run
