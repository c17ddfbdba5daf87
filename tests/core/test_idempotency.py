from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status._logging import capture_logs
from integration_status.backends._memory_state import MemoryIdempotencyStore
from integration_status.core.idempotency import (
    DEFAULT_LEASE,
    RETENTION,
    IdempotencyGuard,
    fingerprint,
    is_storable,
    parse_idempotency_key,
    scope_key,
)
from integration_status.exceptions import (
    BackendUnavailable,
    IdempotencyConflict,
    IdempotencyMismatch,
    InvalidRequest,
    RateLimitExceeded,
)
from integration_status.protocols import BeginResult, StoredResponse
from integration_status.testing import FakeClock

PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
valid_keys = st.text(alphabet=PRINTABLE, min_size=1, max_size=255).filter(
    lambda k: not k.startswith(" ") and not k.endswith(" ")
)


def sf_quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- the header ---------------------------------------------------------------------------------------------


def test_plain_key_is_returned_as_is() -> None:
    """A plain printable-ASCII key comes back unchanged."""
    assert parse_idempotency_key("4f1c-ab_9:x/y") == "4f1c-ab_9:x/y"


def test_quoted_key_is_unquoted_with_escapes() -> None:
    """A structured-field string is unquoted and its two escapes resolved."""
    assert parse_idempotency_key('"a\\"b\\\\c d"') == 'a"b\\c d'


def test_surrounding_whitespace_is_not_part_of_the_key() -> None:
    """Optional whitespace around a header value is ignored (RFC 9110)."""
    assert parse_idempotency_key(" \tabc \t") == "abc"


@pytest.mark.parametrize("header", [None, "", "   ", '""'])
def test_missing_or_empty_key_is_a_400_naming_the_header(header: str | None) -> None:
    """No key, or an empty one, is an invalid request whose message names the header."""
    with pytest.raises(InvalidRequest, match="Idempotency-Key") as info:
        parse_idempotency_key(header)
    assert info.value.http_status == 400


@pytest.mark.parametrize(
    "header",
    [
        "x" * 256,
        "caf\u00e9",
        "a\x00b",
        "a\x7fb",
        "a\tb",
        '"abc',
        '"a\\xb"',
        '"a"b"',
        '" abc"',
        sf_quote("x" * 256),
    ],
)
def test_malformed_key_is_a_400(header: str) -> None:
    """Too long, non-ASCII, control characters or a broken quoted string are refused."""
    with pytest.raises(InvalidRequest, match="Idempotency-Key"):
        parse_idempotency_key(header)


def test_longest_key_is_accepted() -> None:
    """255 characters is within the limit, plain or quoted."""
    assert parse_idempotency_key("k" * 255) == "k" * 255
    assert parse_idempotency_key(sf_quote('"' * 255)) == '"' * 255


@given(valid_keys)
def test_every_valid_key_parses_plain_and_quoted(key: str) -> None:
    """Any valid key survives the quoted form unchanged, and the plain form when it has no comma."""
    if not key.startswith('"') and "," not in key:
        assert parse_idempotency_key(key) == key
    assert parse_idempotency_key(sf_quote(key)) == key


@pytest.mark.parametrize("header", ["a,b", "order-1,order-1", "k, k"])
def test_a_bare_comma_is_two_joined_header_lines(header: str) -> None:
    """A plain key with a comma is refused (two Idempotency-Key lines joined look like it); quoted, it is fine."""
    with pytest.raises(InvalidRequest, match="sent once"):
        parse_idempotency_key(header)
    assert parse_idempotency_key(sf_quote(header)) == header


@given(st.text(max_size=600))
def test_parser_only_ever_returns_valid_keys_or_raises_invalid_request(header: str) -> None:
    """Whatever the header, the result is a valid key or an InvalidRequest, never another error."""
    try:
        key = parse_idempotency_key(header)
    except InvalidRequest:
        return
    assert 1 <= len(key) <= 255
    assert all(c in PRINTABLE for c in key)
    assert key == key.strip(" ")


# --- fingerprints and scopes --------------------------------------------------------------------------------


