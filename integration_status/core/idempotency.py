"""Idempotent quick actions: the ``Idempotency-Key`` header, request fingerprints, the guard around an action.

The contract every :class:`~integration_status.protocols.IdempotencyStore` engine (memory, Redis, PostgreSQL)
implements, for a scoped key ``k`` (see :func:`scope_key`) and a request fingerprint ``f`` (see
:func:`fingerprint`). A record is in flight (an attempt holds its lease) or done (a stored response); an
attempt that may have reached the provider says so with ``checkpoint`` first, so a crash never turns into a
silent second run.

``begin(k, f, lease=L, keep_for=K)``
    - no record, or only an expired one (a done record older than its ``keep_for``, or an in-flight lease
      older than ``L`` that never checkpointed: the action provably did not start) -> a new in-flight record
      with a fresh random owner token: ``BeginResult(state="started", token=...)``.
    - a record (done or in flight) whose fingerprint differs from ``f`` -> ``state="mismatch"`` (422). A
      different request never learns whether the first one finished.
    - an in-flight record with fingerprint ``f`` and a live lease -> ``state="in_flight"`` (409).
    - an in-flight record with fingerprint ``f`` whose lease ran out after a checkpoint (its worker died
      after the action may have reached the provider) -> the caller takes the lease over:
      ``state="resume"`` with a new token and the last ``checkpoint``; it must reconcile, never re-run.
    - a done record with fingerprint ``f`` -> ``state="replay"`` with the stored response. When the record
      still has a follow-up (work after the answer, e.g. following a deployment) whose lease ran out, the
      caller also takes that over: the replay carries a new ``token`` and the ``checkpoint``.
    ``begin`` is atomic: of N concurrent callers with one key, exactly one gets ``started`` (or ``resume``,
    or the follow-up token).
``checkpoint(k, token, data, lease=L)``
    the owner records what a later attempt needs to reconcile (replacing earlier data) and renews its lease;
    from now on the record survives its lease. False when ``token`` no longer owns the record.
``complete(k, token, response, keep_for=K, follow=None)``
    turns the caller's in-flight record into a done one, kept ``K`` seconds from now. With ``follow=F`` the
    token keeps owning the record's follow-up, leased for ``F`` seconds. A token that no longer owns the
    record (its lease expired and another request took over) is a no-op.
``renew(k, token, lease=L)``
    extends the owner's lease (in flight, or of the follow-up) to ``L`` seconds from now; False when the token
    no longer owns it.
``settle(k, token)``
    the follow-up ended: the done record keeps only its response. A stale token is a no-op.
``release(k, token)``
    ends the caller's in-flight attempt: a record that never checkpointed is deleted, so the same key may be
    retried at once; a checkpointed one only loses its lease, so the next ``begin`` resumes it. A stale token
    is a no-op; a done record is never deleted by ``release``.
``claim_abandoned(lease=L, limit=N)``
    takes over, as ``begin`` would for a retry, up to ``N`` records whose lease ran out after a checkpoint (a
    dead worker's attempt: ``(k, BeginResult(state="resume", ...))``) or whose follow-up lease ran out
    (``(k, BeginResult(state="replay", token=..., ...))``), so that a live worker finishes them even when no
    client retries. Each record is claimed by one caller only.

Times are wall-clock seconds (``clock.time()``) so a record means the same in every worker.

>>> parse_idempotency_key('"a\\\\"b"')
'a"b'
>>> is_storable(202), is_storable(429)
(True, False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import anyio

from integration_status._logging import get_logger
from integration_status.core.canonical import canonical_json
from integration_status.core.clock import Clock
from integration_status.exceptions import IdempotencyConflict, IdempotencyMismatch, InvalidRequest
from integration_status.protocols import BeginResult, IdempotencyStore, StoredResponse

__all__ = [
    "DEFAULT_LEASE",
    "HEADER",
    "MAX_KEY_LENGTH",
    "REPLAYED_HEADER",
    "RETENTION",
    "Attempt",
    "IdempotencyGuard",
    "can_reconcile",
    "fingerprint",
    "is_storable",
    "parse_idempotency_key",
    "reconciling",
    "scope_key",
]

HEADER: Final = "Idempotency-Key"
#: The response header set on a replayed answer.
REPLAYED_HEADER: Final = "Idempotent-Replayed"
MAX_KEY_LENGTH: Final = 255
#: How long a finished response is kept for replay (seconds).
RETENTION: Final = 86_400.0
#: How long an in-flight record blocks its key when its worker never completes or releases it (seconds).
#: It must exceed the longest action: a lease that runs out lets a second request start.
DEFAULT_LEASE: Final = 60.0

# A quoted form can at most double every character (all escapes) plus the two quotes.
_MAX_HEADER_LENGTH: Final = 2 * MAX_KEY_LENGTH + 2


def _key_is_valid(key: str) -> bool:
    return (
        0 < len(key) <= MAX_KEY_LENGTH
        and all(" " <= ch <= "~" for ch in key)
        and not key.startswith(" ")
        and not key.endswith(" ")
    )


def _unquote_sf_string(value: str) -> str | None:
    """An RFC 8941 sf-string (``"..."``, escapes ``\\"`` and ``\\\\`` only), unquoted; None if malformed."""
    if len(value) < 2 or not value.startswith('"') or not value.endswith('"'):
        return None
    out: list[str] = []
    chars = iter(value[1:-1])
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt not in ('"', "\\"):
                return None
            out.append(nxt)
        elif ch == '"' or not " " <= ch <= "~":
            return None
        else:
            out.append(ch)
    return "".join(out)


def parse_idempotency_key(header: str | None) -> str:
    """The key from an ``Idempotency-Key`` header value, or :class:`InvalidRequest` (400).

    A key is 1-255 printable ASCII characters (0x20-0x7E) that neither starts nor ends with a space; a comma
    only in the quoted form, since a bare one is what two joined header lines look like. The header may also
    carry it as an RFC 8941 structured-field string (``"key"``, escapes ``\\"`` and
    ``\\\\``), the form of draft-ietf-httpapi-idempotency-key-header; it is unquoted. Surrounding spaces
    and tabs are optional whitespace in HTTP (RFC 9110 section 5.5), not part of the value, and are ignored.

    >>> parse_idempotency_key("order-42")
    'order-42'
    >>> parse_idempotency_key('"order-42"')
    'order-42'
    """
    if header is None:
        raise InvalidRequest(f"The {HEADER} header is required")
    value = header.strip(" \t")
    if not value:
        raise InvalidRequest(f"The {HEADER} header is required")
    if len(value) > _MAX_HEADER_LENGTH:
        raise InvalidRequest(f"The {HEADER} header must be at most {MAX_KEY_LENGTH} characters")
    key: str | None = value
    if value.startswith('"'):
        key = _unquote_sf_string(value)
    elif "," in value:
        # Two header lines joined (RFC 9110 5.3) look exactly like this: which key was meant is unknowable.
        raise InvalidRequest(f"The {HEADER} header must be sent once (a comma needs the quoted form)")
    if key is None or not _key_is_valid(key):
        raise InvalidRequest(
            f"The {HEADER} header must be 1-{MAX_KEY_LENGTH} printable ASCII characters "
            "(or a quoted structured-field string)"
        )
    return key


def fingerprint(method: str, path: str, body: Mapping[str, Any] | Any) -> str:
    """sha256 hex of the request: upper-cased method, path, and the canonical JSON of the body.

    Key order and whitespace in the body do not matter; any other difference does.

    >>> fingerprint("post", "/a", {"x": 1, "y": 2}) == fingerprint("POST", "/a", {"y": 2, "x": 1})
    True
    """
    try:
        # A JSON array keeps the three parts apart: no path or body can imitate another split.
        text = canonical_json([method.upper(), path, body])
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("The request body is not plain JSON") from exc
    return hashlib.sha256(text).hexdigest()


def scope_key(user_id: str, project_id: str, key: str) -> str:
    """The store key of an Idempotency-Key for one (user, project): sha256 hex of the three parts.

    The parts are JSON-encoded as an array before hashing, so no choice of user-controlled strings can make
    two different triples share a store key; a fixed-length key also keeps user text out of the store.
    """
    text = canonical_json(["idempotency", user_id, project_id, key])
    return hashlib.sha256(text).hexdigest()


def is_storable(status: int) -> bool:
    """Whether a response with this HTTP status is kept for replay.

    Stored: every 2xx (200 done, 202 accepted) and every 5xx (the action ran and a provider failed or timed
    out, e.g. 502/504 with a provider ``error``; it may have had effects, so a retry with the same key must
    not run it again). Never stored: every 4xx (400 validation, 401, 403, 404, 409, 422, 429 ...: the action
    did not run, so the same key may be retried and succeed), and 1xx/3xx.
    """
    return 200 <= status <= 299 or 500 <= status <= 599


_F = TypeVar("_F", bound=Callable[..., Any])


def reconciling(handler: _F) -> _F:
    """Mark an action handler that can reconcile: called with ``ctx.resume`` (the checkpoint of an attempt
    whose worker died), it looks the provider's operation up and follows it instead of starting another.

    A handler without the mark is never called again after its attempt may have reached the provider: the
    retry is answered :class:`~integration_status.exceptions.OutcomeUnknown`.
    """
    handler.__dict__["reconciles"] = True
    return handler


def can_reconcile(handler: Callable[..., Any]) -> bool:
    """Whether ``handler`` (a function, or a bound method of one) was marked with :func:`reconciling`."""
    return getattr(handler, "reconciles", False) is True


class Attempt:
    """One run of an action under :meth:`IdempotencyGuard.execute`: what the action may tell the store.

    ``resume`` is the checkpoint of an earlier attempt whose worker stopped after it may have reached the
    provider: the action must reconcile from it (look the operation up, follow it), never simply run again.
    ``follow_only`` is True when that attempt's response is already stored and only its follow-up (work it
    spawned after answering) is to be taken over; the action's own answer is then discarded.
    """

    def __init__(
        self,
        guard: IdempotencyGuard,
        scope: str,
        token: str,
        *,
        resume: Mapping[str, Any] | None = None,
        follow_only: bool = False,
    ) -> None:
        self._guard = guard
        self._scope = scope
        self._token = token
        self.resume = resume
        self.follow_only = follow_only
        self.checkpointed = resume is not None
        self._pending = 0
        self._stored: anyio.Event | None = None  # set once the response is stored (complete returned)
        self._follow_stored = False  # the response was stored with a follow-up lease

    async def checkpoint(self, data: Mapping[str, Any]) -> None:
        """Record what a later attempt needs (before the provider is called, then its operation id): from now
        on a crash of this worker is resumed from ``data``, never re-run blindly."""
        if self.follow_only:
            return  # the response is stored: a later take-over resumes from the stored checkpoint
        stored = await self._guard.store.checkpoint(self._scope, self._token, data, lease=self._guard.lease)
        if not stored:
            get_logger(__name__).warning("integration_status.idempotency.checkpoint_lost")
        self.checkpointed = True

    def follow(self, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """``fn`` (background work after the answer) wrapped so that the record's lease is renewed while it
        runs and released when it ends: a worker that dies meanwhile leaves the follow-up to the next retry."""
        self._pending += 1
        guard = self._guard

        async def run() -> None:
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._keep_lease)
                    try:
                        await fn()
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                self._pending -= 1
                if self._pending == 0:
                    with anyio.CancelScope(shield=True):
                        await self._settle_when_stored(guard)

        return run

    async def _keep_lease(self) -> None:
        guard = self._guard
        while True:
            await guard.clock.sleep(guard.lease / 3)
            if not await guard.store.renew(self._scope, self._token, lease=guard.lease):
                get_logger(__name__).warning("integration_status.idempotency.follow_lease_lost")
                return

    async def _settle_when_stored(self, guard: IdempotencyGuard) -> None:
        if self._stored is not None:
            await self._stored.wait()
        if self._follow_stored:
            try:
                await guard.store.settle(self._scope, self._token)
            except Exception:
                get_logger(__name__).warning("integration_status.idempotency.settle_failed", exc_info=True)

    async def _store(self, response: StoredResponse) -> None:
        guard = self._guard
        self._stored = anyio.Event()
        try:
            if is_storable(response.status):
                follow = guard.lease if self._pending else None
                await guard.store.complete(
                    self._scope, self._token, response, keep_for=guard.keep_for, **_follow_kw(follow)
                )
                self._follow_stored = follow is not None
            else:
                await guard.store.release(self._scope, self._token)
        finally:
            self._stored.set()
        if self._follow_stored and self._pending == 0:  # the follow-up ended while the response was stored
            await guard.store.settle(self._scope, self._token)
            self._follow_stored = False


def _follow_kw(follow: float | None) -> dict[str, float]:
    # Passed only when there is a follow-up, so stores written before follow-ups existed keep working.
    return {} if follow is None else {"follow": follow}


class IdempotencyGuard:
    """Runs an action at most once per scoped key and replays its stored response.

    The caller checks the rate limit *inside* ``action`` so a replay never spends a slot nor gets a 429.
    ``lease`` must exceed the longest action: an action that outlives it is logged
    (``integration_status.idempotency.lease_overrun``), since a retry may have run it a second time; an
    action that checkpoints (see :class:`Attempt`) is never re-run after its lease, it is resumed.
    """

    def __init__(
        self,
        store: IdempotencyStore,
        *,
        clock: Clock,
        keep_for: float = RETENTION,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        if keep_for <= 0 or lease <= 0:
            raise ValueError("keep_for and lease must be positive")
        self.store = store
        self.clock = clock
        self.keep_for = keep_for
        self.lease = lease

    async def run(
        self, *, scope: str, fingerprint: str, action: Callable[[], Awaitable[StoredResponse]]
    ) -> tuple[StoredResponse, bool]:
        """``(response, replayed)`` for an action that never checkpoints (see :meth:`execute`)."""
        return await self.execute(scope=scope, fingerprint=fingerprint, action=lambda _attempt: action())

    async def execute(
        self, *, scope: str, fingerprint: str, action: Callable[[Attempt], Awaitable[StoredResponse]]
    ) -> tuple[StoredResponse, bool]:
        """``(response, replayed)``.

        Raises :class:`IdempotencyConflict` (409) while another request with the key runs and
        :class:`IdempotencyMismatch` (422) when the key was used for a different request. Whatever ``action``
        raises (a RequestError such as RateLimitExceeded, a crash, a cancellation) releases the key and
        propagates; its response is stored only when :func:`is_storable`, otherwise the key is released. A
        replay whose follow-up was abandoned by a dead worker runs ``action`` with ``follow_only`` first.
        """
        begun = await self.store.begin(scope, fingerprint, lease=self.lease, keep_for=self.keep_for)
        if begun.state == "replay":
            if begun.response is None:  # pragma: no cover - a store bug, not a client error
                raise RuntimeError("idempotency store returned a replay without a response")
            if begun.token is not None:
                await self._take_over_follow_up(scope, begun.token, begun.checkpoint, action)
            return begun.response, True
        if begun.state == "in_flight":
            raise IdempotencyConflict(
                "A request with this Idempotency-Key is still in progress", hint="Retry when it has finished"
            )
        if begun.state == "mismatch":
            raise IdempotencyMismatch("This Idempotency-Key was already used for a different request")
        token = begun.token
        if token is None:  # pragma: no cover - a store bug
            raise RuntimeError("idempotency store started a request without a token")
        if begun.state == "resume":
            get_logger(__name__).info("integration_status.idempotency.resumed")
        return await self._run_attempt(
            scope, token, begun.checkpoint if begun.state == "resume" else None, action
        ), False

    async def finish_abandoned(
        self, *, scope: str, begun: BeginResult, action: Callable[[Attempt], Awaitable[StoredResponse]]
    ) -> None:
        """Finish what a dead worker left, as claimed by ``store.claim_abandoned``: resume its attempt (and
        store the answer, for the client's retry) or take over its follow-up."""
        if begun.token is None:  # pragma: no cover - a store bug
            raise RuntimeError("idempotency store claimed a record without a token")
        if begun.state == "resume":
            get_logger(__name__).info("integration_status.idempotency.resumed", by="sweep")
            await self._run_attempt(scope, begun.token, begun.checkpoint or {}, action)
        else:
            await self._take_over_follow_up(scope, begun.token, begun.checkpoint, action)

    async def _run_attempt(
        self,
        scope: str,
        token: str,
        resume: Mapping[str, Any] | None,
        action: Callable[[Attempt], Awaitable[StoredResponse]],
    ) -> StoredResponse:
        attempt = Attempt(self, scope, token, resume=resume)
        started = self.clock.monotonic()
        try:
            response = await action(attempt)
        except BaseException:
            await self._release_quietly(scope, token)
            raise
        elapsed = self.clock.monotonic() - started
        if elapsed >= self.lease and not attempt.checkpointed:
            # The lease ran out while the action ran: a retry may have started a second execution meanwhile.
            get_logger(__name__).warning(
                "integration_status.idempotency.lease_overrun", elapsed=round(elapsed, 3), lease=self.lease
            )
        # The action's effects have happened: recording them must survive a client that goes away now.
        with anyio.CancelScope(shield=True):
            await attempt._store(response)
        return response

    async def _take_over_follow_up(
        self,
        scope: str,
        token: str,
        checkpoint: Mapping[str, Any] | None,
        action: Callable[[Attempt], Awaitable[StoredResponse]],
    ) -> None:
        attempt = Attempt(self, scope, token, resume=checkpoint or {}, follow_only=True)
        get_logger(__name__).info("integration_status.idempotency.follow_up_resumed")
        attempt._stored = anyio.Event()
        attempt._stored.set()
        attempt._follow_stored = True
        try:
            await action(attempt)
        except Exception:
            # Left to its lease: the next retry takes it over again.
            get_logger(__name__).warning("integration_status.idempotency.follow_up_failed", exc_info=True)
            return
        if attempt._pending == 0:
            await self.store.settle(scope, token)

    async def _release_quietly(self, scope: str, token: str) -> None:
        # Shielded so a cancelled request still frees its key; a failing store must not hide the first error.
        with anyio.CancelScope(shield=True):
            try:
                await self.store.release(scope, token)
            except Exception:
                get_logger(__name__).warning("integration_status.idempotency.release_failed", exc_info=True)
