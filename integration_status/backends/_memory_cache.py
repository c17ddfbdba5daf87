"""The in-process ``CacheStore``: bounded, and expiring on the injected clock."""

from __future__ import annotations

import secrets
from typing import Final

import attrs
import cachetools as _ct

from integration_status.core.clock import Clock
from integration_status.exceptions import ConfigurationError
from integration_status.protocols import CacheEntry

__all__ = ["MemoryCacheStore"]

#: Above this many lock records, expired ones are swept on the next ``try_lock``.
_LOCK_SWEEP_AT: Final = 1024


@attrs.frozen
class _Kept:
    entry: CacheEntry
    keep_for: float


def _time_to_use(key: str, value: _Kept, now: float) -> float:
    return now + value.keep_for


class MemoryCacheStore:
    """Snapshots in process memory, at most ``maxsize`` keys (least recently used go first), each kept for the
    ``keep_for`` given to :meth:`save` on ``clock.time()``. Refresh locks live in the same process, so the
    "cross-worker" lock only guards this process here; use the Redis store to share it between workers.

    ``shared`` is False: nothing outside this process changes the entries, so every change is a :meth:`save`
    or :meth:`delete` here, and each one bumps ``generation``. ``SnapshotCache`` relies on both to reuse the
    views of a project whose entries are all fresh without reading them again (see ``SnapshotCache.local``).
    """

    #: Only this process reads and writes these entries.
    shared: Final = False

    def __init__(self, *, clock: Clock, maxsize: int = 10_000) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ConfigurationError(f"cache maxsize must be an integer >= 1, not {maxsize!r}")
        self._clock = clock
        # TLRU rather than TTL: each save brings its own keep_for.
        self._entries: _ct.TLRUCache[str, _Kept] = _ct.TLRUCache(maxsize, ttu=_time_to_use, timer=clock.time)
        self._locks: dict[str, tuple[str, float]] = {}
        #: Bumped by every save and delete (an eviction for size only happens inside a save).
        self.generation = 0

    async def load(self, key: str) -> CacheEntry | None:
        kept = self._entries.get(key)
        return None if kept is None else kept.entry

    async def save(self, key: str, entry: CacheEntry, *, keep_for: float) -> None:
        self.generation += 1
        if keep_for <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = _Kept(entry, keep_for)

    async def delete(self, key: str) -> None:
        self.generation += 1
        self._entries.pop(key, None)

    async def try_lock(self, key: str, ttl: float) -> str | None:
        now = self._clock.monotonic()
        if len(self._locks) > _LOCK_SWEEP_AT:
            self._locks = {k: v for k, v in self._locks.items() if v[1] > now}
        held = self._locks.get(key)
        if held is not None and held[1] > now:
            return None
        token = secrets.token_hex(16)
        self._locks[key] = (token, now + ttl)
        return token

    async def unlock(self, key: str, token: str) -> None:
        held = self._locks.get(key)
        if held is not None and secrets.compare_digest(held[0], token):
            del self._locks[key]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MemoryCacheStore(entries={len(self._entries)}, maxsize={self._entries.maxsize})"
