"""The OpenAPI 3.1 document: it validates, it is cached without being shared, and it describes what the
Starlette mount really answers (bodies against the documented schemas, documented headers present)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from integration_status.core.idempotency import parse_idempotency_key
from integration_status.exceptions import InvalidRequest
from integration_status.models import EVENT_TYPES
from integration_status.protocols import (
    ActionContext,
    ActionOutcome,
    ActionRequest,
    ProviderConnection,
    RequestInfo,
    Secret,
    Viewer,
)
from integration_status.service import StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.service.render import validate_project_id
from integration_status.service.webhooks import WebhookTarget, sign_github
from integration_status.snapshot import PROVIDER_ACTIONS
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections, snapshot
from integration_status.web.openapi import ERROR_CODES, openapi_document, openapi_json
from integration_status.web.starlette import create_app

PREFIX = "/api/integrations"
DOC = openapi_document(prefix=PREFIX)
REGISTRY = Registry().with_resource(
    "urn:openapi", Resource.from_contents(DOC, default_specification=DRAFT202012)
)
SECRET = "whsec-openapi"
PUSH = {
    "ref": "refs/heads/main",
    "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    "repository": {"full_name": "octocat/Hello-World", "name": "Hello-World", "owner": {"login": "octocat"}},
}


def validator(pointer: str) -> Draft202012Validator:
    """A validator for the schema at ``pointer`` inside the document, with its $refs resolved."""
    return Draft202012Validator({"$ref": f"urn:openapi#{pointer}"}, registry=REGISTRY)


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def check(response: httpx.Response, method: str, template: str) -> dict[str, Any]:
    """Assert ``response`` is documented: its status, required headers, header values and JSON body."""
    operation = DOC["paths"][template][method]
    documented = operation["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method.upper()} {template} answered an undocumented {status}"
    spec = documented[status]
    for name, ref in spec.get("headers", {}).items():
        header = DOC["components"]["headers"][ref["$ref"].rsplit("/", 1)[1]]
        value = response.headers.get(name)
        if header["required"]:
            assert value is not None, f"{name} missing from {status}"
        if value is not None:
            errors = list(Draft202012Validator(header["schema"]).iter_errors(value))
            assert not errors, f"{name}: {value!r}: {errors[0].message}"
    if "content" not in spec:
        assert response.content == b""
        return spec
    assert "application/json" in spec["content"]
    assert response.headers["content-type"].startswith("application/json")
    pointer = f"/paths/{_escape(template)}/{method}/responses/{status}/content/application~1json/schema"
    errors = list(validator(pointer).iter_errors(response.json()))
    assert not errors, f"{status} body {response.json()}: {errors[0].message}"
    return spec


# --- the document -------------------------------------------------------------------------------------------


def test_document_is_valid_openapi_31() -> None:
    """The document validates against the OpenAPI 3.1 specification schema."""
    OpenAPIV31SpecValidator(DOC).validate()
    assert DOC["openapi"] == "3.1.0"


def test_every_component_schema_is_valid_json_schema() -> None:
    """Each component schema is itself valid JSON Schema 2020-12."""
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_callers_cannot_change_the_cached_document() -> None:
    """Each call returns a fresh copy: changing one leaves the next call and the cached bytes alone."""
    first = openapi_document()
    first["paths"].clear()
    first["components"]["schemas"]["Error"]["properties"]["code"]["enum"].append("nope")
    second = openapi_document()
    assert second is not first
    assert len(second["paths"]) == 6
    assert "nope" not in second["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
    assert openapi_json(prefix=PREFIX) is openapi_json(prefix=PREFIX)


@pytest.mark.parametrize("prefix", ["", "/x", "/x/"])
def test_prefix_sets_the_paths(prefix: str) -> None:
    """Paths are the prefix (without a trailing slash) followed by each endpoint."""
    root = prefix.rstrip("/")
    assert set(openapi_document(prefix=prefix)["paths"]) == {
        f"{root}/status",
        f"{root}/actions",
        f"{root}/events",
        f"{root}/webhooks/{{provider}}",
        f"{root}/health",
        f"{root}/openapi.json",
    }


def test_documents_the_contract_headers_codes_and_events() -> None:
    """Every wire header, every error code and every event type is documented."""
    components = DOC["components"]
    names = set(components["headers"]) | {p["name"] for p in components["parameters"].values()}
    assert names >= {
        "ETag",
        "If-None-Match",
        "Cache-Control",
        "Idempotency-Key",
        "Idempotent-Replayed",
        "Retry-After",
        "RateLimit",
        "RateLimit-Policy",
        "Last-Event-ID",
        "X-Accel-Buffering",
    }
    assert components["schemas"]["Error"]["properties"]["code"]["enum"] == list(ERROR_CODES)
    assert set(components["schemas"]["IntegrationEvent"]["discriminator"]["mapping"]) == set(EVENT_TYPES)


def test_optional_fields_are_never_nullable() -> None:
    """No schema admits null: optional fields are omitted instead."""
    text = json.dumps(DOC)
    assert '"null"' not in text
    assert '"nullable"' not in text


def test_documented_schemas_reject_null_for_optional_fields() -> None:
    """An item with summary: null does not validate (the wire omits it)."""
    item = {"key": "github", "status": "connected", "updatedAt": "2026-11-26T06:00:00Z"}
    check_item = validator("/components/schemas/IntegrationStatus")
    assert check_item.is_valid(item)
    assert not check_item.is_valid({**item, "summary": None})


# --- against real responses ---------------------------------------------------------------------------------


async def header_auth(request: RequestInfo) -> Viewer | None:
    role = request.headers.get("x-role")
    return None if not role else Viewer(user_id="u1", roles={role})


async def owners_only(viewer: Viewer) -> bool:
    return "owner" in viewer.roles


async def resolve(provider: str, headers: Mapping[str, str], payload: Any) -> WebhookTarget | None:
    if provider == "github" and payload.get("repository", {}).get("full_name") == "octocat/Hello-World":
        return WebhookTarget(project_id="p", secret=Secret(SECRET))
    return None


class World:
    def __init__(self) -> None:
        self.gate = anyio.Event()
        self.started = anyio.Event()

    async def sync(self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext) -> Any:
        return ActionOutcome(operation_id=ctx.operation_id, changes_state=False)

    async def pull(self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext) -> Any:
        self.started.set()
        await self.gate.wait()
        return ActionOutcome(operation_id=ctx.operation_id, changes_state=False)

    async def connect(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> Any:
        url = "https://example.invalid/oauth"
        return ActionOutcome(operation_id=ctx.operation_id, data={"url": url}, changes_state=False)

    async def deploy(self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext) -> Any:
        return ActionOutcome(operation_id=ctx.operation_id, done=False, changes_state=False)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[httpx.AsyncClient, StatusService, World]]:
    world = World()
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", "github", "vercel"),
        adapters=[
            ScriptedAdapter(
                "github",
                snapshot("github"),
                handlers={"sync": world.sync, "pull": world.pull, "connect": world.connect},
            ),
            ScriptedAdapter("vercel", snapshot("vercel"), handlers={"deploy": world.deploy}),
        ],
        authenticator=header_auth,
        health_authorizer=owners_only,
        webhooks=resolve,
        clock=FakeClock(),
        # sanity is not linked: connecting it is what connect is for
        action_handlers={("sanity", "connect"): world.connect},
    )
    async with service:
        transport = httpx.ASGITransport(app=create_app(service, lifespan=False))
        async with httpx.AsyncClient(transport=transport, base_url=f"http://test{PREFIX}") as client:
            client.headers["X-Role"] = "owner"
            yield client, service, world


Setup = tuple[httpx.AsyncClient, StatusService, World]


@pytest.mark.anyio
async def test_status_responses_match_the_document(setup: Setup) -> None:
    """200, 304, 400, 401 and 404 of GET /status match their documented schemas and headers."""
    client, _, _ = setup
    template = f"{PREFIX}/status"
    ok = await client.get("/status", params={"projectId": "p"})
    assert ok.status_code == 200
    check(ok, "get", template)
    not_modified = await client.get(
        "/status", params={"projectId": "p"}, headers={"If-None-Match": ok.headers["etag"]}
    )
    assert not_modified.status_code == 304
    check(not_modified, "get", template)
    for params, headers, status in [
        ({}, {}, 400),
        ({"projectId": "p"}, {"X-Role": ""}, 401),
        ({"projectId": "nope"}, {}, 404),
    ]:
        r = await client.get("/status", params=params, headers=headers)
        assert r.status_code == status
        check(r, "get", template)


@pytest.mark.anyio
async def test_action_responses_match_the_document(setup: Setup) -> None:
    """200, 202, replays, 400, 401, 403, 404, 409, 422 and 429 of POST /actions match the document."""
    client, _, world = setup
    template = f"{PREFIX}/actions"

    async def act(
        key: str | None, action: str = "sync", provider: str = "github", **kw: Any
    ) -> httpx.Response:
        headers = {} if key is None else {"Idempotency-Key": key}
        headers.update(kw.pop("headers", {}))
        body = {"projectId": kw.pop("project", "p"), "provider": provider, "action": action, **kw}
        return await client.post("/actions", json=body, headers=headers)

    seen: dict[int, httpx.Response] = {}
    for r in [
        await act("a1"),
        await act("a2", "connect", "sanity"),
        await act("a3", "deploy", "vercel"),
        await act(None),
        await act("a4", headers={"X-Role": ""}),
        await act("a5", headers={"X-Role": "viewer"}),
        await act("a6", project="nope"),
    ]:
        seen[r.status_code] = r
        check(r, "post", template)
    assert set(seen) == {200, 202, 400, 401, 403, 404}
    assert (await act("a2", "connect", "sanity")).json()["url"] == "https://example.invalid/oauth"

    replay = await act("a1")
    assert replay.headers["idempotent-replayed"] == "true"
    check(replay, "post", template)

    async with anyio.create_task_group() as tg:
        tg.start_soon(act, "slow", "pull")
        await world.started.wait()
        conflict = await act("slow", "pull")
        world.gate.set()
    assert conflict.status_code == 409
    check(conflict, "post", template)
    mismatch = await act("slow", "pull", payload={"x": 1})
    assert mismatch.status_code == 422
    check(mismatch, "post", template)

    # a1, a2, a3 and slow took four of the five slots; replays and refusals took none.
    assert (await act("fifth")).status_code == 200
    limited = await act("over")
    assert limited.status_code == 429
    check(limited, "post", template)
    assert limited.headers["retry-after"] == str(limited.json()["error"]["retryAfter"])


@pytest.mark.anyio
async def test_webhook_and_openapi_responses_match_the_document(setup: Setup) -> None:
    """Webhook 200/401/404 and openapi.json 200 match the document."""
    client, _, _ = setup
    template = f"{PREFIX}/webhooks/{{provider}}"
    body = json.dumps(PUSH).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d1", "Content-Type": "application/json"}
    accepted = await client.post(
        "/webhooks/github", content=body, headers={**headers, **sign_github(SECRET, body)}
    )
    assert accepted.status_code == 200
    check(accepted, "post", template)
    forged = await client.post(
        "/webhooks/github", content=body, headers={**headers, **sign_github("x", body)}
    )
    assert forged.status_code == 401
    check(forged, "post", template)
    unknown = await client.post("/webhooks/gitlab", content=body, headers=headers)
    assert unknown.status_code == 404
    check(unknown, "post", template)
    document = await client.get("/openapi.json")
    check(document, "get", f"{PREFIX}/openapi.json")
    assert document.json() == DOC


@pytest.mark.anyio
async def test_health_responses_match_the_document(setup: Setup) -> None:
    """GET /health (before and after traffic) matches the documented HealthReport."""
    client, _, _ = setup
    quiet = await client.get("/health")
    check(quiet, "get", f"{PREFIX}/health")
    for _ in range(3):
        await client.get("/status", params={"projectId": "p"})
    busy = await client.get("/health")
    assert busy.status_code in (200, 503)
    check(busy, "get", f"{PREFIX}/health")
    assert all(c.get("observed") is not None or "observed" not in c for c in busy.json()["checks"])
    liveness = await client.get("/health", headers={"X-Role": "member"})
    check(liveness, "get", f"{PREFIX}/health")
    assert liveness.json() == {"status": "ok"}


async def sse_frames(app: Any, query: bytes, count: int) -> tuple[int, dict[str, str], list[dict[str, str]]]:
    """Call the ASGI app for GET /events, collect ``count`` data frames, then disconnect."""
    enough = anyio.Event()
    start: dict[str, Any] = {}
    buffer = b""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"{PREFIX}/events",
        "raw_path": f"{PREFIX}/events".encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"test"), (b"x-role", b"owner")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }

    async def receive() -> dict[str, Any]:
        await enough.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal buffer
        if message["type"] == "http.response.start":
            start.update(message)
            return
        buffer += message.get("body", b"")
        if buffer.count(b"\ndata: ") >= count:
            enough.set()

    with anyio.fail_after(5):
        await app(scope, receive, send)
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    frames = []
    for block in buffer.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "data" in fields:
            frames.append(fields)
    return start["status"], headers, frames


@pytest.mark.anyio
async def test_event_stream_matches_the_document(setup: Setup) -> None:
    """The stream's headers and every event type it carries match the documented event schemas."""
    _, service, _ = setup
    app = create_app(service, lifespan=False)
    base = {"projectId": "p", "ts": 1}
    first = await service.publish("p", {"type": "github:push", "branch": "main", "sha": "a" * 40, **base})
    await service.publish(
        "p", {"type": "deploy:started", "provider": "vercel", "operationId": "op_1", **base}
    )
    await service.publish(
        "p",
        {"type": "deploy:finished", "provider": "vercel", "success": True, "url": "https://x.test", **base},
    )
    await service.publish("p", {"type": "sanity:webhook", "count": 2, **base})
    await service.publish("p", {"type": "github:push", "branch": "dev", "sha": "b" * 40, **base})

    status, headers, snapshot_frames = await sse_frames(app, b"projectId=p", 1)
    status2, _, replayed = await sse_frames(app, b"projectId=p&lastEventId=" + first.encode(), 4)

    operation = DOC["paths"][f"{PREFIX}/events"]["get"]
    spec = operation["responses"]["200"]
    assert status == status2 == 200
    assert headers["content-type"].startswith("text/event-stream")
    for name in spec["headers"]:
        assert name.lower() in headers
    assert "connection" not in headers
    event_schema = validator("/components/schemas/IntegrationEvent")
    frame_schema = validator("/components/schemas/EventStreamFrame")
    kinds = []
    for frame in snapshot_frames + replayed:
        errors = list(frame_schema.iter_errors(frame))
        assert not errors, f"{frame}: {errors[0].message}"
        data = json.loads(frame["data"])
        errors = list(event_schema.iter_errors(data))
        assert not errors, f"{data}: {errors[0].message}"
        assert frame["event"] == data["type"]
        kinds.append(data["type"])
    assert set(kinds) == {
        "status:update",
        "deploy:started",
        "deploy:finished",
        "sanity:webhook",
        "github:push",
    }
    media = spec["content"]["text/event-stream"]
    assert media["schema"] == media["x-itemSchema"] == {"$ref": "#/components/schemas/EventStreamFrame"}


