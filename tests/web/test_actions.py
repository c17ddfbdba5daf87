"""POST {prefix}/actions on every mount: validation, permissions, idempotency, the rate limit, concurrency and
dispatch, over a real server on loopback."""

from __future__ import annotations

import functools
import json
from typing import Any

import anyio
import httpx
import pytest

from integration_status.demo.simulated import SimulatedAdapter, World
from integration_status.exceptions import (
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
)
from integration_status.protocols import ActionContext, ActionOutcome, ActionRequest, ProviderConnection
from integration_status.service import Settings
from integration_status.service.actions import parse_action_body
from integration_status.service.render import validate_project_id
from integration_status.testing import FakeClock, ScriptedAdapter, snapshot
from integration_status.web.handlers import handle_action, request_info
from tests.web.mounts import (
    ACTIONS,
    MountFactory,
    SSEReader,
    action,
    error_of,
    events_stream,
    make_service,
    viewer_headers,
)

pytestmark = pytest.mark.anyio


class Recorder:
    """A host action handler that counts its executions; with a ``gate`` it waits until the gate is set."""

    def __init__(
        self,
        *,
        gate: anyio.Event | None = None,
        raises: ProviderError | None = None,
        data: dict[str, Any] | None = None,
        done: bool = True,
        changes_state: bool = False,
    ) -> None:
        self.calls = 0
        self.requests: list[ActionRequest] = []
        self._gate = gate
        self._raises = raises
        self._data = data or {}
        self._done = done
        self._changes_state = changes_state
        self._called: anyio.Event | None = None

    async def until_calls(self, count: int) -> None:
        """Return once the handler has been called ``count`` times (in the service's loop)."""
        while self.calls < count:
            self._called = anyio.Event()
            await self._called.wait()

    async def __call__(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        self.calls += 1
        self.requests.append(request)
        if self._called is not None:
            self._called.set()
        if self._gate is not None:
            await self._gate.wait()
        if self._raises is not None:
            raise self._raises
        return ActionOutcome(
            operation_id=ctx.operation_id, done=self._done, data=self._data, changes_state=self._changes_state
        )


def deploy_service(handler: Recorder, **kwargs: Any) -> Any:
    return make_service(
        handlers={("vercel", "deploy"): handler, ("github", "connect"): handler, ("github", "push"): handler},
        **kwargs,
    )


async def post(
    client: httpx.AsyncClient,
    body: Any = None,
    *,
    key: str | None = "k1",
    role: str = "owner",
    user: str = "u1",
    content: bytes | None = None,
    content_type: str = "application/json",
) -> httpx.Response:
    headers = viewer_headers(role, user, key)
    headers["Content-Type"] = content_type
    raw = content if content is not None else json.dumps(action() if body is None else body).encode()
    return await client.post(ACTIONS, content=raw, headers=headers)


# --- validation and access ----------------------------------------------------------------------------------

_BIG = b'{"projectId":"p","provider":"vercel","action":"deploy","payload":"' + b"x" * 65_536 + b'"}'


INVALID: list[tuple[str, Any, bytes | None, str, str]] = [
    ("provider", action(provider="gitlab"), None, "application/json", "provider"),
    ("action", action(name="explode"), None, "application/json", "action"),
    ("project type", action(project=5), None, "application/json", "projectId"),
    ("action type", action(name=7), None, "application/json", "action"),
    ("unknown field", {**action(), "force": True}, None, "application/json", "force"),
    ("array", [action()], None, "application/json", "body"),
    ("not json", None, b"{not json", "application/json", "JSON"),
    ("content type", None, json.dumps(action()).encode(), "text/plain", "Content-Type"),
    ("too large", None, _BIG, "application/json", "body"),
]


async def test_invalid_bodies_are_400_naming_the_field(mount: MountFactory) -> None:
    """A bad body, content type or size is 400 invalid_request naming what is wrong; nothing runs."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        for case, body, content, content_type, field in INVALID:
            r = await post(client, body, key=f"key-{case}", content=content, content_type=content_type)
            error = error_of(r, 400, "invalid_request")
            assert field in error["message"], case
        assert handler.calls == 0


FIELDS = ("projectId", "provider", "action")


@pytest.mark.parametrize("value", [1, 1.5, None, True, [], {}], ids=repr)
async def test_a_field_of_the_wrong_type_says_so(mount: MountFactory, value: Any) -> None:
    """projectId, provider or action present with a type other than a string is 400 "<field> must be a
    string", not "is required"; nothing runs."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        for n, field in enumerate(FIELDS):
            body = {**action(), field: value}
            error = error_of(await post(client, body, key=f"k{n}"), 400, "invalid_request")
            assert error["message"] == f"{field} must be a string"
        assert handler.calls == 0


async def test_a_missing_field_is_required(mount: MountFactory) -> None:
    """projectId, provider or action left out is 400 "<field> is required"."""
    async with mount(deploy_service(Recorder())) as m, m.client() as client:
        for n, field in enumerate(FIELDS):
            body = {k: v for k, v in action().items() if k != field}
            error = error_of(await post(client, body, key=f"k{n}"), 400, "invalid_request")
            assert error["message"] == f"{field} is required"


def test_body_fields_are_checked_for_presence_then_type() -> None:
    """The checks themselves, as a host calling the service directly (or a worker finishing an abandoned
    action) meets them: a missing field is required, a present one of another type must be a string."""

    def refusal(check: Any, value: Any) -> str:
        with pytest.raises(InvalidRequest) as refused:
            check(value)
        return str(refused.value)

    assert parse_action_body(action()).project_id == "p"
    for field in FIELDS:
        without = {k: v for k, v in action().items() if k != field}
        assert refusal(parse_action_body, without) == f"{field} is required"
        assert refusal(parse_action_body, {**action(), field: 7}) == f"{field} must be a string"
    assert refusal(validate_project_id, ["p"]) == "projectId must be a string"
    assert refusal(validate_project_id, None) == refusal(validate_project_id, "") == "projectId is required"


NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"]


@pytest.mark.parametrize("number", NON_FINITE, ids=bytes.decode)
async def test_a_non_finite_number_is_a_400(mount: MountFactory, number: bytes) -> None:
    """NaN, the infinities and a number beyond a float's range are not JSON numbers: 400 saying so, whether
    in a field or deep in the payload, never a 500; nothing runs."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        in_field = b'{"projectId":' + number + b',"provider":"vercel","action":"deploy"}'
        in_payload = (
            b'{"projectId":"p","provider":"vercel","action":"deploy","payload":{"n":[' + number + b"]}}"
        )
        for n, content in enumerate((in_field, in_payload)):
            error = error_of(await post(client, content=content, key=f"k{n}"), 400, "invalid_request")
            assert "not finite" in error["message"]
        assert handler.calls == 0


REPEATED = [
    (b'{"projectId":"p","projectId":"nope","provider":"vercel","action":"deploy"}', "projectId"),
    (b'{"projectId":"p","provider":"vercel","action":"deploy","action":"deploy"}', "action"),
    (
        b'{"projectId":"p","provider":"vercel","action":"deploy","payload":{"a":[{"ref":"x","ref":"y"}]}}',
        "ref",
    ),
]


@pytest.mark.parametrize(("content", "key"), REPEATED, ids=["top", "same value", "deep"])
async def test_a_repeated_key_in_the_body_is_a_400_naming_it(
    mount: MountFactory, content: bytes, key: str
) -> None:
    """A key that comes twice in one object of the body, at any depth and even with the same value, is 400
    naming the key and neither value; nothing runs."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        error = error_of(await post(client, content=content), 400, "invalid_request")
        assert error["message"] == f"The key {key!r} is repeated in the body"
        assert "nope" not in json.dumps(error)
        assert handler.calls == 0
        # The same body with each key once runs.
        assert (await post(client, key="k2")).status_code == 200
        assert handler.calls == 1


async def test_401_without_a_viewer(mount: MountFactory) -> None:
    """No authenticated viewer: 401 unauthorized in the error envelope."""
    async with mount(deploy_service(Recorder())) as m, m.client() as client:
        r = await client.post(ACTIONS, json=action(), headers={"Idempotency-Key": "k1"})
        error_of(r, 401, "unauthorized")


async def test_404_for_unknown_project_and_for_a_viewer_without_access_alike(mount: MountFactory) -> None:
    """An unknown project and a project the viewer may not see get the same 404 body."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        unknown = await post(client, action(project="nope"))
        hidden = await post(client, action(), role="none")
        error_of(unknown, 404, "not_found")
        assert hidden.status_code == 404
        assert hidden.json() == unknown.json()
        assert handler.calls == 0


@pytest.mark.parametrize(
    ("role", "body"),
    [("viewer", action()), ("viewer", action("github", "connect")), ("member", action("github", "connect"))],
)
async def test_403_for_a_role_that_may_not_run_the_action(mount: MountFactory, role: str, body: Any) -> None:
    """The viewer role may run nothing and a member may not connect: 403 forbidden, nothing runs."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        error_of(await post(client, body, role=role), 403, "forbidden")
        assert handler.calls == 0


async def test_an_action_listed_with_can_false_is_refused(mount: MountFactory) -> None:
    """An action the viewer's item lists with can: false (here: connect on a connected provider) answers 400
    with the same reason the UI shows, and nothing runs."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        error = error_of(await post(client, action("github", "connect")), 400, "invalid_request")
        assert error["hint"] == "Already connected"
        assert handler.calls == 0


async def test_a_viewer_post_is_403_before_anything_else(mount: MountFactory) -> None:
    """The viewer role may run nothing: its POST is 403 even without an Idempotency-Key or with a bad body."""
    async with mount(deploy_service(Recorder())) as m, m.client() as client:
        error_of(await post(client, action(), role="viewer", key=None), 403, "forbidden")
        bad = {"projectId": "p", "provider": "gitlab", "action": "x"}
        error_of(await post(client, bad, role="viewer"), 403, "forbidden")


# --- idempotency --------------------------------------------------------------------------------------------


async def test_missing_or_malformed_idempotency_key_is_400(mount: MountFactory) -> None:
    """A missing, empty, too long, tab-holding or badly quoted key is 400 naming Idempotency-Key."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        for key in [None, "", "k" * 256, "a\tb", '"unterminated', '"bad\\escape"']:
            error = error_of(await post(client, key=key), 400, "invalid_request")
            assert "Idempotency-Key" in error["message"], key
        assert (await post(client, key="k" * 255)).status_code == 200  # the longest valid key
        assert handler.calls == 1


async def test_quoted_structured_field_key_is_the_same_key(mount: MountFactory) -> None:
    """A key sent as an sf-string ("k") is accepted, and the bare form of it replays the same request."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        first = await post(client, key='"order-42"')
        again = await post(client, key="order-42")
        assert first.status_code == 200
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.json() == first.json()
        assert handler.calls == 1


async def test_replay_returns_the_stored_answer_without_running_again(mount: MountFactory) -> None:
    """Same key and body: the same status and body with Idempotent-Replayed: true; the handler ran once."""
    handler = Recorder(data={"note": "done"})
    async with mount(deploy_service(handler)) as m, m.client() as client:
        first = await post(client)
        second = await post(client)
        assert first.status_code == 200
        assert "idempotent-replayed" not in first.headers
        assert first.json()["success"] is True
        assert first.json()["operationId"].startswith("op_")
        assert (second.status_code, second.json()) == (first.status_code, first.json())
        assert second.headers["idempotent-replayed"] == "true"
        assert handler.calls == 1


async def test_same_key_with_a_different_body_is_422(mount: MountFactory) -> None:
    """Reusing a key for a different request is 422 idempotency_mismatch, and nothing runs."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        assert (await post(client)).status_code == 200
        error_of(await post(client, action(payload={"ref": "x"})), 422, "idempotency_mismatch")
        assert handler.calls == 1


async def test_same_key_while_the_first_runs_is_409(mount: MountFactory) -> None:
    """The same key while the first request still runs is 409; the first then finishes and replays."""
    gate = anyio.Event()
    handler = Recorder(gate=gate)
    async with mount(deploy_service(handler)) as m, m.client() as client:
        results: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:

            async def first() -> None:
                results.append(await post(client))

            tg.start_soon(first)
            await m.until(handler.until_calls, 1)
            error_of(await post(client), 409, "idempotency_conflict")
            await m.call(gate.set)
        assert results[0].status_code == 200
        replay = await post(client)
        assert replay.headers["idempotent-replayed"] == "true"
        assert handler.calls == 1


async def test_keys_are_scoped_to_user_and_project(mount: MountFactory) -> None:
    """The same key from another user, or for another project, is a new request that runs."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        a = await post(client, user="u1")
        b = await post(client, user="u2")
        c = await post(client, action(project="q"), user="u1")
        assert [r.status_code for r in (a, b, c)] == [200, 200, 200]
        assert all("idempotent-replayed" not in r.headers for r in (a, b, c))
        assert len({r.json()["operationId"] for r in (a, b, c)}) == 3
        assert handler.calls == 3


async def test_a_403_is_not_stored(mount: MountFactory) -> None:
    """A refused (403) request does not keep its key: once the role allows it, the same key runs."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        body = action("github", "push")
        error_of(await post(client, body, role="member"), 403, "forbidden")
        r = await post(client, body, role="owner")
        assert r.status_code == 200
        assert "idempotent-replayed" not in r.headers
        assert handler.calls == 1


async def test_a_429_is_not_stored(mount: MountFactory) -> None:
    """A rate-limited key runs normally once the window has passed."""
    handler = Recorder()
    async with mount(deploy_service(handler, clock=FakeClock())) as m, m.client() as client:
        for i in range(5):
            assert (await post(client, key=f"k{i}")).status_code == 200
        error_of(await post(client, key="late"), 429, "rate_limited")
        await m.advance(60)
        r = await post(client, key="late")
        assert r.status_code == 200
        assert "idempotent-replayed" not in r.headers
        assert handler.calls == 6


async def test_provider_failures_are_stored_and_replayed(mount: MountFactory) -> None:
    """A 5xx from a provider failure may have had effects: the same key replays it without running again."""
    handler = Recorder(raises=ProviderTimeout("vercel did not answer", provider="vercel"))
    async with mount(deploy_service(handler)) as m, m.client() as client:
        first = await post(client)
        second = await post(client)
        assert first.status_code == 504
        assert (second.status_code, second.json()) == (504, first.json())
        assert second.headers["idempotent-replayed"] == "true"
        assert handler.calls == 1


async def test_replay_after_the_limit_neither_429s_nor_spends_a_slot(mount: MountFactory) -> None:
    """Idempotency comes before the rate limit: replays at any point cost no slot and never get a 429."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        for i in range(4):
            assert (await post(client, key=f"k{i}")).status_code == 200
        for _ in range(3):
            replay = await post(client, key="k0")
            assert replay.status_code == 200
            assert replay.headers["idempotent-replayed"] == "true"
        assert (await post(client, key="k4")).status_code == 200  # the 5th slot was still free
        error_of(await post(client, key="k5"), 429, "rate_limited")
        after = await post(client, key="k2")
        assert after.status_code == 200
        assert after.headers["idempotent-replayed"] == "true"
        assert handler.calls == 5


# --- rate limit ---------------------------------------------------------------------------------------------


async def test_sixth_action_in_a_minute_is_429_with_retry_after(mount: MountFactory) -> None:
    """The 6th action per user and project in 60 s is 429 with Retry-After == error.retryAfter and RateLimit
    headers; the window rolls."""
    handler = Recorder()
    async with mount(deploy_service(handler, clock=FakeClock())) as m, m.client() as client:
        for i in range(5):
            ok = await post(client, key=f"k{i}")
            assert ok.status_code == 200
            assert ok.headers["ratelimit-policy"] == "5;w=60"
            assert f"remaining={4 - i}" in ok.headers["ratelimit"]
        refused = await post(client, key="k5")
        error = error_of(refused, 429, "rate_limited")
        assert refused.headers["retry-after"].isdigit()
        assert int(refused.headers["retry-after"]) == error["retryAfter"] == 60
        assert refused.headers["ratelimit-policy"] == "5;w=60"
        assert "remaining=0" in refused.headers["ratelimit"]
        assert handler.calls == 5
        await m.advance(59)
        error_of(await post(client, key="k6"), 429, "rate_limited")
        await m.advance(1)
        assert (await post(client, key="k7")).status_code == 200
        assert handler.calls == 6


async def test_a_429_carries_exactly_one_retry_after_header() -> None:
    """The framework-neutral 429 response lists Retry-After once, so every mount sends a single integer."""
    service = deploy_service(Recorder())
    async with service:
        for i in range(6):
            request = request_info(
                "POST",
                ACTIONS,
                {**viewer_headers(key=f"k{i}"), "Content-Type": "application/json"},
                {},
            )
            response = await handle_action(service, request, json.dumps(action()).encode())
    assert response.status == 429
    retry_after = [value for name, value in response.headers if name.lower() == "retry-after"]
    assert retry_after == [str(json.loads(response.body)["error"]["retryAfter"])]


async def test_limit_is_per_user_and_project(mount: MountFactory) -> None:
    """A user at the limit on one project may still act on another; another user is not limited."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        for i in range(5):
            assert (await post(client, key=f"k{i}")).status_code == 200
        error_of(await post(client, key="k5"), 429, "rate_limited")
        assert (await post(client, action(project="q"), key="k6")).status_code == 200
        assert (await post(client, key="k7", user="u2")).status_code == 200
        assert handler.calls == 7


# --- concurrency --------------------------------------------------------------------------------------------


async def test_fifty_concurrent_posts_with_one_key_run_once(mount: MountFactory) -> None:
    """50 concurrent requests with one key: exactly one execution; every other answer is a replay or a 409."""
    gate = anyio.Event()
    handler = Recorder(gate=gate)
    async with mount(deploy_service(handler)) as m, m.client() as client:
        answers: list[httpx.Response] = []
        all_but_one = anyio.Event()

        async def one() -> None:
            answers.append(await post(client, key="same"))
            if len(answers) == 49:
                all_but_one.set()

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(one)
            # Hold the first execution open until every other request has been answered.
            with anyio.fail_after(10):
                await all_but_one.wait()
            await m.call(gate.set)
        assert handler.calls == 1
        ran = [r for r in answers if r.status_code == 200 and "idempotent-replayed" not in r.headers]
        others = [r for r in answers if r not in ran]
        assert len(ran) == 1
        assert all(r.status_code == 409 or r.headers.get("idempotent-replayed") == "true" for r in others)


async def test_fifty_concurrent_distinct_keys_admit_exactly_five(mount: MountFactory) -> None:
    """50 concurrent requests with distinct keys for one user and project: 5 admitted, 45 refused with 429."""
    handler = Recorder()
    async with mount(deploy_service(handler)) as m, m.client() as client:
        statuses: list[int] = []

        async def one(i: int) -> None:
            statuses.append((await post(client, key=f"key-{i}")).status_code)

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
        assert sorted(statuses) == [200] * 5 + [429] * 45
        assert handler.calls == 5


# --- dispatch -----------------------------------------------------------------------------------------------


class SlowDeploy:
    """A host deploy handler in the shape of a real one: announces the start, answers 202, and finishes in
    the background (when ``finish`` is set) with a deploy:finished event."""

    def __init__(self) -> None:
        self.finish = anyio.Event()

    async def __call__(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        base = {"provider": "vercel", "projectId": request.project_id, "operationId": ctx.operation_id}
        await ctx.publish({"type": "deploy:started", **base, "ts": 1})

        async def finished() -> None:
            await self.finish.wait()
            url = "https://shop-abc123.vercel.app"
            await ctx.publish({"type": "deploy:finished", **base, "success": True, "url": url, "ts": 2})

        ctx.spawn(finished)
        return ActionOutcome(operation_id=ctx.operation_id, done=False)


async def test_long_deploy_is_202_then_started_and_finished_events(mount: MountFactory) -> None:
    """A deploy answers 202 with an operationId; deploy:started, then deploy:finished with success and url,
    arrive on the stream, with a status:update after the state change."""
    vercel = ScriptedAdapter("vercel", snapshot("vercel", "connected", "Live"))
    adapters = [vercel] + [ScriptedAdapter(p, snapshot(p)) for p in ("github", "sanity", "supabase")]
    deploy = SlowDeploy()
    service = make_service(handlers={("vercel", "deploy"): deploy}, adapters=adapters)
    async with mount(service) as m, m.client() as client, events_stream(client) as stream:
        events = SSEReader(stream)
        assert (await events.event()).event == "status:update"
        vercel.then(snapshot("vercel", "connected", "Building"))
        r = await post(client)
        assert r.status_code == 202
        assert r.json()["success"] is True
        operation = r.json()["operationId"]
        seen: dict[str, dict[str, Any]] = {}
        while "deploy:started" not in seen or "status:update" not in seen:
            frame = await events.event()
            assert frame.event is not None
            assert frame.event != "deploy:finished"
            seen[frame.event] = frame.json()
        assert seen["deploy:started"]["operationId"] == operation
        assert _summary(seen["status:update"], "vercel") == "Building"
        await m.call(deploy.finish.set)
        finished = await events.event()
        assert finished.event == "deploy:finished"
        assert finished.json()["operationId"] == operation
        assert finished.json()["success"] is True
        assert finished.json()["url"] == "https://shop-abc123.vercel.app"


async def test_demo_deploy_finishes_on_the_simulated_world(mount: MountFactory) -> None:
    """The demo's simulated Vercel deploy answers 202 and reports deploy:finished once its time has passed."""
    clock = FakeClock()
    world = World(clock=clock)
    adapters = [SimulatedAdapter("vercel", world, deploy_seconds=4)] + [
        ScriptedAdapter(p, snapshot(p)) for p in ("github", "sanity", "supabase")
    ]
    service = make_service(clock=clock, adapters=adapters, settings=Settings(heartbeat=3600))
    async with mount(service) as m, m.client() as client, events_stream(client) as stream:
        events = SSEReader(stream)
        assert (await events.event()).event == "status:update"
        await m.until(clock.until_sleepers, 1)  # the stream's heartbeat
        r = await post(client)
        assert r.status_code == 202
        started = await events.event()
        assert started.event == "deploy:started"
        assert started.json()["operationId"] == r.json()["operationId"]
        # + the deploy's finishing task (started first)
        await m.until(functools.partial(clock.until_sleepers, 2, at_least=True))
        await m.advance(4)
        while (frame := await events.event()).event != "deploy:finished":
            assert frame.event == "status:update"
        assert frame.json()["success"] is True
        assert frame.json()["url"].startswith("https://storefront-")


@pytest.mark.parametrize(
    ("exc", "status", "code", "hint"),
    [
        (ProviderAuthError("revoked", provider="vercel", status_code=401), 502, "oauth_revoked", "reconnect"),
        (ProviderRateLimited("slow down", provider="vercel", retry_after=12), 503, "rate_limited", "12s"),
        (ProviderTimeout("no answer", provider="vercel"), 504, "timeout", "Try again"),
    ],
    ids=["auth", "rate-limited", "timeout"],
)
async def test_provider_failure_is_the_spec_error_object(
    mount: MountFactory, exc: ProviderError, status: int, code: str, hint: str
) -> None:
    """A provider failure in the handler becomes {success: false, error: {code, message, hint}} with its code
    (and Retry-After for a provider rate limit)."""
    async with mount(deploy_service(Recorder(raises=exc))) as m, m.client() as client:
        r = await post(client)
        error = error_of(r, status, code)
        assert hint in error["hint"]
        if code == "rate_limited":
            assert r.headers["retry-after"] == "12"
            assert error["retryAfter"] == 12
        else:
            assert "retry-after" not in r.headers
            assert "retryAfter" not in error


async def test_connect_returns_the_hosts_url_and_never_a_token(mount: MountFactory) -> None:
    """connect answers the URL the host's handler gives, and nothing of the stored credentials (here the token
    was revoked, so reconnecting is what the viewer may do)."""
    url = "https://github.com/login/oauth/authorize?client_id=abc&state=xyz"
    handler = Recorder(data={"url": url})
    revoked = ScriptedAdapter("github", ProviderAuthError("401", provider="github", status_code=401))
    others = [ScriptedAdapter(p, snapshot(p)) for p in ("vercel", "sanity", "supabase")]
    service = make_service(handlers={("github", "connect"): handler}, adapters=[revoked, *others])
    async with mount(service) as m, m.client() as client:
        r = await post(client, action("github", "connect"))
        assert r.status_code == 200
        body = r.json()
        assert body["url"] == url
        assert set(body) == {"success", "operationId", "url"}
        assert "TOPSECRET" not in r.text
        assert handler.requests[0].action == "connect"


async def test_state_changing_action_is_followed_by_a_status_update(mount: MountFactory) -> None:
    """After an action that changes state, the provider is fetched again and a status:update follows."""
    github = ScriptedAdapter("github", snapshot("github", "connected", "Before"))
    adapters = [github] + [ScriptedAdapter(p, snapshot(p)) for p in ("vercel", "sanity", "supabase")]
    handler = Recorder(changes_state=True)
    service = make_service(handlers={("github", "sync"): handler}, adapters=adapters)
    async with mount(service) as m, m.client() as client, events_stream(client) as stream:
        events = SSEReader(stream)
        first = (await events.event()).json()
        assert _summary(first, "github") == "Before"
        github.then(snapshot("github", "connected", "After"))
        assert (await post(client, action("github", "sync"))).status_code == 200
        update = await events.event()
        assert update.event == "status:update"
        assert _summary(update.json(), "github") == "After"
        assert handler.calls == 1


def _summary(event: dict[str, Any], key: str) -> str:
    item = next(i for i in event["items"] if i["key"] == key)
    summary: str = item["summary"]
    return summary


async def test_action_timeout_is_a_timeout_error(mount: MountFactory) -> None:
    """A handler that outlives Settings.action_timeout is cancelled and answered with code timeout."""
    handler = Recorder(gate=anyio.Event())  # never set: the handler hangs
    service = deploy_service(handler, clock=FakeClock(), settings=Settings(action_timeout=3))
    async with mount(service) as m, m.client() as client:
        results: list[httpx.Response] = []
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                results.append(await post(client))

            tg.start_soon(run)
            # The handler has started and the timeout's timer is the one task sleeping on the clock.
            await m.until(handler.until_calls, 1)
            await m.until(m.clock.until_sleepers, 1)
            await m.advance(3)
        error = error_of(results[0], 504, "timeout")
        assert "Try again" in error["hint"]


async def test_a_wrong_method_answers_405_in_the_error_object(mount: MountFactory) -> None:
    """GET /actions (or any wrong method) is 405 with Allow and the error object, on every mount."""
    async with mount(deploy_service(Recorder())) as m, m.client() as client:
        r = await client.get(ACTIONS, headers=viewer_headers())
        assert r.status_code == 405
        assert "POST" in r.headers["allow"]
        assert r.json()["error"]["code"] == "invalid_request"


async def test_absurdly_nested_json_is_a_400(mount: MountFactory) -> None:
    """A body nested deeper than any parser should follow is 400 invalid_request, never a 500."""
    async with mount(deploy_service(Recorder())) as m, m.client() as client:
        deep = (
            b'{"projectId":"p","provider":"vercel","action":"deploy","payload":'
            + b"[" * 20_000
            + b"]" * 20_000
            + b"}"
        )
        error_of(await post(client, content=deep), 400, "invalid_request")
        nested = {
            **action(),
            "payload": json.loads("[" * 100 + "]" * 100),
        }  # parses, but deeper than payloads go
        assert (
            "nests deeper"
            in error_of(await post(client, nested, key="k2"), 400, "invalid_request")["message"]
        )
