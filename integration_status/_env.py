"""Configuration from environment variables (``INTEGRATION_STATUS_*``), for hosts configured the 12-factor way.

Every :class:`~integration_status.Settings` field has a variable: ``INTEGRATION_STATUS_`` and the field name in
capitals (``INTEGRATION_STATUS_CACHE_TTL``), the breaker's fields with ``BREAKER_`` before the name
(``INTEGRATION_STATUS_BREAKER_OPEN_FOR``). The engines read ``INTEGRATION_STATUS_REDIS_*`` and
``INTEGRATION_STATUS_MEMORY_*``. A variable that is unset or empty keeps the default; a value that does not
parse, or breaks a setting's bounds, is a :class:`ConfigurationError` naming the variable. A variable with the
prefix that nothing reads (a typo) is logged once as a warning, with the nearest known name.

The tables here are also what ``integration-status check --help`` and docs/reference.md show.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from integration_status._config import warn_once
from integration_status.core.breaker import BreakerConfig
from integration_status.exceptions import ConfigurationError

if TYPE_CHECKING:
    from integration_status.backends.memory import MemoryEngine
    from integration_status.backends.redis import RedisEngine
    from integration_status.core.clock import Clock
    from integration_status.service.settings import Settings

__all__ = [
    "ENGINE_VARIABLES",
    "PREFIX",
    "engine_from_env",
    "memory_engine_from_env",
    "redis_engine_from_env",
    "settings_from_env",
    "settings_variables",
]

PREFIX: Final = "INTEGRATION_STATUS_"

#: Engine variables: name -> (RedisEngine.from_url / MemoryEngine argument, type, default, meaning).
ENGINE_VARIABLES: Final[Mapping[str, tuple[str, type, object, str]]] = {
    "INTEGRATION_STATUS_REDIS_URL": ("url", str, None, "Redis URL; when set, the Redis engine is used"),
    "INTEGRATION_STATUS_REDIS_PREFIX": ("prefix", str, "integration-status", "key prefix in Redis"),
    "INTEGRATION_STATUS_REDIS_POOL_SIZE": ("pool_size", int, 50, "connections for ordinary commands"),
    "INTEGRATION_STATUS_REDIS_SOCKET_TIMEOUT": ("socket_timeout", float, 1.0, "seconds per Redis command"),
    "INTEGRATION_STATUS_REDIS_STREAM_MAXLEN": (
        "stream_maxlen",
        int,
        500,
        "events kept per project for replay",
    ),
    "INTEGRATION_STATUS_REDIS_STREAM_TTL": (
        "stream_ttl",
        float,
        3600.0,
        "seconds an idle event stream lives",
    ),
    "INTEGRATION_STATUS_MEMORY_MAX_ENTRIES": ("max_entries", int, 10_000, "cached snapshots kept in memory"),
    "INTEGRATION_STATUS_MEMORY_EVENT_BUFFER": (
        "event_buffer",
        int,
        1000,
        "events kept per project for replay",
    ),
}

#: Variables the command line reads besides these (see ``integration-status check --help``).
_CLI_VARIABLES: Final = frozenset({"INTEGRATION_STATUS_REDIS_URL", "INTEGRATION_STATUS_REDIS_PREFIX"})

_UNITS: Final[Mapping[str, str]] = {
    "cache_jitter": "fraction of the TTL",
    "failure_rate": "fraction of calls",
    "rate_limit": "actions per window",
    "sse_per_viewer": "streams",
    "sse_per_process": "streams",
    "min_calls": "calls",
    "consecutive_failures": "calls",
    "half_open_permits": "calls",
}

T = TypeVar("T")


def _fields(cls: type, prefix: str) -> list[tuple[str, attrs.Attribute[Any]]]:
    return [(f"{prefix}{field.name.upper()}", field) for field in attrs.fields(cls)]


def settings_variables() -> list[tuple[str, str, object, str]]:
    """``(variable, field path, default, unit)`` for every Settings field, breaker fields included."""
    from integration_status.service.settings import Settings

    rows: list[tuple[str, str, object, str]] = []
    for variable, field in _fields(Settings, PREFIX):
        if field.name == "breaker":
            for inner_variable, inner in _fields(BreakerConfig, f"{PREFIX}BREAKER_"):
                unit = _UNITS.get(inner.name, "seconds")
                rows.append((inner_variable, f"breaker.{inner.name}", inner.default, unit))
            continue
        rows.append((variable, field.name, field.default, _UNITS.get(field.name, "seconds")))
    return rows


def _parse(variable: str, text: str, kind: type[T]) -> T:
    try:
        return kind(text)  # type: ignore[call-arg]
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigurationError(f"{variable} must be {what}, not {text!r}") from None


def _values(cls: type, env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, field in _fields(cls, prefix):
        text = env.get(variable, "").strip()
        if text and field.name != "breaker":
            values[field.name] = _parse(variable, text, type(field.default))
    return values


def _build(cls: Callable[..., T], values: dict[str, Any], what: str) -> T:
    try:
        return cls(**values)
    except (ValueError, TypeError, ConfigurationError) as exc:
        # The validators name the field; the variable is the prefix and that name in capitals.
        raise ConfigurationError(f"{what} from the environment: {exc}") from None


def _warn_unknown(env: Mapping[str, str]) -> None:
    known = {row[0] for row in settings_variables()} | set(ENGINE_VARIABLES) | _CLI_VARIABLES
    for name in sorted(env):
        if name.startswith(PREFIX) and name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=1)
            warn_once(
                "integration_status.config.unknown_variable",
                project="*",
                provider="*",
                variable=name[:80],
                did_you_mean=near[0] if near else None,
            )


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """:class:`Settings` with every ``INTEGRATION_STATUS_*`` variable that is set applied over the defaults."""
    from integration_status.service.settings import Settings

    env = os.environ if env is None else env
    _warn_unknown(env)
    breaker = _build(BreakerConfig, _values(BreakerConfig, env, f"{PREFIX}BREAKER_"), "the breaker settings")
    return _build(Settings, {**_values(Settings, env, PREFIX), "breaker": breaker}, "the settings")


def _engine_values(env: Mapping[str, str], group: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, (argument, kind, _default, _meaning) in ENGINE_VARIABLES.items():
        text = env.get(variable, "").strip()
        if variable.startswith(f"{PREFIX}{group}_") and text and argument != "url":
            values[argument] = _parse(variable, text, kind)
    return values


def redis_engine_from_env(env: Mapping[str, str] | None = None, *, clock: Clock | None = None) -> RedisEngine:
    """A RedisEngine from ``INTEGRATION_STATUS_REDIS_URL`` (required) and the other ``REDIS_*`` variables."""
    from integration_status.backends.redis import RedisEngine

    env = os.environ if env is None else env
    url = env.get("INTEGRATION_STATUS_REDIS_URL", "").strip()
    if not url:
        raise ConfigurationError("INTEGRATION_STATUS_REDIS_URL is not set")
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    return RedisEngine.from_url(url, **_engine_values(env, "REDIS"), **extra)


def memory_engine_from_env(
    env: Mapping[str, str] | None = None, *, clock: Clock | None = None
) -> MemoryEngine:
    """A MemoryEngine sized by the ``INTEGRATION_STATUS_MEMORY_*`` variables."""
    from integration_status.backends.memory import MemoryEngine

    env = os.environ if env is None else env
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    return _build(MemoryEngine, {**_engine_values(env, "MEMORY"), **extra}, "the memory engine")


def engine_from_env(
    env: Mapping[str, str] | None = None, *, clock: Clock | None = None
) -> MemoryEngine | RedisEngine:
    """The Redis engine when ``INTEGRATION_STATUS_REDIS_URL`` is set, else the memory engine."""
    env = os.environ if env is None else env
    if env.get("INTEGRATION_STATUS_REDIS_URL", "").strip():
        return redis_engine_from_env(env, clock=clock)
    return memory_engine_from_env(env, clock=clock)
