"""No secret ever leaves: tokens, DSN passwords and webhook secrets are fed through every path (status with
real adapters on failing HTTP, a database probe to a closed port, failing actions, badly signed webhooks,
event snapshots) and searched for in captured logs, exception strings, response bodies and events."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from integration_status._logging import capture_logs
from integration_status.adapters.defaults import provider_adapters
from integration_status.adapters.http import HttpClient
from integration_status.exceptions import ProviderError
from integration_status.protocols import (
    FetchContext,
    ProjectConnections,
    ProviderConnection,
    RequestInfo,
    Secret,
    Viewer,
)
from integration_status.service import Settings, StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.service.webhooks import WebhookTarget
from integration_status.testing import StaticConnections
from integration_status.web.starlette import create_app

pytestmark = pytest.mark.anyio

GITHUB_TOKEN = "ghp_S3cretGithubToken0000000000000000"
VERCEL_TOKEN = "vcp_S3cretVercelToken1111"
SANITY_TOKEN = "skS3cretSanityToken2222"
SUPABASE_TOKEN = "sbp_S3cretSupabaseToken3333"
DB_PASSWORD = "pw-S3cret-db-4444"
WEBHOOK_SECRET = "whsec-S3cret-5555"
SECRETS = (GITHUB_TOKEN, VERCEL_TOKEN, SANITY_TOKEN, SUPABASE_TOKEN, DB_PASSWORD, WEBHOOK_SECRET)


#: Authorization headers the fake providers received: proof the secrets really went down each path.
SENT: list[str] = []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provider_http(request: httpx.Request) -> httpx.Response:
    """GitHub answers 401, Vercel 500, Sanity times out, Supabase's API is healthy (so the DB probe runs).
    Error bodies echo the Authorization header, as some proxies do."""
    auth = request.headers.get("authorization", "")
    SENT.append(auth)
    host = request.url.host
    if host == "github.test":
        return httpx.Response(401, json={"message": f"Bad credentials: {auth}"})
    if host == "vercel.test":
        return httpx.Response(500, json={"error": {"message": f"boom for {auth}"}})
    if host.endswith("sanity.test"):
        raise httpx.ReadTimeout(f"timed out talking with {auth}", request=request)
    if request.url.path.endswith("/health"):
        return httpx.Response(200, json=[{"name": "db", "healthy": True, "status": "ACTIVE_HEALTHY"}])
    return httpx.Response(200, json={"id": "ref", "status": "ACTIVE_HEALTHY"})


URLS = {
    "github": "https://github.test",
    "vercel": "https://vercel.test",
    "sanity": "https://api.sanity.test",
    "sanity_query": "https://{projectId}.api.sanity.test",
    "supabase": "https://supabase.test",
}


def connections() -> ProjectConnections:
    dsn = f"postgresql://app:{DB_PASSWORD}@127.0.0.1:{closed_port()}/app?connect_timeout=2"
    return ProjectConnections(
        project_id="p",
        providers={
            "github": ProviderConnection(
                provider="github",
                settings={"repository": "acme/web"},
                token=GITHUB_TOKEN,
                webhook_secret=WEBHOOK_SECRET,
            ),
            "vercel": ProviderConnection(provider="vercel", settings={"project": "web"}, token=VERCEL_TOKEN),
            "sanity": ProviderConnection(
                provider="sanity", settings={"project_id": "abc"}, token=SANITY_TOKEN
            ),
            "supabase": ProviderConnection(
                provider="supabase", settings={"project_ref": "ref"}, token=SUPABASE_TOKEN, dsn=dsn
            ),
        },
    )


async def owner(request: RequestInfo) -> Viewer | None:
    return Viewer(user_id="u1", roles={"owner"})


async def everyone(viewer: Viewer) -> bool:
    """The detailed health checks for every viewer: they must carry no secret either."""
    return True


async def resolve(provider: str, headers: Mapping[str, str], payload: Any) -> WebhookTarget | None:
    return WebhookTarget(project_id="p", secret=Secret(WEBHOOK_SECRET))


def assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into {where}"
    assert "S3cret" not in text, f"a secret fragment leaked into {where}"


def exception_text(exc: BaseException) -> str:
    """The exception, its repr and its whole cause/context chain."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.fixture
