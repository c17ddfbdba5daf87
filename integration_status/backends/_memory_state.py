"""In-process idempotency records and rate-limit logs: the embedded default engines for one worker.

They follow the contracts in :mod:`integration_status.core.idempotency` and
:mod:`integration_status.core.ratelimit` exactly. Neither method awaits between reading and writing a record,
so one event loop makes them atomic; the rate limiter still takes a per-key lock so the contract holds if a
future change adds an await. Expired entries are swept at most once every ``sweep_every`` seconds, so memory
stays bounded by the keys that are live within roughly one retention period.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import anyio
import attrs
from cachetools import TLRUCache

from integration_status._logging import get_logger
from integration_status.core.clock import SYSTEM_CLOCK, Clock
from integration_status.core.ratelimit import decide
from integration_status.exceptions import BackendUnavailable
from integration_status.protocols import BeginResult, RateDecision, StoredResponse

__all__ = ["MemoryDeliveryLog", "MemoryIdempotencyStore", "MemoryRateLimiter"]


@attrs.frozen(kw_only=True)
class _Record:
    fingerprint: str
    state: Literal["in_flight", "done"]
    #: Wall-clock time after which the record no longer exists (retention end).
    expires_at: float
    #: In flight: the end of the attempt's lease. Done: the end of the follow-up's lease (None: no follow-up).
    lease_until: float | None = None
    token: str | None = None
    response: StoredResponse | None = None
    #: What a later attempt needs to reconcile; None while the action provably has not started.
    checkpoint: Mapping[str, Any] | None = None


class MemoryIdempotencyStore:
    """Idempotency records in a dict. Wall-clock times (``clock.time()``), like the shared engines."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, sweep_every: float = 60.0) -> None:
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._sweep_every = sweep_every
        self._next_sweep = clock.time() + sweep_every

    @staticmethod
    def _expired(record: _Record, now: float) -> bool:
        if now >= record.expires_at:
            return True
        # An attempt that never checkpointed and lost its lease provably did not start: it is forgotten.
        lease = record.lease_until
        return (
            record.state == "in_flight" and record.checkpoint is None and lease is not None and now >= lease
        )

    def _live(self, key: str, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and self._expired(record, now):
            del self._records[key]
            return None
        return record

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_every
        for key in [k for k, r in self._records.items() if self._expired(r, now)]:
            del self._records[key]

    async def begin(self, key: str, fingerprint: str, *, lease: float, keep_for: float) -> BeginResult:
        """See :mod:`integration_status.core.idempotency` for the states."""
        if lease <= 0 or keep_for <= 0:
            raise ValueError("lease and keep_for must be positive")
        now = self._clock.time()
        self._sweep(now)
        record = self._live(key, now)
        if record is None:
            token = secrets.token_hex(16)
            self._records[key] = _Record(
                fingerprint=fingerprint,
                state="in_flight",
                expires_at=now + keep_for,
                lease_until=now + lease,
                token=token,
            )
            return BeginResult(state="started", token=token)
        if record.fingerprint != fingerprint:
            return BeginResult(state="mismatch")
        abandoned = record.lease_until is not None and now >= record.lease_until
        if record.state == "in_flight" and not abandoned:
            return BeginResult(state="in_flight")
        if not abandoned:
            return BeginResult(state="replay", response=record.response)
        token = secrets.token_hex(16)
        self._records[key] = attrs.evolve(record, token=token, lease_until=now + lease)
        if record.state == "in_flight":
            return BeginResult(state="resume", token=token, checkpoint=record.checkpoint)
        return BeginResult(
            state="replay", response=record.response, token=token, checkpoint=record.checkpoint
        )

    def _owned(self, key: str, token: str, state: str = "in_flight") -> _Record | None:
        record = self._live(key, self._clock.time())
        owner = record.token if record is not None and record.state == state else None
        if record is None or owner is None or not secrets.compare_digest(owner, token):
            get_logger(__name__).info("integration_status.idempotency.lease_lost")
            return None
        return record

    async def checkpoint(self, key: str, token: str, data: Mapping[str, Any], *, lease: float) -> bool:
        """Record ``data`` for a later attempt to reconcile from, and renew the lease."""
        record = self._owned(key, token)
        if record is None:
            return False
        self._records[key] = attrs.evolve(
            record, checkpoint=dict(data), lease_until=self._clock.time() + lease
        )
        return True

    async def complete(
        self, key: str, token: str, response: StoredResponse, *, keep_for: float, follow: float | None = None
    ) -> None:
        """Store ``response`` for replay for ``keep_for`` seconds; a no-op when ``token`` lost the lease."""
        record = self._owned(key, token)
        if record is not None:
            now = self._clock.time()
            self._records[key] = attrs.evolve(
                record,
                state="done",
                token=None if follow is None else token,
                lease_until=None if follow is None else now + follow,
                response=response,
                expires_at=now + keep_for,
            )

    async def renew(self, key: str, token: str, *, lease: float) -> bool:
        """Extend the owner's lease (of the attempt or of its follow-up); False when it was lost."""
        record = self._live(key, self._clock.time())
        if record is None or record.token is None or not secrets.compare_digest(record.token, token):
            return False
        self._records[key] = attrs.evolve(record, lease_until=self._clock.time() + lease)
        return True

    async def settle(self, key: str, token: str) -> None:
        """The follow-up ended: keep only the response."""
        record = self._owned(key, token, "done")
        if record is not None:
            self._records[key] = attrs.evolve(record, token=None, lease_until=None)

    async def release(self, key: str, token: str) -> None:
        """End the attempt: forget it when it never checkpointed, else end its lease so the next begin resumes
        it; a no-op when ``token`` lost the lease."""
        record = self._owned(key, token)
        if record is None:
            return
        if record.checkpoint is None:
            del self._records[key]
        else:
            self._records[key] = attrs.evolve(record, lease_until=self._clock.time())

    async def claim_abandoned(self, *, lease: float, limit: int) -> list[tuple[str, BeginResult]]:
        """Take over up to ``limit`` attempts or follow-ups whose worker stopped (see the contract)."""
        now = self._clock.time()
        claimed: list[tuple[str, BeginResult]] = []
        for key, record in list(self._records.items()):
            if len(claimed) >= limit:
                break
            if self._expired(record, now) or record.lease_until is None or now < record.lease_until:
                continue
            if record.state == "in_flight" and record.checkpoint is None:  # pragma: no cover - expired above
                continue
            claimed.append((key, await self.begin(key, record.fingerprint, lease=lease, keep_for=1.0)))
        return claimed

    def __len__(self) -> int:
        """Records held right now, expired ones included until the next sweep (for tests and metrics)."""
        return len(self._records)

    def __repr__(self) -> str:
        return f"MemoryIdempotencyStore(records={len(self._records)})"


class MemoryRateLimiter:
    """Sliding-window logs in a dict, decided by :func:`integration_status.core.ratelimit.decide`.

    Uses ``clock.monotonic()``: a window is a local duration, immune to wall-clock steps.
    """

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, sweep_every: float = 60.0) -> None:
        self._clock = clock
        #: key -> (hit log, window it was recorded with)
        self._logs: dict[str, tuple[tuple[float, ...], float]] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._sweep_every = sweep_every
        self._next_sweep = clock.monotonic() + sweep_every

    def _lock(self, key: str) -> anyio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = anyio.Lock()
        return lock

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_every
        for key, (hits, window) in list(self._logs.items()):
            lock = self._locks.get(key)
            busy = lock is not None and (lock.locked() or lock.statistics().tasks_waiting > 0)
            if not busy and (not hits or hits[-1] + window <= now):
                del self._logs[key]
                self._locks.pop(key, None)

    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        """Count one action for ``key`` if a slot is free (see :mod:`integration_status.core.ratelimit`)."""
        async with self._lock(key):
            now = self._clock.monotonic()
            hits, _ = self._logs.get(key, ((), window))
            decision, kept = decide(hits, now, limit=limit, window=window)
            self._logs[key] = (kept, window)
        self._sweep(now)
        return decision

    def __len__(self) -> int:
        """Keys with a log right now (for tests and metrics)."""
        return len(self._logs)

    def __repr__(self) -> str:
        return f"MemoryRateLimiter(keys={len(self._logs)})"


