"""Engines: where a service keeps what its workers share (cache, idempotency records, rate limits, events,
webhook deliveries). Both implement :class:`integration_status.protocols.Engine`.

- :class:`MemoryEngine`: one process (the default).
- :class:`RedisEngine` (extra ``[redis]``): several workers sharing one Redis.
- :class:`PostgresIdempotencyStore` (extra ``[postgres]``): durable idempotency records in PostgreSQL, beside
  Redis for everything else (``RedisEngine.from_url(..., idempotency=store)``).

Names are imported on first use: naming :class:`RedisEngine` needs the ``[redis]`` extra, importing this
package does not.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from integration_status._lazy import lazy_door as _lazy_door

if _TYPE_CHECKING:
    from integration_status.backends.choose import engine_from_env
    from integration_status.backends.memory import MemoryDeliveryLog, MemoryEngine
    from integration_status.backends.postgres import PostgresIdempotencyStore
    from integration_status.backends.redis import RedisEngine

__all__ = ["MemoryDeliveryLog", "MemoryEngine", "PostgresIdempotencyStore", "RedisEngine", "engine_from_env"]

_WHERE = {
    "MemoryDeliveryLog": "memory",
    "MemoryEngine": "memory",
    "PostgresIdempotencyStore": "postgres",
    "RedisEngine": "redis",
    "engine_from_env": "choose",
}


__getattr__, __dir__ = _lazy_door(__name__, globals(), _WHERE)