async def service() -> AsyncIterator[StatusService]:
    http = HttpClient(transport=httpx.MockTransport(provider_http))
    svc = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections({"p": connections()}),
        adapters=provider_adapters(http, urls=URLS),
        authenticator=owner,
        health_authorizer=everyone,
        webhooks=resolve,
        # A deadline longer than every failure, so each provider's real error path runs inside the request.
        settings=Settings(deadline=6.0, adapter_timeout=4.0, action_timeout=5.0),
    )
    async with http, svc:
        yield svc


async def test_adapter_failures_never_carry_a_secret(service: StatusService) -> None:
    """Real adapters failing (401, 500, timeout, DB refused) raise errors whose text, repr and chain, and
    whose log lines, hold no token or password."""
    conns = connections()
    failures: list[ProviderError] = []
    with capture_logs() as logs:
        for provider, adapter in service.adapters.items():
            connection = conns.get(provider)
            assert connection is not None
            ctx = FetchContext(clock=service.clock, timeout=4.0, started=service.clock.monotonic())
            with pytest.raises(ProviderError) as info:
                await adapter.fetch(connection, ctx)
            failures.append(info.value)
    assert {f.problem_code for f in failures} >= {"oauth_revoked", "unknown", "timeout"}
    for token in (GITHUB_TOKEN, VERCEL_TOKEN, SANITY_TOKEN, SUPABASE_TOKEN):
        assert any(token in auth for auth in SENT)
    for failure in failures:
        assert_clean(f"{failure.provider} error", exception_text(failure))
    assert_clean("logs", json.dumps(logs, default=repr))
    assert_clean("connection repr", repr(conns))


async def test_status_events_actions_and_webhooks_leak_nothing(service: StatusService) -> None:
    """Status, its event snapshot, failing actions, badly signed webhooks and health: bodies, headers,
    events and captured log lines are free of secrets."""
    transport = httpx.ASGITransport(app=create_app(service, lifespan=False))
    seen: list[str] = []
    with capture_logs() as logs:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            status = await client.get("/api/integrations/status", params={"projectId": "p"})
            assert status.status_code == 200
            items = {i["key"]: i for i in status.json()["items"]}
            assert items["github"]["status"] == "error"  # the 401 really happened
            assert items["supabase"]["problem"]["code"] == "timeout"  # so did the refused DB connection
            seen += [status.text, json.dumps(dict(status.headers))]
            for provider, action in (
                ("vercel", "deploy"),
                ("supabase", "test-connection"),
                ("github", "sync"),
            ):
                r = await client.post(
                    "/api/integrations/actions",
                    json={"projectId": "p", "provider": provider, "action": action},
                    headers={"Idempotency-Key": f"key-{provider}"},
                )
                assert r.status_code >= 400 or r.json().get("success") is not None
                seen += [r.text, json.dumps(dict(r.headers))]
            body = json.dumps({"repository": {"full_name": "acme/web"}, "ref": "refs/heads/main"}).encode()
            for provider, headers in (
                (
                    "github",
                    {
                        "x-hub-signature-256": "sha256=" + "0" * 64,
                        "x-github-event": "push",
                        "x-github-delivery": "d1",
                    },
                ),
                ("vercel", {"x-vercel-signature": "0" * 40}),
                ("sanity", {"sanity-webhook-signature": "t=1,v1=AAAA"}),
                ("github", {"x-github-event": "push", "x-github-delivery": "d2"}),
            ):
                r = await client.post(f"/api/integrations/webhooks/{provider}", content=body, headers=headers)
                assert r.status_code in (400, 401)
                seen += [r.text]
            health = await client.get("/api/integrations/health")
            seen.append(health.text)
        conns = connections()
        owner = Viewer(user_id="u1", roles={"owner"})
        frame, _ = service.renderer.status_frame(
            "p", await service.views(conns), service.grants(owner, "p"), event_id=None, ts=0
        )
        seen.append(frame.decode())
    events = [entry for entry in logs if entry["event"].startswith("integration_status.")]
    assert any(e["event"] == "integration_status.webhook.rejected" for e in events)
    assert any(e["event"] == "integration_status.action.failed" for e in events)
    for text in seen:
        assert_clean("a response or event", text)
    assert_clean("logs", json.dumps(logs, default=repr))
    assert_clean("service repr", repr(service) + repr(service.adapters))
