"""Idempotent quick actions: the ``Idempotency-Key`` header, request fingerprints, the guard around an action.

The contract every :class:`~integration_status.protocols.IdempotencyStore` engine (memory, Redis) implements,
for a scoped key ``k`` (see :func:`scope_key`) and a request fingerprint ``f`` (see :func:`fingerprint`):

``begin(k, f, lease=L, keep_for=K)``
    - no record for ``k``, or only an expired one (a finished record older than its ``keep_for``, or an
      in-flight lease older than ``L`` - a worker that crashed mid-action) -> a new in-flight record with a
      fresh random owner token: ``BeginResult(state="started", token=...)``.
    - a record (finished or in flight) whose fingerprint differs from ``f`` -> ``state="mismatch"`` (422). A
      different request never learns whether the first one finished.
    - an in-flight record with fingerprint ``f`` -> ``state="in_flight"`` (409).
    - a finished record with fingerprint ``f`` -> ``state="replay"`` with the stored response.
    ``begin`` is atomic: of N concurrent callers with one key, exactly one gets ``started``.
``complete(k, token, response, keep_for=K)``
    turns the caller's in-flight record into a finished one, kept ``K`` seconds from now. A token that no
    longer owns the record (its lease expired and another request took over) is a no-op.
``release(k, token)``
    deletes the caller's in-flight record so the same key may be retried at once. A stale token is a no-op;
    a finished record is never deleted by ``release``.

Times are wall-clock seconds (``clock.time()``) so a record means the same in every worker.

>>> parse_idempotency_key('"a\\\\"b"')
'a"b'
>>> is_storable(202), is_storable(429)
(True, False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import anyio

from integration_status._logging import get_logger
from integration_status.core.canonical import canonical_json
from integration_status.core.clock import Clock
from integration_status.exceptions import IdempotencyConflict, IdempotencyMismatch, InvalidRequest
from integration_status.protocols import IdempotencyStore, StoredResponse

__all__ = [
    "DEFAULT_LEASE",
    "HEADER",
    "MAX_KEY_LENGTH",
    "REPLAYED_HEADER",
    "RETENTION",
    "IdempotencyGuard",
    "fingerprint",
    "is_storable",
    "parse_idempotency_key",
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


class IdempotencyGuard:
    """Runs an action at most once per scoped key and replays its stored response.

    The caller checks the rate limit *inside* ``action`` so a replay never spends a slot nor gets a 429.
    ``lease`` must exceed the longest action: an action that outlives it is logged
    (``integration_status.idempotency.lease_overrun``), since a retry may have run it a second time.
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
        self._store = store
        self._clock = clock
        self._keep_for = keep_for
        self._lease = lease

    async def run(
        self, *, scope: str, fingerprint: str, action: Callable[[], Awaitable[StoredResponse]]
    ) -> tuple[StoredResponse, bool]:
        """``(response, replayed)``.

        Raises :class:`IdempotencyConflict` (409) while another request with the key runs and
        :class:`IdempotencyMismatch` (422) when the key was used for a different request. Whatever ``action``
        raises (a RequestError such as RateLimitExceeded, a crash, a cancellation) releases the key and
        propagates; its response is stored only when :func:`is_storable`, otherwise the key is released.
        """
        begun = await self._store.begin(scope, fingerprint, lease=self._lease, keep_for=self._keep_for)
        if begun.state == "replay":
            if begun.response is None:  # pragma: no cover - a store bug, not a client error
                raise RuntimeError("idempotency store returned a replay without a response")
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
        started = self._clock.monotonic()
        try:
            response = await action()
        except BaseException:
            await self._release_quietly(scope, token)
            raise
        elapsed = self._clock.monotonic() - started
        if elapsed >= self._lease:
            # The lease ran out while the action ran: a retry may have started a second execution meanwhile.
            get_logger(__name__).warning(
                "integration_status.idempotency.lease_overrun", elapsed=round(elapsed, 3), lease=self._lease
            )
        # The action's effects have happened: recording them must survive a client that goes away now.
        with anyio.CancelScope(shield=True):
            if is_storable(response.status):
                await self._store.complete(scope, token, response, keep_for=self._keep_for)
            else:
                await self._store.release(scope, token)
        return response, False

    async def _release_quietly(self, scope: str, token: str) -> None:
        # Shielded so a cancelled request still frees its key; a failing store must not hide the first error.
        with anyio.CancelScope(shield=True):
            try:
                await self._store.release(scope, token)
            except Exception:
                get_logger(__name__).warning("integration_status.idempotency.release_failed", exc_info=True)