def test_fingerprint_ignores_key_order_and_method_case() -> None:
    """Canonical JSON makes key order and method case irrelevant."""
    a = fingerprint(
        "post", "/api/integrations/actions", {"provider": "vercel", "action": "deploy", "n": [1, 2]}
    )
    b = fingerprint(
        "POST", "/api/integrations/actions", {"n": [1, 2], "action": "deploy", "provider": "vercel"}
    )
    assert a == b
    assert len(a) == 64
    assert int(a, 16) >= 0


@pytest.mark.parametrize(
    ("other"),
    [
        ("PUT", "/a", {"x": 1}),
        ("POST", "/b", {"x": 1}),
        ("POST", "/a", {"x": 2}),
        ("POST", "/a", {"x": 1, "y": None}),
        ("POST", "/a", {"x": "1"}),
        ("POST", "/a", None),
    ],
)
def test_fingerprint_changes_with_any_part(other: tuple[str, str, Any]) -> None:
    """A different method, path or body gives a different fingerprint."""
    assert fingerprint("POST", "/a", {"x": 1}) != fingerprint(*other)


def test_fingerprint_of_a_non_json_body_is_an_invalid_request() -> None:
    """A body that is not plain JSON (e.g. NaN) is refused as an invalid request."""
    with pytest.raises(InvalidRequest):
        fingerprint("POST", "/a", {"x": float("nan")})


part = st.text(max_size=12)


@given(part, part, part, part, part, part)
def test_scope_keys_never_collide(u1: str, p1: str, k1: str, u2: str, p2: str, k2: str) -> None:
    """Different (user, project, key) triples never share a scoped key, whatever the separators in them."""
    if (u1, p1, k1) != (u2, p2, k2):
        assert scope_key(u1, p1, k1) != scope_key(u2, p2, k2)
    else:
        assert scope_key(u1, p1, k1) == scope_key(u2, p2, k2)


def test_scope_key_resists_separator_tricks() -> None:
    """Moving a separator between parts gives another key."""
    assert scope_key("a:b", "c", "d") != scope_key("a", "b:c", "d")
    assert scope_key("a", "", "b") != scope_key("a", "b", "")


@pytest.mark.parametrize(("status", "stored"), [
    (200, True), (201, True), (202, True), (204, True), (500, True), (502, True), (503, True), (504, True),
    (400, False), (401, False), (403, False), (404, False), (409, False), (422, False), (429, False),
    (100, False), (304, False),
])  # fmt: skip
def test_storable_statuses(status: int, stored: bool) -> None:
    """2xx and 5xx are kept for replay; 4xx refusals and others never are."""
    assert is_storable(status) is stored


def test_constants() -> None:
    """Responses are kept 24 h and an in-flight lease lasts 60 s by default."""
    assert RETENTION == 86_400
    assert DEFAULT_LEASE == 60


# --- the guard ----------------------------------------------------------------------------------------------

OK = StoredResponse(status=200, body={"success": True, "operationId": "op_1"})


class Counter:
    def __init__(self, response: StoredResponse = OK) -> None:
        self.calls = 0
        self.response = response

    async def __call__(self) -> StoredResponse:
        self.calls += 1
        return self.response


def make(clock: FakeClock | None = None) -> tuple[FakeClock, MemoryIdempotencyStore, IdempotencyGuard]:
    clock = clock or FakeClock()
    store = MemoryIdempotencyStore(clock=clock)
    return clock, store, IdempotencyGuard(store, clock=clock)


@pytest.mark.anyio
async def test_first_request_runs_and_a_repeat_replays_the_stored_response() -> None:
    """The second request with the same key and body gets the stored response without running the action."""
    _, _, guard = make()
    action = Counter()
    first = await guard.run(scope="s", fingerprint="f", action=action)
    second = await guard.run(scope="s", fingerprint="f", action=action)
    assert first == (OK, False)
    assert second == (OK, True)
    assert action.calls == 1


@pytest.mark.anyio
async def test_same_key_different_request_is_a_mismatch() -> None:
    """A key reused for a different fingerprint is refused with 422 and nothing runs."""
    _, _, guard = make()
    action = Counter()
    await guard.run(scope="s", fingerprint="f1", action=action)
    with pytest.raises(IdempotencyMismatch) as info:
        await guard.run(scope="s", fingerprint="f2", action=action)
    assert info.value.http_status == 422
    assert action.calls == 1


