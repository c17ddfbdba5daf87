"""The Flask extension on a real threaded werkzeug server on loopback: every endpoint, the portal's lifecycle,
streaming and disconnects, and the body caps.

Requests go through a real socket, so a few tests poll the server for a bounded time (``wait_for``) instead
of sleeping; the service itself runs on a FakeClock that only moves through the extension's portal.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
import httpx
import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from integration_status.exceptions import ConfigurationError
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
from integration_status.service.webhooks import WebhookTarget, sign_github
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections, snapshot
from integration_status.web.flask import IntegrationStatus
from tests.web.mounts import HEARTBEATS_TO_NOTICE, ResponseProgress

PREFIX = "/api/integrations"
SECRET = "whsec-flask-test"
PUSH = {
    "ref": "refs/heads/main",
    "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    "repository": {"full_name": "octocat/Hello-World", "name": "Hello-World", "owner": {"login": "octocat"}},
}


async def header_auth(request: RequestInfo) -> Viewer | None:
    """Test authentication: X-Role (absent -> anonymous), X-User."""
    role = request.headers.get("x-role")
    if not role:
        return None
    return Viewer(user_id=request.headers.get("x-user", "u1"), roles={role})


async def resolve(provider: str, headers: Mapping[str, str], payload: Any) -> WebhookTarget | None:
    if provider == "github" and payload.get("repository", {}).get("full_name") == "octocat/Hello-World":
        return WebhookTarget(project_id="p", secret=Secret(SECRET))
    return None


class Gate:
    """An action handler that runs until the test opens the gate (through the portal)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = anyio.Event()
        self.runs = 0

    async def __call__(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> Any:
        self.runs += 1
        self.started.set()
        await self.opened.wait()
        return ActionOutcome(operation_id=ctx.operation_id, changes_state=False)


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.sync_runs = 0
        self.gate = Gate()

        async def sync(request: ActionRequest, connection: ProviderConnection, ctx: ActionContext) -> Any:
            self.sync_runs += 1
            return ActionOutcome(operation_id=ctx.operation_id, changes_state=False)

        adapter = ScriptedAdapter("github", snapshot("github"), handlers={"sync": sync, "pull": self.gate})
        self.service = StatusService(
            authorizer=allow_global_roles,
            connections=StaticConnections.linked("p", "github"),
            adapters=[adapter],
            authenticator=header_auth,
            webhooks=resolve,
            clock=self.clock,
        )
        self.app = Flask(__name__)
        self.ext = IntegrationStatus(self.app, service=self.service)
        self.progress = ResponseProgress(self.app.wsgi_app)
        self.app.wsgi_app = self.progress  # type: ignore[method-assign]
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.base = f"http://127.0.0.1:{self.server.server_port}{PREFIX}"
        self.client = httpx.Client(base_url=self.base, headers={"X-Role": "owner"}, timeout=10)

    def advance(self, seconds: float) -> None:
        """Move the fake clock on the service's own event loop."""
        self.ext.portal.call(self.clock.advance, seconds)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    harness.thread.start()
    try:
        yield harness
    finally:
        harness.client.close()
        harness.server.shutdown()
        harness.server.server_close()
        harness.ext.close()


def frames(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Parse an event stream into frames ({'id', 'event', 'data', 'comment'}), comments included."""
    frame: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if frame:
                yield frame
            frame = {}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            frame["comment"] = value
        else:
            frame[name] = frame[name] + "\n" + value if name in frame else value


def first_event(stream: Iterator[dict[str, str]]) -> dict[str, str]:
    return next(f for f in stream if "event" in f)


def act(h: Harness, key: str, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    payload = body if body is not None else {"projectId": "p", "provider": "github", "action": "sync"}
    return h.client.post("/actions", json=payload, headers={"Idempotency-Key": key, **headers})


# --- portal lifecycle ---------------------------------------------------------------------------------------


def test_service_starts_on_first_request_and_stops_on_close(h: Harness) -> None:
    """The portal and the service start lazily on the first request and stop with close()."""
    assert not h.service.running
    assert h.client.get("/status", params={"projectId": "p"}).status_code == 200
    assert h.service.running
    h.ext.close()
    assert not h.service.running
    h.ext.close()  # idempotent


def test_state_and_config_keys() -> None:
    """init_app stores the extension in app.extensions and honours INTEGRATION_STATUS_PREFIX."""
    service = StatusService(
        authorizer=allow_global_roles, connections=StaticConnections.linked("p"), authenticator=header_auth
    )
    ext = IntegrationStatus(service=service)
    app = Flask(__name__)
    app.config["INTEGRATION_STATUS_PREFIX"] = "/x/"
    ext.init_app(app)
    try:
        assert app.extensions["integration_status"] is ext
        client = app.test_client()
        assert client.get("/x/status?projectId=p", headers={"X-Role": "owner"}).status_code == 200
        assert client.get(f"{PREFIX}/status?projectId=p", headers={"X-Role": "owner"}).status_code == 404
        assert "/x/status" in client.get("/x/openapi.json").get_json()["paths"]
    finally:
        ext.close()


def test_eager_start_enters_the_service_in_init_app() -> None:
    """INTEGRATION_STATUS_EAGER_START starts the portal and the service in init_app."""
    service = StatusService(
        authorizer=allow_global_roles, connections=StaticConnections.linked("p"), authenticator=header_auth
    )
    app = Flask(__name__)
    app.config["INTEGRATION_STATUS_EAGER_START"] = True
    ext = IntegrationStatus(app, service=service)
    try:
        assert service.running
    finally:
        ext.close()
    assert not service.running


def test_init_app_without_a_service_is_a_configuration_error() -> None:
    """An extension without a service refuses init_app with a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="needs a service"):
        IntegrationStatus(Flask(__name__))


def test_a_forked_process_refuses_an_inherited_portal(h: Harness) -> None:
    """A process that inherited a started extension (pid changed) refuses to use the parent's dead loop."""
    h.ext.start()
    parent = h.ext._pid
    h.ext._pid = -1  # what a fork looks like to the extension
    try:
        with pytest.raises(ConfigurationError, match="forked"):
            h.ext.portal  # noqa: B018
    finally:
        h.ext._pid = parent


def test_import_without_flask_names_the_extra() -> None:
    """Importing the mount without Flask raises ImportError naming the [flask] extra."""
    code = (
        "import sys; sys.modules['flask'] = None\n"
        "try:\n    import integration_status.web.flask\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'integration-status[flask]'" in out.stdout


# --- status -------------------------------------------------------------------------------------------------


def test_status_200_then_304(h: Harness) -> None:
    """200 carries the envelope, a quoted ETag and no-store; the same ETag back answers 304 with no body."""
    r = h.client.get("/status", params={"projectId": "p"})
    assert r.status_code == 200
    body = r.json()
    assert [i["key"] for i in body["items"]] == ["sanity", "github", "vercel", "supabase"]
    assert r.headers["etag"] == f'"{body["hash"]}"'
    assert r.headers["cache-control"] == "no-store"
    again = h.client.get("/status", params={"projectId": "p"}, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == r.headers["etag"]
    assert again.headers["cache-control"] == "no-store"
    assert "content-length" not in again.headers


@pytest.mark.parametrize(
    ("params", "headers", "status", "code"),
    [
        ({}, {}, 400, "invalid_request"),
        ({"projectId": "p"}, {"X-Role": ""}, 401, "unauthorized"),
        ({"projectId": "nope"}, {"If-None-Match": "*"}, 404, "not_found"),
    ],
)
def test_status_errors(
    h: Harness, params: dict[str, str], headers: dict[str, str], status: int, code: str
) -> None:
    """400/401/404 answer the error object (and win over If-None-Match)."""
    r = h.client.get("/status", params=params, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code


# --- actions ------------------------------------------------------------------------------------------------


def test_action_replay_runs_once(h: Harness) -> None:
    """The same key and body again answers the stored response with Idempotent-Replayed, without running."""
    first = act(h, "k1")
    assert first.status_code == 200
    assert first.json()["success"] is True
    second = act(h, "k1")
    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert h.sync_runs == 1


def test_action_in_flight_is_409_and_mismatch_is_422(h: Harness) -> None:
    """While a key runs, the same key answers 409; once done, a different body under it answers 422."""
    body = {"projectId": "p", "provider": "github", "action": "pull"}
    results: list[httpx.Response] = []
    runner = threading.Thread(target=lambda: results.append(act(h, "slow", body)))
    runner.start()
    assert h.gate.started.wait(5)
    conflict = act(h, "slow", body)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    h.ext.portal.call(h.gate.opened.set)
    runner.join(5)
    assert results[0].status_code == 200
    assert h.gate.runs == 1
    mismatch = act(h, "slow", {**body, "payload": {"force": True}})
    assert mismatch.status_code == 422
    assert mismatch.json()["error"]["code"] == "idempotency_mismatch"


def test_sixth_action_is_429_with_retry_after(h: Harness) -> None:
    """The 6th action in a minute answers 429, Retry-After equal to error.retryAfter, RateLimit headers."""
    for n in range(5):
        assert act(h, f"k{n}").status_code == 200
    r = act(h, "k5")
    assert r.status_code == 429
    body = r.json()
    assert body["success"] is False
    assert body["error"]["code"] == "rate_limited"
    assert r.headers["retry-after"] == str(body["error"]["retryAfter"])
    assert r.headers["ratelimit-policy"] == "5;w=60"
    assert "remaining=0" in r.headers["ratelimit"]


def test_viewer_role_is_403(h: Harness) -> None:
    """A read-only viewer's POST answers 403 forbidden and runs nothing."""
    r = act(h, "k1", **{"X-Role": "viewer"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert h.sync_runs == 0


@pytest.mark.parametrize(
    ("path", "limit", "status"), [("/actions", 64 * 1024, 400), ("/webhooks/github", 1_048_576, 413)]
)
def test_oversized_body_is_refused_after_reading_limit_plus_one(path: str, limit: int, status: int) -> None:
    """Actions and webhooks read at most limit + 1 bytes of a larger body, then refuse it."""
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", "github"),
        authenticator=header_auth,
    )
    app = Flask(__name__)
    ext = IntegrationStatus(app, service=service)
    stream = io.BytesIO(b"{" + b" " * (limit * 3) + b"}")
    try:
        r = app.test_client().post(
            PREFIX + path,
            input_stream=stream,
            content_length=limit * 3 + 2,
            headers={"X-Role": "owner", "Content-Type": "application/json", "Idempotency-Key": "k"},
        )
    finally:
        ext.close()
    assert r.status_code == status
    assert r.get_json()["error"]["code"] == "invalid_request"
    assert stream.tell() == limit + 1  # what the application read of wsgi.input


# --- events -------------------------------------------------------------------------------------------------


def test_events_start_with_a_snapshot_and_stream_headers(h: Harness) -> None:
    """The stream is text/event-stream, no-store, X-Accel-Buffering: no, unsized, opens with a snapshot."""
    with h.client.stream("GET", "/events", params={"projectId": "p"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-accel-buffering"] == "no"
        assert "content-length" not in r.headers
        event = first_event(frames(r))
    assert event["event"] == "status:update"
    data = json.loads(event["data"])
    assert data["projectId"] == "p"
    assert len(data["items"]) == 4


def test_the_mount_sets_no_connection_header() -> None:
    """The streamed response itself carries no Connection header (hop-by-hop, forbidden in HTTP/2)."""
    service = StatusService(
        authorizer=allow_global_roles, connections=StaticConnections.linked("p"), authenticator=header_auth
    )
    app = Flask(__name__)
    ext = IntegrationStatus(app, service=service)
    try:
        r = app.test_client().get(f"{PREFIX}/events?projectId=p", headers={"X-Role": "owner"}, buffered=False)
        assert "Connection" not in r.headers
        r.close()
        assert service.sse_connections.count == 0
    finally:
        ext.close()


def test_last_event_id_replays_later_events(h: Harness) -> None:
    """With Last-Event-ID still buffered, the stream replays the later events instead of a snapshot."""
    h.ext.start()
    push = {"type": "github:push", "projectId": "p", "branch": "main", "sha": "a" * 40, "ts": 1}
    first_id = h.ext.call(h.service.publish, "p", push)
    second_id = h.ext.call(h.service.publish, "p", {**push, "sha": "b" * 40, "ts": 2})
    with h.client.stream(
        "GET", "/events", params={"projectId": "p"}, headers={"Last-Event-ID": first_id}
    ) as r:
        event = first_event(frames(r))
    assert event["event"] == "github:push"
    assert event["id"] == second_id
    assert json.loads(event["data"])["sha"] == "b" * 40


def test_disconnect_releases_the_connection_within_heartbeats(h: Harness) -> None:
    """A client that goes away is noticed at the next heartbeats; its writer is cancelled, its slot freed."""
    with h.client.stream("GET", "/events", params={"projectId": "p"}) as r:
        first_event(frames(r))
        assert h.service.sse_connections.count == 1
    # A WSGI server notices a gone client when a write fails: each heartbeat makes the stream write, and
    # the server thread then asks for the next chunk (the write went through) or closes the response.
    for _ in range(HEARTBEATS_TO_NOTICE):
        if h.service.sse_connections.count == 0:
            break
        seen = h.progress.steps
        h.advance(h.service.settings.heartbeat)
        h.progress.wait_beyond(seen)
    assert h.service.sse_connections.count == 0
    assert h.service.running


def test_heartbeat_is_a_comment_frame(h: Harness) -> None:
    """Every heartbeat interval the stream sends a comment frame."""
    with h.client.stream("GET", "/events", params={"projectId": "p"}) as r:
        stream = frames(r)
        first_event(stream)
        h.advance(h.service.settings.heartbeat)
        assert next(stream) == {"comment": ""}


def test_close_ends_open_streams(h: Harness) -> None:
    """Closing the extension ends open event streams cleanly, with a retry hint, and frees their slots."""
    with h.client.stream("GET", "/events", params={"projectId": "p"}) as r:
        stream = frames(r)
        first_event(stream)
        closer = threading.Thread(target=h.ext.close)
        closer.start()
        rest = list(stream)  # the stream ends, with no error
        closer.join(5)
    assert rest[0] == {"comment": "server stopping"}
    assert 1000 <= int(rest[1]["retry"]) <= 3000
    assert len(rest) == 2
    assert h.service.sse_connections.count == 0
    assert not h.service.running


def test_head_on_events_releases_its_slot() -> None:
    """A HEAD request gets the headers only, and the writer it started is cancelled."""
    service = StatusService(
        authorizer=allow_global_roles, connections=StaticConnections.linked("p"), authenticator=header_auth
    )
    app = Flask(__name__)
    ext = IntegrationStatus(app, service=service)
    try:
        r = app.test_client().head(f"{PREFIX}/events?projectId=p", headers={"X-Role": "owner"})
        assert r.status_code == 200
        assert r.data == b""
        r.close()  # what every WSGI server does with the response iterable
        assert service.sse_connections.count == 0
    finally:
        ext.close()


# --- webhooks and openapi -----------------------------------------------------------------------------------


def test_signed_github_webhook_reaches_the_event_stream(h: Harness) -> None:
    """A correctly signed GitHub push answers 200 and arrives on the project's stream as github:push."""
    body = json.dumps(PUSH).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "d-1",
        **sign_github(SECRET, body),
    }
    with h.client.stream("GET", "/events", params={"projectId": "p"}) as r:
        stream = frames(r)
        first_event(stream)
        posted = h.client.post("/webhooks/github", content=body, headers=headers)
        assert posted.status_code == 200
        assert posted.json() == {"ok": True}
        event = first_event(f for f in stream if f.get("event") == "github:push")
    assert json.loads(event["data"])["sha"] == PUSH["after"]
    forged = h.client.post(
        "/webhooks/github", content=body, headers={**headers, **sign_github("wrong", body)}
    )
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "unauthorized"


def test_openapi_json_lists_the_mounted_paths(h: Harness) -> None:
    """openapi.json is served under the prefix and names the full paths."""
    r = h.client.get("/openapi.json")
    assert r.status_code == 200
    assert r.json()["openapi"] == "3.1.0"
    assert f"{PREFIX}/webhooks/{{provider}}" in r.json()["paths"]


@pytest.mark.parametrize(
    ("environ", "cap"),
    [
        ({"SERVER_SOFTWARE": "waitress", "wsgi.multithread": True}, 2),
        ({"SERVER_SOFTWARE": "WSGIServer/0.2", "wsgi.multithread": False}, 0),
        ({"SERVER_SOFTWARE": "Werkzeug/3.1", "wsgi.multithread": True}, None),
        ({"wsgi.multithread": False}, None),
    ],
)
def test_the_stream_cap_is_derived_from_the_server(environ: dict[str, Any], cap: int | None) -> None:
    """Unknown threaded servers get a small cap, single-threaded ones refuse streams, werkzeug's
    thread-per-request server and the test client (no server) get none."""
    from integration_status.web.flask import server_stream_cap

    assert server_stream_cap(environ) == cap


def test_streams_over_the_configured_cap_get_a_retry_frame_at_once() -> None:
    """INTEGRATION_STATUS_MAX_STREAMS=1: a second stream is answered with `retry:` and ends; once the first
    closes, its slot is free again."""
    service = StatusService(
        connections=StaticConnections.linked("p"), authenticator=header_auth, authorizer=allow_global_roles
    )
    app = Flask(__name__)
    app.config.update(INTEGRATION_STATUS_MAX_STREAMS=1, INTEGRATION_STATUS_STREAM_RETRY_MS=4000)
    ext = IntegrationStatus(app, service=service)
    url, headers = f"{PREFIX}/events?projectId=p", {"X-Role": "owner"}
    try:
        client = app.test_client()
        first = client.get(url, headers=headers, buffered=False)
        assert next(first.response).startswith(b":")  # streaming
        second = client.get(url, headers=headers)
        assert (
            second.get_data()
            == b"event: overloaded\nretry: 4000\ndata: too many open streams on this worker\n\n"
        )
        assert second.mimetype == "text/event-stream"
        first.close()
        third = client.get(url, headers=headers, buffered=False)
        assert next(third.response).startswith(b":")
        third.close()
    finally:
        ext.close()
