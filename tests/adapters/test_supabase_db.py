"""The Supabase database probe against the real PostgreSQL on 127.0.0.1:5432 and small loopback servers."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status.adapters._pg import DbHealth, average_ms, classify_error, probe_database
from integration_status.exceptions import ProviderAuthError, ProviderTimeout, ProviderUnavailable
from integration_status.protocols import Secret
from tests.services import POSTGRES_HOST, POSTGRES_PORT, require_postgres

pytestmark = pytest.mark.anyio

PASSWORD = "pw-" + uuid.uuid4().hex  # unique, so finding it anywhere is never a coincidence


@pytest.fixture
def postgres_dsn() -> str:
    return require_postgres()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens here any more: connecting is refused at once


class _Server:
    """A loopback asyncio server whose handler is given; records when clients hang up."""

    def __init__(self) -> None:
        self.port = 0
        self.client_closed = asyncio.Event()
        self.received_password: bytes | None = None


@asynccontextmanager
async def _serve(
    handler: Callable[[_Server, asyncio.StreamReader, asyncio.StreamWriter], object],
) -> AsyncIterator[_Server]:
    state = _Server()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(state, reader, writer)  # type: ignore[misc]
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


async def _read_startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Read the startup packet, declining SSL/GSS encryption requests first (answer ``N``)."""
    while True:
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        body = await reader.readexactly(length - 4)
        (code,) = struct.unpack("!I", body[:4])
        if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
            writer.write(b"N")
            await writer.drain()
            continue
        return body


