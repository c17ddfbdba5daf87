"""The Supabase database probe: a short-lived PostgreSQL connection that times ``select 1`` round trips.

This is the one place where PostgreSQL (psycopg 3) errors become :mod:`integration_status.exceptions` errors.
psycopg is an optional dependency (the ``postgres`` extra) and is imported only when a probe runs, so that
``import integration_status`` stays light.

Error messages are written here, never copied from psycopg: libpq messages name the host, port, user and
database, and psycopg's exceptions carry the connection object, whose repr includes the password.

>>> classify_error(sqlstate="28P01", message="")
'auth'
>>> classify_error(sqlstate=None, message='connection to server at "db" failed: Connection refused')
'unreachable'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import anyio
import attrs

from integration_status._logging import get_logger
from integration_status.core.clock import SYSTEM_CLOCK, Clock
from integration_status.exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    from integration_status.protocols import Secret

__all__ = ["DbHealth", "ErrorKind", "average_ms", "classify_error", "probe_database"]

PROVIDER: Final = "supabase"
INSTALL_HINT: Final = "pip install 'integration-status[postgres]'"

ErrorKind: TypeAlias = Literal["auth", "unreachable", "other"]

# SQLSTATE 28000 invalid_authorization_specification (unknown role, no pg_hba entry), 28P01 invalid_password.
_AUTH_SQLSTATES: Final = frozenset({"28000", "28P01"})
# libpq reports failures during connection setup as text without a SQLSTATE, so the text is all there is.
_AUTH_MARKERS: Final = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
    "does not exist",  # narrowed to roles in classify_error
)
_UNREACHABLE_MARKERS: Final = (
    "connection refused",
    "could not connect",
    "could not translate host name",
    "failed to resolve host",
    "name or service not known",
    "temporary failure in name resolution",
    "timeout expired",
    "timed out",
    "no route to host",
    "network is unreachable",
    "connection reset",
    "server closed the connection unexpectedly",
    "connection is lost",
    "connection is closed",
    "broken pipe",
)

_log = get_logger(__name__)


@attrs.frozen(kw_only=True)
class DbHealth:
    """One probe's result: the average ``select 1`` round trip in milliseconds over ``samples`` queries."""

    avg_ms: float
    samples: int


def average_ms(durations: Sequence[float]) -> float:
    """The mean of round-trip durations given in seconds, in milliseconds.

    >>> average_ms([0.010, 0.020])
    15.0
    """
    if not durations:
        raise ValueError("at least one sample is needed")
    return round(sum(durations) / len(durations) * 1000.0, 3)


def classify_error(*, sqlstate: str | None, message: str) -> ErrorKind:
    """Sort a PostgreSQL failure into auth / unreachable / other by its SQLSTATE and libpq message text."""
    if sqlstate is not None:
        if sqlstate in _AUTH_SQLSTATES:
            return "auth"
        if sqlstate.startswith("08"):  # class 08: connection exception
            return "unreachable"
    text = message.lower()
    for marker in _AUTH_MARKERS:
        if marker in text:
            # "does not exist" is an auth failure only for a role; a missing database is misconfiguration.
            if marker == "does not exist" and "role " not in text:
                continue
            return "auth"
    if any(marker in text for marker in _UNREACHABLE_MARKERS):
        return "unreachable"
    return "other"


def _to_provider_error(kind: ErrorKind) -> ProviderError:
    if kind == "auth":
        return ProviderAuthError(
            "database authentication failed", provider=PROVIDER, hint="Click to reconnect"
        )
    if kind == "unreachable":
        return ProviderTimeout("database unreachable", provider=PROVIDER)
    return ProviderUnavailable("database error", provider=PROVIDER)


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ImportError(f"the database probe needs psycopg: {INSTALL_HINT}") from exc
    return psycopg


# The probe owns its deadline (ASYNC109): callers pass the adapter's remaining budget, not a cancel scope.
async def probe_database(
    dsn: Secret,
    *,
    samples: int = 3,
    timeout: float,  # noqa: ASYNC109
    clock: Clock = SYSTEM_CLOCK,
) -> DbHealth:
    """Connect with ``dsn``, run ``select 1`` ``samples`` times and return the average round trip.

    The whole probe (connect, queries, close) is bounded by ``timeout`` seconds. Raises
    :class:`~integration_status.exceptions.ProviderAuthError` when the database refuses the credentials,
    :class:`~integration_status.exceptions.ProviderTimeout` when it cannot be reached in time, and
    :class:`~integration_status.exceptions.ProviderUnavailable` for anything else. The connection is always
    closed.
    """
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    psycopg = _import_psycopg()
    failure: ProviderError | None = None
    try:
        with anyio.fail_after(timeout):
            # libpq's connect_timeout is whole seconds (at least 2); fail_after is the real bound.
            durations = await _measure(
                psycopg, dsn, samples=samples, connect_timeout=max(2, math.ceil(timeout)), clock=clock
            )
    except TimeoutError:
        failure = _to_provider_error("unreachable")
        _log.info("integration_status.supabase.db_probe.failed", kind="unreachable", reason="deadline")
    except psycopg.Error as exc:
        kind = classify_error(sqlstate=getattr(exc, "sqlstate", None), message=str(exc))
        failure = _to_provider_error(kind)
        # The SQLSTATE is safe to log; the message is not (it names the host and the user).
        _log.info("integration_status.supabase.db_probe.failed", kind=kind, sqlstate=exc.sqlstate)
    except OSError as exc:
        failure = _to_provider_error("unreachable")
        _log.info("integration_status.supabase.db_probe.failed", kind="unreachable", errno=exc.errno)
    if failure is not None:
        # Raised outside the except blocks so the psycopg error (whose connection object holds the password)
        # is neither the cause nor the context of what the caller sees.
        raise failure
    return DbHealth(avg_ms=average_ms(durations), samples=len(durations))


async def _measure(
    psycopg: Any, dsn: Secret, *, samples: int, connect_timeout: int, clock: Clock
) -> list[float]:
    conn = await psycopg.AsyncConnection.connect(
        dsn.reveal(), connect_timeout=connect_timeout, autocommit=True
    )
    try:
        durations: list[float] = []
        for _ in range(samples):
            started = clock.monotonic()
            cursor = await conn.execute("select 1")
            await cursor.fetchone()
            durations.append(clock.monotonic() - started)
        return durations
    finally:
        # A cancelled probe must still release the socket and the server backend.
        with anyio.CancelScope(shield=True):
            await conn.close()
