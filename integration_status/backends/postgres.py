"""A durable idempotency store on PostgreSQL (psycopg 3, async), for hosts whose records must survive a Redis
restart. Needs the ``postgres`` extra. It implements the contract of :mod:`integration_status.core.idempotency`
exactly, in one table; use it alone or beside the Redis engine, which keeps everything else::

    store = PostgresIdempotencyStore.from_dsn("postgresql://app@db.internal/app")
    engine = RedisEngine.from_url("redis://cache.internal:6379/0", idempotency=store)

The engine opens and closes the store with itself. Alone: ``async with store:`` (it opens the pool, checks
the connection and, unless ``create_table=False``, applies :data:`MIGRATION_SQL`). Every decision is one
transaction that locks the key's row (``SELECT ... FOR UPDATE``), so it is atomic across all workers and hosts.
Times are wall-clock epoch seconds from the injected clock, like the other engines: workers' clocks must
agree (NTP). Schema and operations: ``docs/operations.md``.
"""

from __future__ import annotations

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row
    from psycopg.types.json import Jsonb
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "the PostgreSQL idempotency store needs psycopg and psycopg-pool: "
        "pip install 'integration-status[postgres]'"
    ) from exc

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

import anyio

from integration_status._logging import get_logger
from integration_status.core.clock import SYSTEM_CLOCK, Clock
from integration_status.exceptions import BackendUnavailable, ConfigurationError
from integration_status.protocols import BeginResult, StoredResponse

__all__ = ["DEFAULT_TABLE", "MIGRATION_SQL", "PostgresIdempotencyStore", "migration_sql"]

DEFAULT_TABLE: Final = "integration_status_idempotency"

#: The schema (``{table}`` is the qualified table name). Idempotent: safe to run on every start.
MIGRATION_SQL: Final = """\
CREATE TABLE IF NOT EXISTS {table} (
    key          text PRIMARY KEY,               -- sha256 hex of (user, project, Idempotency-Key)
    fingerprint  text NOT NULL,                  -- sha256 hex of (method, path, canonical body)
    state        text NOT NULL CHECK (state IN ('in_flight', 'done')),
    token        text,                           -- the owner of the lease (attempt, or follow-up)
    lease_until  double precision,               -- epoch s: end of that lease; NULL when none
    expires_at   double precision NOT NULL,      -- epoch s: the row counts as absent from then on
    checkpoint   jsonb,                          -- what a retry needs to reconcile; NULL: not started
    status       integer,                        -- the stored response, once done
    body         jsonb,
    headers      jsonb
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);
CREATE INDEX IF NOT EXISTS {lease_index} ON {table} (lease_until) WHERE lease_until IS NOT NULL;
"""

_COLUMNS: Final = "fingerprint, state, token, lease_until, expires_at, checkpoint, status, body, headers"

_log = get_logger(__name__)


def migration_sql(*, schema: str = "public", table: str = DEFAULT_TABLE) -> str:
    """The migration as plain SQL for a migration tool (identifiers quoted).

    >>> print(migration_sql(schema="app").splitlines()[0])
    CREATE TABLE IF NOT EXISTS "app"."integration_status_idempotency" (
    """
    return MIGRATION_SQL.format(
        table=f'"{schema}"."{table}"', index=f'"{table}_expires_at"', lease_index=f'"{table}_lease_until"'
    )


def _endpoint(dsn: str) -> str:
    """``host:port/db`` of a DSN for messages: never the user's password."""
    try:
        parts = urlsplit(dsn)
        host = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    except ValueError:
        raise ConfigurationError("the PostgreSQL DSN is malformed (expected postgresql://...)") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError("the PostgreSQL DSN must start with postgresql://")
    return f"{host}{parts.path or ''}"


def _live(row: Mapping[str, Any] | None, now: float) -> bool:
    """Whether a row still counts: not past its retention, and not an attempt that lost its lease before it
    checkpointed (that one provably never started)."""
    if row is None or now >= row["expires_at"]:
        return False
    return not (row["state"] == "in_flight" and row["checkpoint"] is None and now >= row["lease_until"])


def _response(row: Mapping[str, Any]) -> StoredResponse:
    return StoredResponse(status=int(row["status"]), body=row["body"], headers=row["headers"] or {})


def _owns(row: Mapping[str, Any] | None, token: str, now: float, state: str | None = "in_flight") -> bool:
    if not _live(row, now) or row is None or row["token"] is None:
        return False
    return (state is None or row["state"] == state) and secrets.compare_digest(row["token"], token)


