"""Two app instances on one Redis behave as one service: each instance is its own ASGI app with its own
StatusService and RedisEngine, served by its own uvicorn on loopback; they share only Redis and the prefix.

Counters live in the test process (each instance has its own handler and adapter objects), so a count across
both instances is the number of executions or provider calls the whole "cluster" made.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import anyio
import attrs
import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from integration_status.backends.redis import RedisEngine
from integration_status.core.webhooks import sign_github
from integration_status.models import PROVIDERS, ProviderKey
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    ProviderConnection,
    RequestInfo,
    Secret,
    Viewer,
)
from integration_status.service import Settings, StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.service.webhooks import WebhookTarget
from integration_status.snapshot import ProviderSnapshot
from integration_status.testing import ScriptedAdapter, StaticConnections, snapshot
from integration_status.web.starlette import create_app
from tests.backends.conftest import RedisProxy
from tests.e2e.conftest import serve
from tests.polling import wait_until
from tests.services import REDIS_URL, require_redis

pytestmark = pytest.mark.anyio

PROJECT = "proj_mw"
API = "/api/integrations"
WEBHOOK_SECRET = "whsec-multiworker-5d1e"
DEPLOY = {"projectId": PROJECT, "provider": "vercel", "action": "deploy"}


# --- fixtures and instances ---------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    """The test Redis; skips when it is missing (fails when CI=true)."""
    return require_redis(REDIS_URL)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted afterwards."""
    import redis

    value = f"test-mw-{uuid.uuid4().hex[:10]}"
    yield value
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{value}:*", count=1000))
        if keys:
            client.delete(*keys)


async def authenticate(request: RequestInfo) -> Viewer | None:
    user = request.headers.get("x-user")
    return None if user is None else Viewer(user_id=user, roles={"owner"})


async def resolve_webhook(provider: str, headers: Mapping[str, str], payload: Any) -> WebhookTarget | None:
    if provider == "github" and payload.get("repository", {}).get("full_name") == "acme/storefront":
        return WebhookTarget(project_id=PROJECT, secret=Secret(WEBHOOK_SECRET))
    return None


@attrs.define
class Instance:
    """One app instance: its service, its adapters, and its base URL."""

    service: StatusService
    adapters: dict[ProviderKey, ScriptedAdapter]
    base: str


AdapterFactory = Callable[[ProviderKey], ScriptedAdapter]


@contextlib.asynccontextmanager
async def instances(
    prefix: str,
    *urls: str,
    handlers: Mapping[tuple[str, str], ActionHandler] | None = None,
    adapter: AdapterFactory = ScriptedAdapter,
    settings: Settings | None = None,
) -> AsyncIterator[list[Instance]]:
    """One served instance per Redis URL in ``urls`` (all with ``prefix``), each with its own adapters."""
    async with contextlib.AsyncExitStack() as stack:
        out: list[Instance] = []
        for url in urls:
            adapters = {p: adapter(p) for p in PROVIDERS}
            service = StatusService(
                authorizer=allow_global_roles,
                connections=StaticConnections.linked(PROJECT, *PROVIDERS),
                adapters=adapters,
                authenticator=authenticate,
                engine=RedisEngine.from_url(url, prefix=prefix),
                action_handlers=handlers,
                webhooks=resolve_webhook,
                settings=settings,
            )
            base = await stack.enter_async_context(serve(create_app(service)))
            out.append(Instance(service=service, adapters=adapters, base=base))
        yield out


def client(base: str, user: str = "u1") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base + API,
        headers={"X-User": user},
        timeout=httpx.Timeout(10.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
    )


async def gather(*calls: Callable[[], Awaitable[httpx.Response]]) -> list[httpx.Response]:
    """Run the calls concurrently; their responses in call order."""
    results: list[httpx.Response | None] = [None] * len(calls)

    async def one(i: int) -> None:
        results[i] = await calls[i]()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(len(calls)):
                tg.start_soon(one, i)
    return [r for r in results if r is not None]


class Events:
    """An open SSE stream: ``await events.next("deploy:started")`` skips to the next event of those types."""

    def __init__(self, source: AsyncIterator[ServerSentEvent]) -> None:
        self._source = source

    async def next(self, *types: str, within: float = 10.0) -> ServerSentEvent:
        with anyio.fail_after(within):
            async for event in self._source:
                if not types or event.event in types:
                    return event
        raise AssertionError(f"the stream ended before any of {types}")