@pytest.mark.anyio
async def test_same_key_while_running_is_a_conflict() -> None:
    """A second request while the first still runs gets 409 and does not run."""
    _, _, guard = make()
    gate = anyio.Event()
    started = anyio.Event()
    calls = 0

    async def slow() -> StoredResponse:
        nonlocal calls
        calls += 1
        started.set()
        await gate.wait()
        return OK

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: guard.run(scope="s", fingerprint="f", action=slow))
        await started.wait()
        with pytest.raises(IdempotencyConflict) as info:
            await guard.run(scope="s", fingerprint="f", action=slow)
        gate.set()
    assert info.value.http_status == 409
    assert calls == 1
    assert await guard.run(scope="s", fingerprint="f", action=slow) == (OK, True)


@pytest.mark.anyio
async def test_fifty_concurrent_requests_with_one_key_run_the_action_once() -> None:
    """Of 50 concurrent requests with one key exactly one runs; the others get 409 or the replay."""
    clock, _, guard = make()
    calls = 0
    outcomes: list[str] = []

    async def action() -> StoredResponse:
        nonlocal calls
        calls += 1
        await clock.sleep(1)
        return OK

    async def one(i: int) -> None:
        if i >= 25:  # half arrive after the first has finished
            await clock.sleep(2)
        try:
            _, replayed = await guard.run(scope="s", fingerprint="f", action=action)
        except IdempotencyConflict:
            outcomes.append("conflict")
        else:
            outcomes.append("replay" if replayed else "ran")

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(one, i)
        while clock.sleepers < 26:
            await anyio.lowlevel.checkpoint()
        clock.advance(1)
        while clock.sleepers > 25:
            await anyio.lowlevel.checkpoint()
        clock.advance(1)
    assert calls == 1
    assert outcomes.count("ran") == 1
    assert outcomes.count("conflict") == 24
    assert outcomes.count("replay") == 25


@pytest.mark.anyio
async def test_cancellation_releases_the_key() -> None:
    """A request cancelled mid-action (client gone) frees its key at once, so a retry runs."""
    _, store, guard = make()
    started = anyio.Event()

    async def hangs() -> StoredResponse:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: guard.run(scope="s", fingerprint="f", action=hangs))
        await started.wait()
        tg.cancel_scope.cancel()
    assert len(store) == 0
    assert await guard.run(scope="s", fingerprint="f", action=Counter()) == (OK, False)


@pytest.mark.anyio
async def test_a_failing_action_releases_the_key_and_propagates() -> None:
    """An exception from the action propagates and the same key may be retried."""
    _, _, guard = make()

    async def boom() -> StoredResponse:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await guard.run(scope="s", fingerprint="f", action=boom)
    assert await guard.run(scope="s", fingerprint="f", action=Counter()) == (OK, False)


@pytest.mark.anyio
async def test_a_rate_limit_refusal_inside_the_action_is_not_stored() -> None:
    """A RequestError raised by the action (e.g. 429) propagates and is not replayed later."""
    _, _, guard = make()

    async def limited() -> StoredResponse:
        raise RateLimitExceeded("Too many actions", retry_after=12)

    with pytest.raises(RateLimitExceeded):
        await guard.run(scope="s", fingerprint="f", action=limited)
    action = Counter()
    assert await guard.run(scope="s", fingerprint="f", action=action) == (OK, False)
    assert action.calls == 1


@pytest.mark.anyio
async def test_a_replay_never_runs_the_action_so_never_costs_a_rate_limit_slot() -> None:
    """Replays skip the action, where the caller checks the rate limit."""
    _, _, guard = make()
    action = Counter()
    for _ in range(10):
        await guard.run(scope="s", fingerprint="f", action=action)
    assert action.calls == 1


@pytest.mark.anyio
async def test_non_storable_response_is_returned_but_not_kept() -> None:
    """A 403 answer reaches the caller and the key stays usable for a retry."""
    _, store, guard = make()
    forbidden = StoredResponse(status=403, body={"success": False, "error": {"code": "forbidden"}})
    assert await guard.run(scope="s", fingerprint="f", action=Counter(forbidden)) == (forbidden, False)
    assert len(store) == 0
    assert await guard.run(scope="s", fingerprint="f", action=Counter()) == (OK, False)


