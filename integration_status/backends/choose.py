"""Which engine the environment asks for: Redis when ``INTEGRATION_STATUS_REDIS_URL`` is set, else memory."""

from __future__ import annotations

from collections.abc import Mapping

from integration_status._env import environ, redis_url
from integration_status.backends.memory import MemoryEngine
from integration_status.protocols import Clock, Engine

__all__ = ["engine_from_env"]


def engine_from_env(env: Mapping[str, str] | None = None, *, clock: Clock | None = None) -> Engine:
    """``RedisEngine.from_env(env)`` when ``INTEGRATION_STATUS_REDIS_URL`` is set (the ``[redis]`` extra), else
    ``MemoryEngine.from_env(env)``."""
    env = environ(env)
    if redis_url(env) is not None:
        from integration_status.backends.redis import RedisEngine  # the [redis] extra, only when asked for

        return RedisEngine.from_env(env, clock=clock)
    return MemoryEngine.from_env(env, clock=clock)