@contextlib.asynccontextmanager
async def events(http: httpx.AsyncClient, *, last_event_id: str | None = None) -> AsyncIterator[Events]:
    """An SSE stream of PROJECT; yields once the server has subscribed (after the ``connected`` comment)."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with aconnect_sse(http, "GET", "/events", params={"projectId": PROJECT}, headers=headers) as source:
        assert source.response.status_code == 200
        stream = Events(source.aiter_sse())
        if last_event_id is None:
            await stream.next("status:update")  # the connect snapshot: the subscription is in place
        yield stream


def deploy_handler(
    executions: list[str], *, delay: float = 0.0, finish_after: float | None = None
) -> ActionHandler:
    """A deploy override that records each execution in ``executions`` (shared across instances)."""

    async def deploy(request: ActionRequest, conn: ProviderConnection, ctx: ActionContext) -> ActionOutcome:
        executions.append(ctx.operation_id)
        if delay:
            await anyio.sleep(delay)  # keeps the first execution in flight while the others arrive
        if finish_after is None:
            return ActionOutcome(operation_id=ctx.operation_id, changes_state=False)
        base = {"provider": "vercel", "projectId": request.project_id, "operationId": ctx.operation_id}
        await ctx.publish({"type": "deploy:started", **base, "ts": 1})

        async def finish() -> None:
            await anyio.sleep(finish_after)
            await ctx.publish({"type": "deploy:finished", **base, "success": True, "ts": 2})

        ctx.spawn(finish)
        return ActionOutcome(operation_id=ctx.operation_id, done=False, changes_state=False)

    return deploy


# --- actions ------------------------------------------------------------------------------------------------


async def test_one_idempotency_key_on_both_instances_runs_once(prefix: str) -> None:
    """25 concurrent requests with one Idempotency-Key to each instance run the action exactly once."""
    executions: list[str] = []
    handlers = {("vercel", "deploy"): deploy_handler(executions, delay=0.3)}
    async with (
        instances(prefix, REDIS_URL, REDIS_URL, handlers=handlers) as (a, b),
        client(a.base) as ca,
        client(b.base) as cb,
    ):
        headers = {"Idempotency-Key": "deploy-once"}
        calls = [(lambda c=c: c.post("/actions", json=DEPLOY, headers=headers)) for c in [ca, cb] * 25]
        responses = await gather(*calls)
        later = await cb.post("/actions", json=DEPLOY, headers=headers)
    assert len(executions) == 1
    first = [r for r in responses if r.status_code == 200 and "idempotent-replayed" not in r.headers]
    assert len(first) == 1
    operation = first[0].json()["operationId"]
    assert operation == executions[0]
    for r in responses:
        if r is first[0]:
            continue
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "idempotency_conflict"
        else:
            assert (r.status_code, r.headers.get("idempotent-replayed")) == (200, "true")
            assert r.json()["operationId"] == operation
    assert (later.status_code, later.headers.get("idempotent-replayed")) == (200, "true")
    assert later.json()["operationId"] == operation


async def test_rate_limit_holds_across_instances(prefix: str) -> None:
    """50 concurrent distinct keys for one user and project, spread over both instances: exactly 5 run."""
    executions: list[str] = []
    handlers = {("vercel", "deploy"): deploy_handler(executions)}
    async with (
        instances(prefix, REDIS_URL, REDIS_URL, handlers=handlers) as (a, b),
        client(a.base) as ca,
        client(b.base) as cb,
    ):
        calls = [
            (lambda c=c, i=i: c.post("/actions", json=DEPLOY, headers={"Idempotency-Key": f"k-{i}"}))
            for i, c in enumerate([ca, cb] * 25)
        ]
        responses = await gather(*calls)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429] * 45
    assert len(executions) == 5
    for r in responses:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited"
            assert int(r.headers["Retry-After"]) >= 1


# --- events -------------------------------------------------------------------------------------------------


async def test_action_on_a_reaches_an_event_stream_on_b(prefix: str) -> None:
    """A deploy run on instance A shows deploy:started and deploy:finished on an SSE stream served by B."""
    executions: list[str] = []
    handlers = {("vercel", "deploy"): deploy_handler(executions, finish_after=0.1)}
    async with (
        instances(prefix, REDIS_URL, REDIS_URL, handlers=handlers) as (a, b),
        client(a.base) as ca,
        client(b.base) as cb,
        events(cb) as stream,
    ):
        r = await ca.post("/actions", json=DEPLOY, headers={"Idempotency-Key": "deploy-events"})
        assert r.status_code == 202
        operation = r.json()["operationId"]
        started = await stream.next("deploy:started", "deploy:finished")
        finished = await stream.next("deploy:started", "deploy:finished")
    assert [started.event, finished.event] == ["deploy:started", "deploy:finished"]
    assert json.loads(started.data)["operationId"] == json.loads(finished.data)["operationId"] == operation
    assert json.loads(finished.data)["success"] is True
    assert executions == [operation]


def push_event(sha: str) -> dict[str, Any]:
    return {"type": "github:push", "projectId": PROJECT, "branch": "main", "sha": sha, "ts": 1}


async def test_reconnecting_to_the_other_instance_misses_nothing(prefix: str) -> None:
    """A client leaving A and resuming on B with Last-Event-ID gets every event published meanwhile."""
    async with (
        instances(prefix, REDIS_URL, REDIS_URL) as (a, b),
        client(a.base) as ca,
        client(b.base) as cb,
    ):
        async with events(ca) as stream:
            first_id = await a.service.publish(PROJECT, push_event("sha-1"))
            seen = await stream.next("github:push")
            assert (seen.id, json.loads(seen.data)["sha"]) == (first_id, "sha-1")
        # Disconnected: both instances publish.
        missed = [
            (await a.service.publish(PROJECT, push_event("sha-2")), "sha-2"),
            (await b.service.publish(PROJECT, push_event("sha-3")), "sha-3"),
        ]
        async with events(cb, last_event_id=seen.id) as resumed:
            replayed = [await resumed.next() for _ in missed]
            live_id = await a.service.publish(PROJECT, push_event("sha-4"))
            live = await resumed.next("github:push")
    # No snapshot first (the id was still in the stream): exactly the missed events, in order, same ids.
    assert [(e.event, e.id, json.loads(e.data)["sha"]) for e in replayed] == [
        ("github:push", i, sha) for i, sha in missed
    ]
    assert (live.id, json.loads(live.data)["sha"]) == (live_id, "sha-4")


# --- status -------------------------------------------------------------------------------------------------


def slow_adapter(provider: ProviderKey) -> ScriptedAdapter:
    async def answer() -> ProviderSnapshot:
        await anyio.sleep(0.2)  # long enough for the cold requests to overlap
        return snapshot(provider, text=f"{provider} ok")

    return ScriptedAdapter(provider, answer)


async def test_cold_status_makes_one_provider_call_per_provider(prefix: str) -> None:
    """100 concurrent cold status requests over both instances make one provider call per provider in all."""
    async with (
        instances(prefix, REDIS_URL, REDIS_URL, adapter=slow_adapter) as (a, b),
        client(a.base) as ca,
        client(b.base) as cb,
    ):
        calls = [(lambda c=c: c.get("/status", params={"projectId": PROJECT})) for c in [ca, cb] * 50]
        responses = await gather(*calls)
        settled = await cb.get("/status", params={"projectId": PROJECT})
        calls_per_provider = {p: a.adapters[p].calls + b.adapters[p].calls for p in PROVIDERS}
    assert [r.status_code for r in responses] == [200] * 100
    assert all(len(r.json()["items"]) == 4 for r in responses)
    assert calls_per_provider == dict.fromkeys(PROVIDERS, 1)
    items = {i["key"]: i for i in settled.json()["items"]}
    assert {k: (i["summary"], i.get("stale", False)) for k, i in items.items()} == {
        p: (f"{p} ok", False) for p in PROVIDERS
    }


def summaries(response: httpx.Response) -> dict[str, tuple[str, bool]]:
    return {i["key"]: (i["summary"], i.get("stale", False)) for i in response.json()["items"]}


async def test_redis_going_away_keeps_status_and_fails_actions_closed(prefix: str) -> None:
    """Redis cut: status serves the local copy (200); actions answer 503 and run once, after Redis is back."""
    executions: list[str] = []
    handlers = {("vercel", "deploy"): deploy_handler(executions)}
    settings = Settings(cache_ttl=1.0, cache_jitter=0.0)
    proxy = RedisProxy()
    key = {"Idempotency-Key": "while-down"}
    try:
        async with (
            instances(prefix, proxy.url, handlers=handlers, settings=settings) as (a,),
            client(a.base) as ca,
        ):
            warm = await ca.get("/status", params={"projectId": PROJECT})
            proxy.cut()
            during = await ca.get("/status", params={"projectId": PROJECT})
            await anyio.sleep(1.1)  # past the TTL: a refresh would need the store
            stale = await ca.get("/status", params={"projectId": PROJECT})
            refused = await ca.post("/actions", json=DEPLOY, headers=key)
            ran_while_down = len(executions)
            proxy.restore()
            ran = await ca.post("/actions", json=DEPLOY, headers=key)
            again = await ca.post("/actions", json=DEPLOY, headers=key)
    finally:
        proxy.cut()
    assert summaries(warm) == dict.fromkeys(PROVIDERS, ("OK", False))
    assert (during.status_code, summaries(during)) == (200, dict.fromkeys(PROVIDERS, ("OK", False)))
    assert (stale.status_code, summaries(stale)) == (200, dict.fromkeys(PROVIDERS, ("OK", True)))
    assert refused.status_code == 503
    error = refused.json()
    assert error["success"] is False
    assert error["error"]["code"] == "unknown"
    assert "unavailable" in error["error"]["message"]
    assert str(proxy.port) not in refused.text  # no infrastructure details for the client
    assert ran_while_down == 0
    assert (ran.status_code, ran.headers.get("idempotent-replayed")) == (200, None)
    assert again.headers["idempotent-replayed"] == "true"
    assert len(executions) == 1


# --- webhooks -----------------------------------------------------------------------------------------------


def github_push(sha: str, delivery: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"ref": "refs/heads/main", "after": sha, "repository": {"full_name": "acme/storefront"}}
    ).encode()
    headers = {
        **sign_github(WEBHOOK_SECRET, body),
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "Content-Type": "application/json",
    }
    return body, headers


async def test_webhook_on_a_reaches_b_and_a_replay_on_b_is_a_duplicate(prefix: str) -> None:
    """A signed GitHub push sent to A is a github:push on B's stream; redelivered to B it is a duplicate."""
    async with (
        instances(prefix, REDIS_URL, REDIS_URL) as (a, b),
        client(a.base) as ca,
        client(b.base) as cb,
        events(cb) as stream,
    ):
        body, headers = github_push("a" * 40, "delivery-1")
        accepted = await ca.post("/webhooks/github", content=body, headers=headers)
        pushed = await stream.next("github:push")
        duplicate = await cb.post("/webhooks/github", content=body, headers=headers)
        body2, headers2 = github_push("b" * 40, "delivery-2")
        second = await cb.post("/webhooks/github", content=body2, headers=headers2)
        following = await stream.next("github:push")
    assert (accepted.status_code, accepted.json()) == (200, {"ok": True})
    assert json.loads(pushed.data)["sha"] == "a" * 40
    assert (duplicate.status_code, duplicate.json()) == (200, {"ok": True, "duplicate": True})
    assert (second.status_code, second.json()) == (200, {"ok": True})
    # Stream order: had the duplicate been published, it would come before the second delivery's event.
    assert json.loads(following.data)["sha"] == "b" * 40