@pytest.mark.anyio
async def test_provider_failure_response_is_replayed() -> None:
    """A 502 carrying a provider error is stored: the retry replays it instead of acting again."""
    _, _, guard = make()
    failed = StoredResponse(status=502, body={"success": False, "error": {"code": "timeout"}})
    action = Counter(failed)
    await guard.run(scope="s", fingerprint="f", action=action)
    assert await guard.run(scope="s", fingerprint="f", action=action) == (failed, True)
    assert action.calls == 1


@pytest.mark.anyio
async def test_a_crashed_workers_lease_expires() -> None:
    """An in-flight record never completed blocks its key for the lease only."""
    clock, store, guard = make()
    await store.begin("s", "f", lease=DEFAULT_LEASE, keep_for=RETENTION)  # then the worker dies
    clock.advance(DEFAULT_LEASE - 0.5)
    with pytest.raises(IdempotencyConflict):
        await guard.run(scope="s", fingerprint="f", action=Counter())
    clock.advance(0.5)
    assert await guard.run(scope="s", fingerprint="f", action=Counter()) == (OK, False)


@pytest.mark.anyio
async def test_stored_response_expires_after_retention() -> None:
    """After 24 h the key is forgotten and a new request runs."""
    clock, _, guard = make()
    action = Counter()
    await guard.run(scope="s", fingerprint="f", action=action)
    clock.advance(RETENTION - 1)
    assert (await guard.run(scope="s", fingerprint="f", action=action))[1] is True
    clock.advance(1)
    assert (await guard.run(scope="s", fingerprint="f", action=action))[1] is False
    assert action.calls == 2


class BrokenRelease(MemoryIdempotencyStore):
    async def release(self, key: str, token: str) -> None:
        raise BackendUnavailable("store down")


@pytest.mark.anyio
async def test_a_failing_release_does_not_hide_the_actions_error() -> None:
    """When the store cannot release, the action's own exception still propagates."""
    clock = FakeClock()
    guard = IdempotencyGuard(BrokenRelease(clock=clock), clock=clock)

    async def boom() -> StoredResponse:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await guard.run(scope="s", fingerprint="f", action=boom)


class RecordingStore:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def begin(self, key: str, fingerprint: str, *, lease: float, keep_for: float) -> BeginResult:
        self.calls.append(f"begin lease={lease} keep_for={keep_for}")
        return BeginResult(state="started", token="t")

    async def complete(self, key: str, token: str, response: StoredResponse, *, keep_for: float) -> None:
        self.calls.append(f"complete {token} keep_for={keep_for}")

    async def release(self, key: str, token: str) -> None:
        self.calls.append(f"release {token}")


@pytest.mark.anyio
async def test_guard_passes_its_lease_and_retention_to_the_store() -> None:
    """The configured lease and retention reach begin and complete."""
    store = RecordingStore()
    guard = IdempotencyGuard(store, clock=FakeClock(), keep_for=100, lease=7)
    await guard.run(scope="s", fingerprint="f", action=Counter())
    assert store.calls == ["begin lease=7 keep_for=100", "complete t keep_for=100"]


def test_guard_refuses_non_positive_durations() -> None:
    """A zero lease or retention is a configuration mistake."""
    with pytest.raises(ValueError, match="positive"):
        IdempotencyGuard(RecordingStore(), clock=FakeClock(), lease=0)


@pytest.mark.anyio
async def test_an_action_outliving_its_lease_is_logged() -> None:
    """An action slower than the lease is reported, since a retry may have run it again meanwhile."""
    clock = FakeClock()
    guard = IdempotencyGuard(MemoryIdempotencyStore(clock=clock), clock=clock, lease=5)

    async def slow() -> StoredResponse:
        clock.advance(6)
        return OK

    with capture_logs() as logs:
        await guard.run(scope="s", fingerprint="f", action=slow)
        await guard.run(scope="t", fingerprint="f", action=Counter())
    # The record expired with the lease, so storing the response is refused as well.
    assert [entry["event"] for entry in logs] == [
        "integration_status.idempotency.lease_overrun",
        "integration_status.idempotency.lease_lost",
    ]
    assert logs[0]["lease"] == 5