@pytest.mark.anyio
async def test_event_stream_errors_match_the_document(setup: Setup) -> None:
    """GET /events answers documented 400/401/404 bodies before any stream starts."""
    client, _, _ = setup
    for params, headers, status in [
        ({}, {}, 400),
        ({"projectId": "p"}, {"X-Role": ""}, 401),
        ({"projectId": "x"}, {}, 404),
    ]:
        r = await client.get("/events", params=params, headers=headers)
        assert r.status_code == status
        check(r, "get", f"{PREFIX}/events")


# --- the request rules, as the server applies them -----------------------------------------------------------

KEY_PATTERN = re.compile(DOC["components"]["parameters"]["Idempotency-Key"]["schema"]["pattern"])
PROJECT_ID_PATTERN = re.compile(DOC["components"]["parameters"]["projectId"]["schema"]["pattern"])


def _key_accepted(value: str) -> bool:
    try:
        parse_idempotency_key(value)
    except InvalidRequest:
        return False
    return True


@given(
    st.one_of(
        st.text(st.characters(min_codepoint=0x1F, max_codepoint=0x80), max_size=300),
        st.from_regex(KEY_PATTERN, fullmatch=True),
        st.from_regex(r'"[ -~]{0,300}"', fullmatch=True),
    )
)
def test_idempotency_key_pattern_is_the_servers_rule(value: str) -> None:
    """The documented Idempotency-Key pattern matches exactly the keys the server accepts (surrounding spaces
    are HTTP's optional whitespace, stripped before either applies)."""
    assume(value == value.strip(" \t"))
    assert bool(KEY_PATTERN.fullmatch(value)) == _key_accepted(value)
    assert len(value) <= DOC["components"]["parameters"]["Idempotency-Key"]["schema"]["maxLength"] or not (
        _key_accepted(value)
    )