# --- faults of the Redis connection -------------------------------------------------------------------------

LOOPS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
]


@pytest.mark.parametrize("anyio_backend", LOOPS)
async def test_after_a_redis_reset_nothing_answers_5xx_but_documented_503s(prefix: str) -> None:
    """Right after every pooled Redis connection is reset: 100 status requests all answer 200, and actions
    answer 200 or the documented 503 (error object), on the asyncio loop and on uvloop alike."""
    executions: list[str] = []
    handlers = {("vercel", "deploy"): deploy_handler(executions)}
    proxy = RedisProxy()
    try:
        async with instances(prefix, proxy.url, handlers=handlers) as (a,), client(a.base) as ca:
            # Warm, with many pooled connections open (concurrent requests each take one).
            await gather(*[(lambda: ca.get("/status", params={"projectId": PROJECT}))] * 50)
            proxy.reset()
            await anyio.sleep(0.05)  # let the loop see the resets before the next requests reuse the sockets
            status = [(lambda: ca.get("/status", params={"projectId": PROJECT}))] * 100
            actions = [
                # One user each: the per-user rate limit is not what this test is about.
                (
                    lambda n=n: ca.post(
                        "/actions", json=DEPLOY, headers={"Idempotency-Key": "k", "X-User": f"u{n}"}
                    )
                )
                for n in range(20)
            ]
            responses = await gather(*status, *actions)
    finally:
        proxy.cut()
    assert [r.status_code for r in responses[:100]] == [200] * 100
    for response in responses[100:]:
        assert response.status_code in (200, 503), response.text
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "unknown"