class MemoryDeliveryLog:
    """A bounded in-process :class:`DeliveryLog` on the injected clock.

    At most ``maxsize`` live entries. A live entry is never evicted early (that would let its delivery in
    again): when the log is full of live entries, :meth:`first_seen` raises :class:`BackendUnavailable`, the
    webhook answers 503 and the provider retries once entries have expired. Keys are fixed-length digests
    (see :func:`~integration_status.core.webhooks.delivery_keys`), so an entry costs about 200 bytes and the
    default bound about 20 MB at most; only authentic deliveries with new content write entries.
    """

    def __init__(self, *, clock: Clock, maxsize: int = 100_000) -> None:
        # Each entry stores its own expiry, so one log serves callers with different TTLs.
        self._seen: TLRUCache[str, float] = TLRUCache(
            maxsize=maxsize, ttu=lambda _key, expires, _now: expires, timer=clock.time
        )
        self._clock = clock

    async def first_seen(self, delivery_id: str, ttl: float) -> bool:
        if delivery_id in self._seen:
            return False
        if len(self._seen) >= self._seen.maxsize:
            self._seen.expire()
            if len(self._seen) >= self._seen.maxsize:
                get_logger("integration_status.webhook").warning(
                    "integration_status.webhook.delivery_log_full"
                )
                raise BackendUnavailable("the webhook delivery log is full")
        self._seen[delivery_id] = self._clock.time() + ttl
        return True

    async def first_seen_all(self, delivery_ids: Sequence[str], ttl: float) -> int:
        """Record ``delivery_ids`` in order while each is new; how many were (see ``DeliveryLog``)."""
        for fresh, delivery_id in enumerate(delivery_ids):
            if not await self.first_seen(delivery_id, ttl):
                return fresh
        return len(delivery_ids)

    async def forget(self, delivery_id: str) -> None:
        self._seen.pop(delivery_id, None)

    def __len__(self) -> int:
        return len(self._seen)

    def __repr__(self) -> str:
        return f"MemoryDeliveryLog(size={len(self._seen)}, maxsize={int(self._seen.maxsize)})"
