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
from typing import Any, Final, TypeVar

import attrs

from integration_status._config import warn_once
from integration_status.exceptions import ConfigurationError

__all__ = [
    "ENGINE_VARIABLES",
    "PREFIX",
    "attrs_values",
    "build",
    "engine_values",
    "environ",
    "parse",
    "redis_url",
    "settings_rows",
    "warn_unknown",
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
    "INTEGRATION_STATUS_REDIS_CLUSTER": (
        "cluster",
        bool,
        False,
        "the URL is one node of a Redis Cluster (true/false)",
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
    "sse_write_interval": "seconds",
    "min_calls": "calls",
    "consecutive_failures": "calls",
    "half_open_permits": "calls",
    "etag_secret": "text",
}

T = TypeVar("T")


def environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    """``env``, or the process environment when None."""
    return os.environ if env is None else env


def _fields(cls: type, prefix: str) -> list[tuple[str, attrs.Attribute[Any]]]:
    return [(f"{prefix}{field.name.upper()}", field) for field in attrs.fields(cls)]


def settings_rows(cls: type, nested: Mapping[str, type]) -> list[tuple[str, str, object, str]]:
    """``(variable, field path, default, unit)`` for every field of the attrs class ``cls``; a field named in
    ``nested`` (e.g. ``breaker``) contributes the fields of its own class under ``<PREFIX><NAME>_``."""
    rows: list[tuple[str, str, object, str]] = []
    for variable, field in _fields(cls, PREFIX):
        inner_cls = nested.get(field.name)
        if inner_cls is not None:
            for inner_variable, inner in _fields(inner_cls, f"{PREFIX}{field.name.upper()}_"):
                unit = _UNITS.get(inner.name, "seconds")
                rows.append((inner_variable, f"{field.name}.{inner.name}", inner.default, unit))
            continue
        rows.append((variable, field.name, field.default, _UNITS.get(field.name, "seconds")))
    return rows


_BOOLEANS: Final[Mapping[str, bool]] = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def parse(variable: str, text: str, kind: type[T]) -> T:
    """``text`` as a ``kind`` (int, float, str, bool), or a ConfigurationError naming the variable.

    >>> parse("X", "True", bool), parse("X", "off", bool)
    (True, False)
    """
    if kind is bool:
        try:
            return _BOOLEANS[text.strip().lower()]  # type: ignore[return-value]
        except KeyError:
            raise ConfigurationError(f"{variable} must be true or false, not {text!r}") from None
    try:
        return kind(text)  # type: ignore[call-arg]
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigurationError(f"{variable} must be {what}, not {text!r}") from None


def attrs_values(
    cls: type, env: Mapping[str, str], prefix: str, *, skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The fields of ``cls`` whose ``<prefix><NAME>`` variable is set, parsed as their default's type."""
    values: dict[str, Any] = {}
    for variable, field in _fields(cls, prefix):
        text = env.get(variable, "").strip()
        if text and field.name not in skip:
            kind = type(field.default) if field.default is not None else str
            values[field.name] = parse(variable, text, kind)
    return values


def build(cls: Callable[..., T], values: dict[str, Any], what: str) -> T:
    """``cls(**values)``, its validation errors as a ConfigurationError saying they came from the environment."""
    try:
        return cls(**values)
    except (ValueError, TypeError, ConfigurationError) as exc:
        # The validators name the field; the variable is the prefix and that name in capitals.
        raise ConfigurationError(f"{what} from the environment: {exc}") from None


def warn_unknown(env: Mapping[str, str], known: frozenset[str]) -> None:
    """One warning per ``INTEGRATION_STATUS_*`` variable that nothing reads (a typo?), with the nearest name."""
    known = known | frozenset(ENGINE_VARIABLES) | _CLI_VARIABLES
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


def engine_values(env: Mapping[str, str], group: str) -> dict[str, Any]:
    """The engine arguments of one group (``REDIS`` or ``MEMORY``) that are set, URL aside."""
    values: dict[str, Any] = {}
    for variable, (argument, kind, _default, _meaning) in ENGINE_VARIABLES.items():
        text = env.get(variable, "").strip()
        if variable.startswith(f"{PREFIX}{group}_") and text and argument != "url":
            values[argument] = parse(variable, text, kind)
    return values


def redis_url(env: Mapping[str, str]) -> str | None:
    """``INTEGRATION_STATUS_REDIS_URL``, or None when it is not set."""
    return env.get(f"{PREFIX}REDIS_URL", "").strip() or None
