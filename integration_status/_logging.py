"""The library's loggers: a structlog front over the standard library's ``logging``.

Library code writes ``log.info("integration_status.breaker.opened", provider="github")`` as before, but the line
goes to ``logging.getLogger("integration_status...")``, so the host's levels, handlers and formatters decide what
happens to it. structlog's global configuration is never touched (``structlog.configure()`` belongs to the
application), and nothing is configured on the ``logging`` side either: with no configuration at all, Python
prints warnings and errors to stderr and drops the rest, which is exactly "silent below WARNING" and keeps a
misconfiguration warning visible.

Each record carries the event dict as its message: an ``_Event`` (a ``dict``) that prints as
``event key=value ...`` for a plain ``logging.Formatter`` and is picked up whole by
``structlog.stdlib.ProcessorFormatter`` (the JSON recipe in docs/observability.md), because the record also
carries the ``_logger``/``_name`` attributes that formatter looks for.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Final

import structlog
from structlog.typing import EventDict, WrappedLogger

__all__ = ["ROOT", "capture_logs", "get_logger"]

#: The parent of every logger this library writes to; configure it to tune the library's output.
ROOT = "integration_status"

# Keys that are rendered apart from the ``key=value`` pairs (or not at all).
_NOT_PAIRS = frozenset({"event", "level", "exc_info", "stack_info"})


class _Event(dict[str, Any]):
    """An event dict that reads as ``integration_status.x.y key=value ...`` when a plain formatter prints it."""

    def __str__(self) -> str:
        pairs = " ".join(f"{key}={_value(value)}" for key, value in self.items() if key not in _NOT_PAIRS)
        event = str(self.get("event", ""))
        return f"{event} {pairs}" if pairs else event


def _value(value: object) -> str:
    text = str(value)
    return text if text and all(c.isprintable() and c not in " =\"'" for c in text) else repr(text)


def _to_stdlib(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The last processor: hand the event to the ``logging.Logger`` as one record."""
    exc_info = event_dict.get("exc_info")
    if exc_info is True:
        # Resolved now, while the exception is being handled (a QueueHandler formats it later, elsewhere).
        exc_info = sys.exc_info()
        event_dict["exc_info"] = exc_info
    kwargs: dict[str, Any] = {"extra": {"_logger": logger, "_name": method_name}}
    if exc_info:
        kwargs["exc_info"] = exc_info
    return (_Event(event_dict),), kwargs


_PROCESSORS: list[Any] = [structlog.stdlib.add_log_level, _to_stdlib]
_LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class _BoundLogger(structlog.stdlib.BoundLogger):
    """structlog's stdlib logger, asking the ``logging.Logger`` for its level before anything else: a line below
    the level costs one (cached) ``isEnabledFor`` instead of running the processors and dropping the event."""

    def _proxy_to_logger(
        self, method_name: str, event: str | None = None, *event_args: str, **event_kw: Any
    ) -> Any:
        if not self._logger.isEnabledFor(_LEVELS.get(method_name, logging.CRITICAL)):
            return None
        return super()._proxy_to_logger(method_name, event, *event_args, **event_kw)


@functools.cache
def get_logger(name: str = ROOT) -> structlog.stdlib.BoundLogger:
    """The structlog logger writing to ``logging.getLogger(name)``; ``name`` starts with ``integration_status``."""
    if name != ROOT and not name.startswith(ROOT + "."):
        name = f"{ROOT}.{name}"
    return _BoundLogger(logging.getLogger(name), processors=_PROCESSORS, context={})


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.entries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        entry = dict(record.msg) if isinstance(record.msg, dict) else {"event": record.getMessage()}
        entry.pop("level", None)
        entry["log_level"] = record.levelname.lower()
        self.entries.append(entry)


@contextlib.contextmanager
def capture_logs(name: str = ROOT) -> Iterator[list[dict[str, Any]]]:
    """Collect the library's log events (every level) as dicts with ``event``, ``log_level`` and the fields.

    The ``logging`` counterpart of ``structlog.testing.capture_logs`` for this library's loggers: the level of
    ``name`` is lowered to DEBUG for the duration and restored afterwards.
    """
    logger = logging.getLogger(name)
    handler = _Capture()
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.entries
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