async def test_event_stream_while_redis_is_down_is_a_503_with_a_retry_hint(prefix: str) -> None:
    """With Redis unreachable, /events answers 503 with the error object and Retry-After before any stream
    starts (no 200 that breaks); once Redis is back the stream opens."""
    proxy = RedisProxy()
    try:
        async with instances(prefix, proxy.url) as (a,), client(a.base) as ca:
            proxy.cut()
            refused = await ca.get("/events", params={"projectId": PROJECT})
            proxy.restore()
            async with events(ca) as stream:
                assert stream is not None
    finally:
        proxy.cut()
    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"] == {
        "code": "unknown",
        "message": "The shared store is unavailable",
        "hint": "Try again",
    }
    assert str(proxy.port) not in refused.text


async def status_under_load(http: httpx.AsyncClient, *, clients: int, each: int) -> list[tuple[int, float]]:
    """``clients`` concurrent pollers, ``each`` status requests apiece: (status code, seconds) per answer."""
    answers: list[tuple[int, float]] = []

    async def poll() -> None:
        for _ in range(each):
            began = time.perf_counter()
            response = await http.get("/status", params={"projectId": PROJECT})
            answers.append((response.status_code, time.perf_counter() - began))
            await anyio.sleep(0.2)  # paced: the run outlasts the channel's silence timeout

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(clients):
                tg.start_soon(poll)
    return answers