@given(st.text(min_size=1, max_size=20))
def test_project_id_pattern_admits_every_accepted_id(value: str) -> None:
    """Every projectId the server accepts matches the documented pattern; the controls it excludes are refused."""
    try:
        validate_project_id(value)
    except InvalidRequest:
        accepted = False
    else:
        accepted = True
    if accepted:
        assert PROJECT_ID_PATTERN.fullmatch(value)
    if not PROJECT_ID_PATTERN.fullmatch(value):
        assert not accepted


def test_action_request_lists_each_providers_actions() -> None:
    """ActionRequest admits exactly the action ids of the named provider (any other is the server's 400)."""
    check_request = validator("/components/schemas/ActionRequest")
    every = {action for actions in PROVIDER_ACTIONS.values() for action, _ in actions}
    for provider, actions in PROVIDER_ACTIONS.items():
        own = {action for action, _ in actions}
        for action in every | {"launch-rockets"}:
            body = {"projectId": "p", "provider": provider, "action": action}
            assert check_request.is_valid(body) == (action in own), (provider, action)


@pytest.mark.anyio
async def test_refused_stream_frame_matches_the_document(setup: Setup) -> None:
    """Over the connection cap, the single `overloaded` frame with its retry delay is a documented frame."""
    _, service, _ = setup
    app = create_app(service, lifespan=False)
    while service.sse_connections.acquire("u1"):  # the viewer of header_auth
        pass
    status, _, frames = await sse_frames(app, b"projectId=p", 1)
    assert status == 200
    assert frames == [{"event": "overloaded", "retry": "30000", "data": "too many connections"}]
    refusal = {"event": "overloaded", "retry": 30000, "data": frames[0]["data"]}
    errors = list(validator("/components/schemas/EventStreamFrame").iter_errors(refusal))
    assert not errors, errors[0].message