async def _refuse_password(
    state: _Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Speak just enough of the PostgreSQL protocol v3 to ask for a password and reject it with 28P01."""
    await _read_startup(reader, writer)
    writer.write(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
    await writer.drain()
    kind = await reader.readexactly(1)
    (length,) = struct.unpack("!I", await reader.readexactly(4))
    payload = await reader.readexactly(length - 4)
    if kind == b"p":
        state.received_password = payload.rstrip(b"\0")
    fields = b"".join(
        tag + text + b"\0"
        for tag, text in (
            (b"S", b"FATAL"),
            (b"V", b"FATAL"),
            (b"C", b"28P01"),
            (b"M", b'password authentication failed for user "probe_user"'),
        )
    )
    writer.write(b"E" + struct.pack("!I", len(fields) + 5) + fields + b"\0")
    await writer.drain()
    await reader.read()
    state.client_closed.set()


async def _never_answer(state: _Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # returns at EOF, i.e. when the client gives up and closes
    state.client_closed.set()


def _delaying_proxy(delay: float) -> Callable[[_Server, asyncio.StreamReader, asyncio.StreamWriter], object]:
    """A TCP proxy to the real PostgreSQL that holds every server->client chunk back by ``delay`` seconds."""

    async def handler(state: _Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(POSTGRES_HOST, POSTGRES_PORT)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, wait: float) -> None:
            while chunk := await src.read(65536):
                if wait:
                    await asyncio.sleep(wait)  # the simulated network latency under test
                dst.write(chunk)
                await dst.drain()

        upstream = asyncio.ensure_future(pipe(up_reader, writer, delay))
        try:
            await pipe(reader, up_writer, 0.0)
            state.client_closed.set()
        finally:
            upstream.cancel()
            up_writer.close()

    return handler


def _dsn_via(port: int, user: str = "postgres", password: str = PASSWORD) -> str:
    return f"postgresql://{user}:{password}@127.0.0.1:{port}/test?sslmode=disable"


# --- real PostgreSQL -----------------------------------------------------------------------------------


async def test_healthy_database_reports_average_and_sample_count(postgres_dsn: str) -> None:
    """A reachable database answers with a positive average round trip over exactly the requested samples."""
    health = await probe_database(Secret(postgres_dsn), samples=4, timeout=5.0)
    assert isinstance(health, DbHealth)
    assert health.samples == 4
    assert 0 < health.avg_ms < 1000


async def test_probe_closes_its_connection(postgres_dsn: str) -> None:
    """After a successful probe the client side of the connection is closed."""
    async with _serve(_delaying_proxy(0.0)) as proxy:
        health = await probe_database(Secret(_dsn_via(proxy.port)), samples=2, timeout=5.0)
        with anyio.fail_after(2):
            await proxy.client_closed.wait()
    assert health.samples == 2


async def test_unknown_role_is_an_auth_error(postgres_dsn: str) -> None:
    """A role the server does not know (SQLSTATE 28000) maps to oauth_revoked with the reconnect hint."""
    # The local server trusts loopback TCP, so it never checks passwords; an unknown role is the real
    # authentication refusal it can give. The 28P01 path is covered by the protocol-level test below.
    role = "probe_missing_" + uuid.uuid4().hex[:12]
    dsn = f"postgresql://{role}:{PASSWORD}@{POSTGRES_HOST}:{POSTGRES_PORT}/test"
    with pytest.raises(ProviderAuthError) as info:
        await probe_database(Secret(dsn), timeout=5.0)
    assert info.value.problem_code == "oauth_revoked"
    assert info.value.hint == "Click to reconnect"
    assert info.value.provider == "supabase"
    assert role not in str(info.value)


async def test_missing_database_is_unknown(postgres_dsn: str) -> None:
    """A database that does not exist is neither an auth nor a network failure: ProviderUnavailable."""
    dsn = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/missing_{uuid.uuid4().hex[:12]}"
    with pytest.raises(ProviderUnavailable) as info:
        await probe_database(Secret(dsn), timeout=5.0)
    assert info.value.problem_code == "unknown"


async def test_slow_server_shows_in_the_average(postgres_dsn: str) -> None:
    """300 ms of added latency per server reply shows up as an average round trip above 250 ms."""
    async with _serve(_delaying_proxy(0.3)) as proxy:
        health = await probe_database(Secret(_dsn_via(proxy.port)), samples=2, timeout=10.0)
    assert health.samples == 2
    assert health.avg_ms > 250


# --- loopback servers ----------------------------------------------------------------------------------


async def test_wrong_password_is_an_auth_error() -> None:
    """A server refusing the password with 28P01 maps to ProviderAuthError; the password did reach it."""
    async with _serve(_refuse_password) as server:
        with pytest.raises(ProviderAuthError) as info:
            await probe_database(Secret(_dsn_via(server.port, user="probe_user")), timeout=5.0)
        with anyio.fail_after(2):
            await server.client_closed.wait()
    assert server.received_password == PASSWORD.encode()
    assert info.value.hint == "Click to reconnect"


async def test_errors_never_carry_the_password_or_host() -> None:
    """Neither str, repr, cause nor context of the raised error contain the DSN, password, user or port."""
    async with _serve(_refuse_password) as server:
        dsn = _dsn_via(server.port, user="probe_user")
        with pytest.raises(ProviderAuthError) as info:
            await probe_database(Secret(dsn), timeout=5.0)
    err = info.value
    for text in (str(err), repr(err)):
        for secret in (PASSWORD, dsn, "probe_user", str(server.port)):
            assert secret not in text
    assert err.__cause__ is None
    assert err.__context__ is None


async def test_closed_port_is_a_timeout_quickly() -> None:
    """Connection refused on loopback maps to ProviderTimeout ("Try again") well before the deadline."""
    started = anyio.current_time()
    with pytest.raises(ProviderTimeout) as info:
        await probe_database(Secret(_dsn_via(_closed_port())), timeout=5.0)
    assert anyio.current_time() - started < 2.0
    assert info.value.hint == "Try again"
    assert PASSWORD not in repr(info.value)


async def test_unresolvable_host_is_a_timeout() -> None:
    """A host name that cannot be resolved (.invalid never resolves) maps to ProviderTimeout."""
    with pytest.raises(ProviderTimeout):
        await probe_database(Secret(f"postgresql://u:{PASSWORD}@db.example.invalid:5432/x"), timeout=5.0)


async def test_silent_server_hits_the_deadline_and_the_socket_is_closed() -> None:
    """A server that accepts but never answers is cut off by the probe deadline and its socket is closed."""
    async with _serve(_never_answer) as server:
        with pytest.raises(ProviderTimeout):
            await probe_database(Secret(_dsn_via(server.port)), timeout=0.2)
        with anyio.fail_after(2):
            await server.client_closed.wait()


async def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg installed the probe raises an ImportError telling how to install the extra."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ImportError, match=r"pip install 'integration-status\[postgres\]'"):
        await probe_database(Secret("postgresql://x"), timeout=1.0)


# --- pure parts ----------------------------------------------------------------------------------------


class _SteppingClock:
    """A clock whose monotonic time moves by a fixed step on every read."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def time(self) -> float:
        return 1_764_136_800.0

    def monotonic(self) -> float:
        self.now += self.step
        return self.now

    async def sleep(self, seconds: float) -> None:
        await anyio.lowlevel.checkpoint()


async def test_round_trips_are_timed_with_the_injected_clock(postgres_dsn: str) -> None:
    """The average comes from the given clock: a clock stepping 7 ms per read gives exactly 7 ms."""
    health = await probe_database(Secret(postgres_dsn), samples=3, timeout=5.0, clock=_SteppingClock(0.007))
    assert health == DbHealth(avg_ms=7.0, samples=3)


@pytest.mark.parametrize(
    ("sqlstate", "message", "kind"),
    [
        ("28P01", "", "auth"),
        ("28000", "", "auth"),
        (None, 'FATAL:  password authentication failed for user "x"', "auth"),
        (None, 'FATAL:  role "x" does not exist', "auth"),
        (None, "fe_sendauth: no password supplied", "auth"),
        (None, 'FATAL:  database "x" does not exist', "other"),
        ("08006", "", "unreachable"),
        (None, 'connection to server at "h", port 1 failed: Connection refused', "unreachable"),
        (None, "failed to resolve host 'h': [Errno -2] Name or service not known", "unreachable"),
        (None, "connection failed: timeout expired", "unreachable"),
        ("53300", "sorry, too many clients already", "other"),
        ("42601", "syntax error", "other"),
    ],
)
def test_classify_error(sqlstate: str | None, message: str, kind: str) -> None:
    """SQLSTATEs and libpq messages sort into auth, unreachable and other."""
    assert classify_error(sqlstate=sqlstate, message=message) == kind


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1, max_size=20))
def test_average_lies_between_min_and_max(durations: list[float]) -> None:
    """The average in ms is never below the fastest nor above the slowest sample."""
    avg = average_ms(durations)
    assert min(durations) * 1000 - 0.001 <= avg <= max(durations) * 1000 + 0.001


async def test_invalid_arguments_are_rejected() -> None:
    """Zero samples or a non-positive timeout are programming errors (ValueError), not provider errors."""
    with pytest.raises(ValueError, match="samples"):
        await probe_database(Secret("postgresql://x"), samples=0, timeout=1.0)
    with pytest.raises(ValueError, match="timeout"):
        await probe_database(Secret("postgresql://x"), timeout=0)