def p95(answers: list[tuple[int, float]]) -> float:
    took = sorted(t for _, t in answers)
    return took[int(len(took) * 0.95) - 1]


@pytest.mark.parametrize("fault", ["hung", "slow"])
async def test_status_stays_within_the_deadline_while_redis_hangs_or_lags(prefix: str, fault: str) -> None:
    """Redis that accepts and never answers, or answers 300 ms late: every status answer is a 200 with p95
    under 500 ms (entries past their TTL come from the worker's copy), actions fail closed with a 503 within
    their own timeout and run nothing, and once Redis answers again status recovers without a restart."""
    executions: list[str] = []
    handlers = {("vercel", "deploy"): deploy_handler(executions)}
    settings = Settings(cache_ttl=1.0, cache_jitter=0.0)
    proxy = RedisProxy()
    try:
        async with (
            instances(prefix, proxy.url, handlers=handlers, settings=settings) as (a,),
            client(a.base) as ca,
        ):
            await ca.get("/status", params={"projectId": PROJECT})
            if fault == "hung":
                proxy.hung = True
            else:
                proxy.latency = 0.3
            # Long enough for the entries to pass their TTL and for the channel to be taken as lost.
            answers = await status_under_load(ca, clients=10, each=25)
            began = time.perf_counter()
            action = await ca.post("/actions", json=DEPLOY, headers={"Idempotency-Key": "during-fault"})
            action_took = time.perf_counter() - began
            proxy.hung, proxy.latency = False, 0.0
            recovered: list[dict[str, tuple[str, bool]]] = []

            async def look() -> None:
                recovered.append(summaries(await ca.get("/status", params={"projectId": PROJECT})))

            await wait_until(
                lambda: bool(recovered) and recovered[-1] == dict.fromkeys(PROVIDERS, ("OK", False)),
                step=look,
                within=15,
            )
    finally:
        proxy.cut()
    assert {code for code, _ in answers} == {200}
    assert p95(answers) < 0.5, sorted(t for _, t in answers)[-10:]
    if fault == "hung":
        assert action.status_code == 503
        assert action.json()["error"]["code"] == "unknown"
        assert action_took < 3.0  # the store's socket timeout (1 s), not the server's patience
        assert executions == []
    else:
        assert action.status_code == 200  # slow, not down: the action runs, once
        assert len(executions) == 1
