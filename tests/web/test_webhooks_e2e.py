"""Signed provider webhooks end to end on every mount: POST {prefix}/webhooks/github -> events on an open
stream and a refreshed status."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from integration_status.protocols import Secret
from integration_status.service.webhooks import WebhookTarget, sign_github
from integration_status.testing import ScriptedAdapter, snapshot
from tests.web.mounts import PREFIX, MountFactory, SSEReader, events_stream, make_service

pytestmark = pytest.mark.anyio

SECRET = "whsec_e2e"
HOOK = f"{PREFIX}/webhooks/github"
SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"


async def resolver(provider: str, headers: Mapping[str, str], payload: Any) -> WebhookTarget | None:
    """The host's lookup: the repository names the project."""
    if provider == "github" and payload.get("repository", {}).get("full_name") == "acme/shop":
        return WebhookTarget(project_id="p", secret=Secret(SECRET))
    return None


def push_body(*, deleted: bool = False) -> bytes:
    payload = {
        "ref": "refs/heads/main",
        "after": "0" * 40 if deleted else SHA,
        "deleted": deleted,
        "repository": {"full_name": "acme/shop"},
    }
    return json.dumps(payload).encode()


async def deliver(
    client: httpx.AsyncClient, body: bytes, *, delivery: str = "d-1", secret: str = SECRET
) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        **sign_github(secret, body),
    }
    return await client.post(HOOK, content=body, headers=headers)


def github_service() -> tuple[Any, ScriptedAdapter]:
    github = ScriptedAdapter("github", snapshot("github", "connected", "Old push"))
    adapters = [github] + [ScriptedAdapter(p, snapshot(p)) for p in ("vercel", "sanity", "supabase")]
    return make_service(adapters=adapters, webhooks=resolver), github


def _github_summary(event: dict[str, Any]) -> str:
    summary: str = next(i for i in event["items"] if i["key"] == "github")["summary"]
    return summary


async def test_signed_push_reaches_the_stream_then_a_status_update(mount: MountFactory) -> None:
    """A correctly signed push is 200, a github:push appears on the open stream, then a status:update with
    the provider fetched again."""
    service, github = github_service()
    async with mount(service) as m, m.client() as client, events_stream(client) as r:
        events = SSEReader(r)
        assert _github_summary((await events.event()).json()) == "Old push"
        github.then(snapshot("github", "connected", "New push"))
        answer = await deliver(client, push_body())
        assert answer.status_code == 200, answer.text
        pushed = await events.event()
        assert pushed.event == "github:push"
        assert pushed.json()["branch"] == "main"
        assert pushed.json()["sha"] == SHA
        assert pushed.json()["projectId"] == "p"
        update = await events.event()
        assert update.event == "status:update"
        assert _github_summary(update.json()) == "New push"


async def test_bad_signature_is_401_and_nothing_reaches_the_stream(mount: MountFactory) -> None:
    """A delivery signed with the wrong secret is 401; no event is published and the provider is not
    fetched again."""
    service, github = github_service()
    async with mount(service) as m, m.client() as client, events_stream(client) as r:
        events = SSEReader(r)
        await events.event()
        calls = github.calls
        answer = await deliver(client, push_body(), secret="not-the-secret")
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"
        marker = await m.publish("p", {"type": "sanity:webhook", "projectId": "p", "count": 1, "ts": 1})
        frame = await events.event()
        assert (frame.id, frame.event) == (marker, "sanity:webhook")
        assert github.calls == calls


async def test_a_redelivery_publishes_nothing_twice(mount: MountFactory) -> None:
    """The same delivery id again is answered 200 as a duplicate and sends no second event."""
    service, _ = github_service()
    async with mount(service) as m, m.client() as client, events_stream(client) as r:
        events = SSEReader(r)
        await events.event()
        assert (await deliver(client, push_body())).status_code == 200
        again = await deliver(client, push_body())
        assert again.status_code == 200
        assert again.json().get("duplicate") is True
        marker = await m.publish("p", {"type": "sanity:webhook", "projectId": "p", "count": 1, "ts": 1})
        seen = []
        while (frame := await events.event()).id != marker:
            seen.append(frame.event)
        assert seen.count("github:push") == 1


async def test_branch_deletion_refreshes_the_status(mount: MountFactory) -> None:
    """A signed branch deletion sends no push event (202) but still refreshes the provider: a status:update
    follows."""
    service, github = github_service()
    async with mount(service) as m, m.client() as client, events_stream(client) as r:
        events = SSEReader(r)
        await events.event()
        github.then(snapshot("github", "warning", "Branch deleted"))
        answer = await deliver(client, push_body(deleted=True))
        assert answer.status_code == 202
        update = await events.event()
        assert update.event == "status:update"
        assert _github_summary(update.json()) == "Branch deleted"


async def test_absurdly_nested_webhook_body_is_a_400(mount: MountFactory) -> None:
    """An unsigned, absurdly nested body is a 400, never a 500 (it is parsed before the signature is checked)."""
    async with mount(make_service()) as m, m.client() as client:
        r = await client.post(
            "/api/integrations/webhooks/vercel",
            content=b"[" * 50_000 + b"]" * 50_000,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_request"