class PostgresIdempotencyStore:
    """Idempotency records in one PostgreSQL table, shared by every worker that uses it."""

    #: Other processes use these records too (so abandoned actions are swept, see ``claim_abandoned``).
    shared = True

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        schema: str,
        table: str,
        clock: Clock,
        endpoint: str,
        create_table: bool,
        sweep_every: float,
    ) -> None:
        """Internal: use :meth:`from_dsn`."""
        self._pool = pool
        self._schema = schema
        self._table_name = table
        self._table = sql.Identifier(schema, table)
        self._clock = clock
        self._endpoint = endpoint
        self._create = create_table
        self._sweep_every = sweep_every
        self._next_sweep = clock.time() + sweep_every
        self._open = False
        # Set when the store started while the database gave no connection: the migration runs first thing
        # once it does (one task at a time).
        self._migration_pending = False
        self._migrating = anyio.Lock()

    @classmethod
    def from_dsn(
        cls,
        dsn: str,
        *,
        schema: str = "public",
        table: str = DEFAULT_TABLE,
        clock: Clock = SYSTEM_CLOCK,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 5.0,
        create_table: bool = True,
        sweep_every: float = 300.0,
    ) -> PostgresIdempotencyStore:
        """A store for the database at ``dsn`` (``postgresql://user[:password]@host:port/db``).

        No connection is made here. ``max_size`` bounds the pool, ``timeout`` how long a call waits for a
        connection (then it fails closed: :class:`BackendUnavailable`). Expired rows are deleted at most once
        every ``sweep_every`` seconds by whichever worker begins an action then.
        """
        endpoint = _endpoint(dsn)
        for name in (schema, table):
            if not name or len(name) > 63 or not name.replace("_", "a").isalnum():
                raise ConfigurationError("schema and table names must be 1-63 letters, digits or underscores")
        if min_size < 0 or max_size < max(1, min_size) or timeout <= 0 or sweep_every <= 0:
            raise ConfigurationError(
                "need 0 <= min_size <= max_size, max_size >= 1, timeout and sweep_every > 0"
            )
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": max(1, round(timeout))},
        )
        return cls(
            pool,
            schema=schema,
            table=table,
            clock=clock,
            endpoint=endpoint,
            create_table=create_table,
            sweep_every=sweep_every,
        )

    # --- lifecycle ---

    async def connect(self) -> None:
        """Open the pool, check the database answers, and apply the migration unless told not to; raise
        :class:`ConfigurationError` naming host:port when the database does not give a connection in
        ``timeout``. A host that would rather not start at all without PostgreSQL calls this itself."""
        await self._start(strict=True)

    async def _start(self, *, strict: bool) -> None:
        if self._open:
            return
        await self._pool.open(wait=False)  # not wait=True: a pool that times out waiting closes for good
        self._open = True
        try:
            if self._create:
                await self._migrate()
            else:
                async with self._pooled("checking the database") as conn:
                    await conn.execute("SELECT 1")
        except BackendUnavailable as exc:
            cause = type(exc.__cause__).__name__
            message = f"cannot use PostgreSQL at {self._endpoint} for idempotency ({cause})"
            if strict:
                await self.aclose()
                raise ConfigurationError(message) from None
            # The pool goes on connecting in the background; the migration waits for the first connection.
            _log.warning(
                "integration_status.postgres.unavailable_at_start", endpoint=self._endpoint, error=message
            )
            self._migration_pending = self._create
            return
        _log.debug("integration_status.postgres.connected", endpoint=self._endpoint)

    async def _migrate(self) -> None:
        statement = sql.SQL(MIGRATION_SQL).format(
            table=self._table,
            index=sql.Identifier(f"{self._table_name}_expires_at"),
            lease_index=sql.Identifier(f"{self._table_name}_lease_until"),
        )
        async with self._pooled("creating the idempotency table") as conn, conn.transaction():
            # Workers start together, and CREATE ... IF NOT EXISTS is not safe against a concurrent twin:
            # one migration at a time per table.
            lock = f"integration_status:{self._schema}.{self._table_name}"
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema)))
            await conn.execute(statement)
        self._migration_pending = False

    async def aclose(self) -> None:
        """Close every connection. Safe to call twice."""
        self._open = False
        await self._pool.close()

    async def __aenter__(self) -> Self:
        """Open the store as a service does (``RedisEngine`` enters the store it was given): like
        :meth:`connect`, except that a database that gives no connection in ``timeout`` (down, restarting,
        unreachable for now; or refusing the login, which PostgreSQL's client library does not tell apart
        from the outside) is logged (``integration_status.postgres.unavailable_at_start``) instead of raised.
        The store then starts anyway: calls fail closed with :class:`BackendUnavailable` until the database
        answers, and the migration runs before the first call that gets a connection. A worker started during
        an outage so serves what it can instead of failing its server's start."""
        await self._start(strict=False)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @asynccontextmanager
    async def _conn(self, doing: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection, once the migration a start during an outage left pending has run."""
        if self._migration_pending:
            async with self._migrating:
                if self._migration_pending:
                    await self._migrate()
        async with self._pooled(doing) as conn:
            yield conn

    @asynccontextmanager
    async def _pooled(self, doing: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; any driver or pool failure becomes :class:`BackendUnavailable` naming the
        endpoint and the operation, never the DSN or a libpq message (they name the user and host)."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, OSError) as exc:
            raise BackendUnavailable(
                f"PostgreSQL at {self._endpoint} failed while {doing} ({type(exc).__name__})"
            ) from exc
        except Exception as exc:  # psycopg_pool.PoolTimeout is not a psycopg.Error in every version
            if type(exc).__module__.startswith("psycopg_pool"):
                raise BackendUnavailable(
                    f"PostgreSQL at {self._endpoint} had no free connection while {doing}"
                ) from exc
            raise

    @asynccontextmanager
    async def _locked(self, key: str, doing: str) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], Any]]:
        """A transaction holding the key's row lock, and the row (None when there is none)."""
        async with self._conn(doing) as conn, conn.transaction():
            cur = await conn.execute(
                sql.SQL("SELECT " + _COLUMNS + " FROM {} WHERE key = %s FOR UPDATE").format(self._table),
                (key,),
            )
            yield conn, await cur.fetchone()

    # --- the contract ---

    async def begin(self, key: str, fingerprint: str, *, lease: float, keep_for: float) -> BeginResult:
        """See :mod:`integration_status.core.idempotency` for the states."""
        if lease <= 0 or keep_for <= 0:
            raise ValueError("lease and keep_for must be positive")
        now = self._clock.time()
        token = secrets.token_hex(16)
        await self._sweep(now)
        fresh = (key, fingerprint, token, now + lease, now + keep_for)
        async with self._conn("checking an idempotency key") as conn, conn.transaction():
            # The insert takes the key when nobody has it; a concurrent begin waits for this transaction.
            cur = await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (key, fingerprint, state, token, lease_until, expires_at) "
                    "VALUES (%s, %s, 'in_flight', %s, %s, %s) ON CONFLICT (key) DO NOTHING"
                ).format(self._table),
                fresh,
            )
            if cur.rowcount == 1:
                return BeginResult(state="started", token=token)
            cur = await conn.execute(
                sql.SQL("SELECT " + _COLUMNS + " FROM {} WHERE key = %s FOR UPDATE").format(self._table),
                (key,),
            )
            row = await cur.fetchone()
            if not _live(row, now):
                await conn.execute(
                    sql.SQL(
                        "UPDATE {} SET fingerprint = %s, state = 'in_flight', token = %s, lease_until = %s, "
                        "expires_at = %s, checkpoint = NULL, status = NULL, body = NULL, headers = NULL "
                        "WHERE key = %s"
                    ).format(self._table),
                    (*fresh[1:], key),
                )
                return BeginResult(state="started", token=token)
            assert row is not None
            if row["fingerprint"] != fingerprint:
                return BeginResult(state="mismatch")
            abandoned = row["lease_until"] is not None and now >= row["lease_until"]
            if not abandoned:
                if row["state"] == "in_flight":
                    return BeginResult(state="in_flight")
                return BeginResult(state="replay", response=_response(row))
            await conn.execute(
                sql.SQL("UPDATE {} SET token = %s, lease_until = %s WHERE key = %s").format(self._table),
                (token, now + lease, key),
            )
        if row["state"] == "in_flight":
            return BeginResult(state="resume", token=token, checkpoint=row["checkpoint"])
        return BeginResult(state="replay", response=_response(row), token=token, checkpoint=row["checkpoint"])

    async def checkpoint(self, key: str, token: str, data: Mapping[str, Any], *, lease: float) -> bool:
        """Record ``data`` for a later attempt to reconcile from, and renew the lease."""
        now = self._clock.time()
        async with self._locked(key, "recording an action checkpoint") as (conn, row):
            if not _owns(row, token, now):
                return False
            await conn.execute(
                sql.SQL("UPDATE {} SET checkpoint = %s, lease_until = %s WHERE key = %s").format(self._table),
                (Jsonb(dict(data)), now + lease, key),
            )
        return True

    async def complete(
        self, key: str, token: str, response: StoredResponse, *, keep_for: float, follow: float | None = None
    ) -> None:
        """Store ``response`` for replay for ``keep_for`` seconds; a no-op when ``token`` lost the lease."""
        now = self._clock.time()
        async with self._locked(key, "storing an idempotent response") as (conn, row):
            if not _owns(row, token, now):
                _log.warning("integration_status.postgres.idempotency.lease_lost", status=response.status)
                return
            await conn.execute(
                sql.SQL(
                    "UPDATE {} SET state = 'done', token = %s, lease_until = %s, expires_at = %s, "
                    "status = %s, body = %s, headers = %s WHERE key = %s"
                ).format(self._table),
                (
                    None if follow is None else token,
                    None if follow is None else now + follow,
                    now + keep_for,
                    response.status,
                    Jsonb(dict(response.body)),
                    Jsonb(dict(response.headers)),
                    key,
                ),
            )

    async def renew(self, key: str, token: str, *, lease: float) -> bool:
        """Extend the owner's lease (of the attempt or of its follow-up); False when it was lost."""
        now = self._clock.time()
        async with self._locked(key, "renewing an idempotency lease") as (conn, row):
            if not _owns(row, token, now, state=None):
                return False
            await conn.execute(
                sql.SQL("UPDATE {} SET lease_until = %s WHERE key = %s").format(self._table),
                (now + lease, key),
            )
        return True

    async def settle(self, key: str, token: str) -> None:
        """The follow-up ended: keep only the response."""
        now = self._clock.time()
        async with self._locked(key, "settling an action's follow-up") as (conn, row):
            if _owns(row, token, now, state="done"):
                await conn.execute(
                    sql.SQL("UPDATE {} SET token = NULL, lease_until = NULL WHERE key = %s").format(
                        self._table
                    ),
                    (key,),
                )

    async def release(self, key: str, token: str) -> None:
        """End the attempt: forget it when it never checkpointed, else end its lease so the next begin resumes
        it; a no-op when ``token`` lost the lease."""
        now = self._clock.time()
        async with self._locked(key, "releasing an idempotency key") as (conn, row):
            if not _owns(row, token, now):
                return
            if row["checkpoint"] is None:
                await conn.execute(sql.SQL("DELETE FROM {} WHERE key = %s").format(self._table), (key,))
            else:
                await conn.execute(
                    sql.SQL("UPDATE {} SET lease_until = %s WHERE key = %s").format(self._table), (now, key)
                )

    async def claim_abandoned(self, *, lease: float, limit: int) -> list[tuple[str, BeginResult]]:
        """Take over up to ``limit`` attempts or follow-ups whose worker stopped (see the contract); rows
        another worker is deciding on right now are skipped, not waited for."""
        now = self._clock.time()
        tokens = [secrets.token_hex(16) for _ in range(limit)]
        async with self._conn("looking for abandoned actions") as conn, conn.transaction():
            cur = await conn.execute(
                sql.SQL(
                    "SELECT key, " + _COLUMNS + " FROM {} WHERE lease_until <= %s AND expires_at > %s "
                    "AND ((state = 'in_flight' AND checkpoint IS NOT NULL) "
                    "OR (state = 'done' AND token IS NOT NULL)) "
                    "ORDER BY lease_until LIMIT %s FOR UPDATE SKIP LOCKED"
                ).format(self._table),
                (now, now, limit),
            )
            rows = await cur.fetchall()
            claimed: list[tuple[str, BeginResult]] = []
            for row, token in zip(rows, tokens, strict=False):
                await conn.execute(
                    sql.SQL("UPDATE {} SET token = %s, lease_until = %s WHERE key = %s").format(self._table),
                    (token, now + lease, row["key"]),
                )
                if row["state"] == "in_flight":
                    begun = BeginResult(state="resume", token=token, checkpoint=row["checkpoint"])
                else:
                    begun = BeginResult(
                        state="replay", response=_response(row), token=token, checkpoint=row["checkpoint"]
                    )
                claimed.append((row["key"], begun))
        return claimed

    async def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_every
        async with self._conn("deleting expired idempotency records") as conn:
            await conn.execute(sql.SQL("DELETE FROM {} WHERE expires_at <= %s").format(self._table), (now,))

    def __repr__(self) -> str:
        return f"PostgresIdempotencyStore(endpoint={self._endpoint!r}, table='{self._schema}.{self._table_name}')"
