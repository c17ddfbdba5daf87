"""The embedded engine: everything in one process's memory (the default).

>>> engine = MemoryEngine()
>>> sorted(n for n in dir(engine) if not n.startswith("_"))
['cache_store', 'deliveries', 'events', 'idempotency', 'rate_limiter']
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from integration_status._env import build, engine_values, environ
from integration_status.backends._memory_bus import MemoryEventBus
from integration_status.backends._memory_cache import MemoryCacheStore
from integration_status.backends._memory_state import (
    MemoryDeliveryLog,
    MemoryIdempotencyStore,
    MemoryRateLimiter,
)
from integration_status.core.clock import SYSTEM_CLOCK, Clock

__all__ = [
    "MemoryCacheStore",
    "MemoryDeliveryLog",
    "MemoryEngine",
    "MemoryEventBus",
    "MemoryIdempotencyStore",
    "MemoryRateLimiter",
]


class MemoryEngine:
    """Cache store, idempotency store, rate limiter, event bus and webhook delivery log, in process memory."""

    def __init__(
        self, *, clock: Clock = SYSTEM_CLOCK, max_entries: int = 10_000, event_buffer: int = 1000
    ) -> None:
        self.cache_store = MemoryCacheStore(clock=clock, maxsize=max_entries)
        self.idempotency = MemoryIdempotencyStore(clock=clock)
        self.rate_limiter = MemoryRateLimiter(clock=clock)
        self.events = MemoryEventBus(clock=clock, buffer_size=event_buffer)
        self.deliveries = MemoryDeliveryLog(clock=clock)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, clock: Clock | None = None) -> MemoryEngine:
        """Sized by ``INTEGRATION_STATUS_MEMORY_MAX_ENTRIES`` / ``_EVENT_BUFFER`` in ``env`` (``os.environ``)."""
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        return build(cls, {**engine_values(environ(env), "MEMORY"), **extra}, "the memory engine")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None
