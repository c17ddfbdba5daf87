"""Signed provider webhooks: verification, replay and timestamp rules, and translation to raw events."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status._logging import capture_logs
from integration_status.core.webhooks import (
    WebhookProvider,
    check_signature,
    delivery_id,
    sanity_document_count,
)
from integration_status.exceptions import BackendUnavailable
from integration_status.models import event_from_json
from integration_status.protocols import Secret
from integration_status.service.webhooks import (
    MemoryDeliveryLog,
    WebhookResult,
    WebhookTarget,
    handle_webhook,
    sign_github,
    sign_sanity,
    sign_vercel,
)
from integration_status.testing import FakeClock

SECRET = "whsec-test-4f1c9e0b7a2d"
OTHER_SECRET = "whsec-other-0000"

# --- realistic payloads (field names as the providers' docs show them; trimmed) -----------------------------

GITHUB_PUSH: dict[str, Any] = {
    "ref": "refs/heads/main",
    "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    "created": False,
    "deleted": False,
    "forced": False,
    "base_ref": None,
    "compare": "https://github.com/octocat/Hello-World/compare/6113728f27ae...0d1a26e67d8f",
    "commits": [
        {
            "id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            "message": "Update README.md",
            "timestamp": "2025-11-26T05:58:12Z",
            "author": {"name": "Monalisa Octocat", "email": "octocat@github.com", "username": "octocat"},
        }
    ],
    "repository": {
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": "Hello-World",
        "full_name": "octocat/Hello-World",
        "private": False,
        "default_branch": "main",
        "owner": {"login": "octocat", "id": 1},
    },
    "pusher": {"name": "octocat", "email": "octocat@github.com"},
    "sender": {"login": "octocat", "id": 1},
}

GITHUB_PING: dict[str, Any] = {
    "zen": "Keep it logically awesome.",
    "hook_id": 12345678,
    "hook": {"type": "Repository", "id": 12345678, "active": True, "events": ["push"]},
    "repository": GITHUB_PUSH["repository"],
    "sender": {"login": "octocat", "id": 1},
}


def vercel_event(kind: str, delivery: str = "uG5eQ4nBEY1Ep2Ip9Sx8dtUV") -> dict[str, Any]:
    return {
        "id": delivery,
        "type": kind,
        "createdAt": 1764136790000,
        "region": "iad1",
        "payload": {
            "team": {"id": "team_ZspSRT4ljIEEmMHgoDwKWDei"},
            "user": {"id": "user_2KBg9pFhxq7T3Uu0oXyV1d"},
            "alias": ["docs.example.com"],
            "deployment": {
                "id": "dpl_2euZBFqxYdDMDG1jTrHFnNZ2eUVa",
                "meta": {"githubCommitRef": "main"},
                "url": "docs-9jaeg38me.vercel.app",
                "name": "docs",
            },
            "links": {
                "deployment": "https://vercel.com/acme/docs/2euZBFqxYdDMDG1jTrHFnNZ2eUVa",
                "project": "https://vercel.com/acme/docs",
            },
            "target": "production",
            "project": {"id": "prj_12HKQaOmR5t5Uy6vdcQsNIiZgHGB"},
            "plan": "pro",
            "regions": ["iad1"],
        },
    }


SANITY_DOCUMENT: dict[str, Any] = {
    "_id": "2f4e9a3c-1f1b-4d5e-9d0e-7c1b2a3d4e5f",
    "_type": "post",
    "_rev": "Vv4zYtk1HcJmEAb3xB2nGk",
    "_createdAt": "2025-11-20T09:12:00Z",
    "_updatedAt": "2025-11-26T05:59:58Z",
    "title": "Release notes",
    "slug": {"_type": "slug", "current": "release-notes"},
}

SANITY_HEADERS = {
    "content-type": "application/json",
    "sanity-project-id": "3do82whm",
    "sanity-dataset": "production",
    "sanity-document-id": SANITY_DOCUMENT["_id"],
    "sanity-operation": "update",
    "sanity-transaction-id": "Vv4zYtk1HcJmEAb3xB2nGk",
    "sanity-transaction-time": "2025-11-26T05:59:58.123Z",
    "sanity-webhook-id": "Ln8fR8mJNrsTQIFi",
    "idempotency-key": "whm-3do82whm-Ln8fR8mJNrsTQIFi-Vv4zYtk1HcJmEAb3xB2nGk-1",
}

TARGETS = {
    ("github", "octocat/Hello-World"): "proj-gh",
    ("vercel", "prj_12HKQaOmR5t5Uy6vdcQsNIiZgHGB"): "proj-vc",
    ("sanity", "3do82whm"): "proj-sn",
}


class Resolver:
    """A host resolver: GitHub by repository.full_name, Vercel by payload.project.id, Sanity by header."""

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.calls: list[tuple[str, dict[str, str], Any]] = []

    async def __call__(self, provider: str, headers: Mapping[str, str], body: Any) -> WebhookTarget | None:
        self.calls.append((provider, dict(headers), body))
        if provider == "github":
            key = body.get("repository", {}).get("full_name") if isinstance(body, dict) else None
        elif provider == "vercel":
            key = body.get("payload", {}).get("project", {}).get("id") if isinstance(body, dict) else None
        else:
            key = headers.get("sanity-project-id")
        project = TARGETS.get((provider, key or ""))
        return None if project is None else WebhookTarget(project_id=project, secret=Secret(self.secret))


def raw(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def github_request(
    payload: Any,
    event: str = "push",
    delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    secret: str = SECRET,
) -> tuple[dict[str, str], bytes]:
    body = raw(payload)
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "12345678",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign_github(secret, body)["x-hub-signature-256"],
    }
    return headers, body


def vercel_request(payload: Any, secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    body = raw(payload)
    return {"content-type": "application/json", **sign_vercel(secret, body)}, body


def sanity_request(
    payload: Any, clock: FakeClock, secret: str = SECRET, **extra: str
) -> tuple[dict[str, str], bytes]:
    body = raw(payload)
    signature = sign_sanity(secret, body, int(clock.time() * 1000))
    return {**SANITY_HEADERS, **extra, **signature}, body


def request_for(provider: str, clock: FakeClock, secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    if provider == "github":
        return github_request(GITHUB_PUSH, secret=secret)
    if provider == "vercel":
        return vercel_request(vercel_event("deployment.created"), secret=secret)
    return sanity_request(SANITY_DOCUMENT, clock, secret=secret)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log(clock: FakeClock) -> MemoryDeliveryLog:
    return MemoryDeliveryLog(clock=clock)


async def deliver(
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    clock: FakeClock,
    log: MemoryDeliveryLog,
    resolver: Resolver | None = None,
    **kwargs: Any,
) -> WebhookResult:
    return await handle_webhook(
        provider, headers, body, resolve=resolver or Resolver(), deliveries=log, clock=clock, **kwargs
    )


def assert_rejected(result: WebhookResult, status: int, code: str) -> None:
    assert result.status == status
    assert result.events == ()
    assert result.invalidate is False
    assert result.body["error"]["code"] == code
    assert set(result.body["error"]) == {"code", "message"}


# --- known answers from the providers' own material ---------------------------------------------------------


def test_github_signature_matches_documented_vector() -> None:
    """sign_github reproduces the test vector in GitHub's 'Validating webhook deliveries' docs."""
    headers = sign_github("It's a Secret to Everybody", b"Hello, World!")
    assert headers == {
        "x-hub-signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    }


@pytest.mark.parametrize(
    ("secret", "body", "header"),
    [
        ("test", b'{"_id":"resume"}', "t=1633519811129,v1=tLa470fx7qkLLEcMOcEUFuBbRSkGujyskxrNXcoh0N0"),
        (
            "try-me",
            b'{"title":"GROQ-Hooks are neat"}',
            "t=1633518820676,v1=e7C9h2sfbFfc4V7TEz7PSOp4IoNzl0UdVsBV-1wgdeA",
        ),
    ],
)
def test_sanity_signature_matches_webhook_toolkit_vectors(secret: str, body: bytes, header: str) -> None:
    """sign_sanity reproduces the @sanity/webhook test vectors (ms timestamp, unpadded base64url)."""
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert sign_sanity(secret, body, timestamp) == {"sanity-webhook-signature": header}
    headers = {"sanity-webhook-signature": header}
    assert check_signature("sanity", secret, headers, body, now=timestamp / 1000, tolerance=300) is None


def test_sanity_header_with_space_after_comma_is_accepted() -> None:
    """The 't=..., v1=...' spelling @sanity/webhook decodes is accepted too."""
    headers = {"sanity-webhook-signature": "t=1633519811129, v1=tLa470fx7qkLLEcMOcEUFuBbRSkGujyskxrNXcoh0N0"}
    assert (
        check_signature("sanity", "test", headers, b'{"_id":"resume"}', now=1633519811.0, tolerance=300)
        is None
    )


def test_vercel_signature_is_hex_hmac_sha1_of_raw_body() -> None:
    """sign_vercel is the lower-case hex HMAC-SHA1 of the raw body, 40 characters."""
    body = raw(vercel_event("deployment.created"))
    value = sign_vercel(SECRET, body)["x-vercel-signature"]
    assert value == hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    assert len(value) == 40


# --- mappings -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_github_push_becomes_github_push_event(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """A push to refs/heads/main publishes github:push with the branch, the 'after' sha and the clock's ts."""
    headers, body = github_request(GITHUB_PUSH)
    result = await deliver("github", headers, body, clock, log)
    assert result.status == 200
    assert result.body == {"ok": True}
    assert result.project_id == "proj-gh"
    assert result.invalidate is True
    assert result.events == (
        {
            "type": "github:push",
            "projectId": "proj-gh",
            "branch": "main",
            "sha": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            "ts": int(clock.time() * 1000),
        },
    )
    event_from_json(result.events[0])


@pytest.mark.anyio
async def test_github_branch_with_slashes_keeps_full_name(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """Only the refs/heads/ prefix is stripped: feature/x stays feature/x."""
    headers, body = github_request({**GITHUB_PUSH, "ref": "refs/heads/feature/x"})
    result = await deliver("github", headers, body, clock, log)
    assert result.events[0]["branch"] == "feature/x"


@pytest.mark.anyio
async def test_github_ping_is_accepted_without_event(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """The ping sent when the hook is created answers 200 and publishes nothing."""
    headers, body = github_request(GITHUB_PING, event="ping")
    result = await deliver("github", headers, body, clock, log)
    assert (result.status, result.events, result.invalidate) == (200, (), False)
    assert result.body == {"ok": True}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("event", "payload", "invalidate"),
    [
        ("issues", {"action": "opened", "repository": GITHUB_PUSH["repository"]}, False),
        ("push", {**GITHUB_PUSH, "ref": "refs/tags/v1.0.0"}, False),
        ("push", {**GITHUB_PUSH, "deleted": True, "after": "0" * 40}, True),
    ],
    ids=["other-event", "tag-push", "branch-deleted"],
)
async def test_github_other_deliveries_are_ignored(
    clock: FakeClock, log: MemoryDeliveryLog, event: str, payload: dict[str, Any], invalidate: bool
) -> None:
    """Other events, tag pushes and branch deletions answer 202, no event (a deletion still invalidates)."""
    headers, body = github_request(payload, event=event)
    result = await deliver("github", headers, body, clock, log)
    assert (result.status, result.events, result.invalidate) == (202, (), invalidate)
    assert result.body == {"ok": True, "ignored": True}


@pytest.mark.anyio
async def test_vercel_deployment_created_becomes_deploy_started(
    clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    """deployment.created publishes deploy:started with the deployment id as operationId."""
    headers, body = vercel_request(vercel_event("deployment.created"))
    result = await deliver("vercel", headers, body, clock, log)
    assert result.status == 200
    assert result.events == (
        {
            "type": "deploy:started",
            "provider": "vercel",
            "projectId": "proj-vc",
            "operationId": "dpl_2euZBFqxYdDMDG1jTrHFnNZ2eUVa",
            "ts": int(clock.time() * 1000),
        },
    )
    event_from_json(result.events[0])


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["deployment.succeeded", "deployment.ready"])
async def test_vercel_success_becomes_deploy_finished_with_url(
    clock: FakeClock, log: MemoryDeliveryLog, kind: str
) -> None:
    """A successful deployment publishes deploy:finished success=true with the https URL of the deployment."""
    headers, body = vercel_request(vercel_event(kind))
    result = await deliver("vercel", headers, body, clock, log)
    assert result.status == 200
    (event,) = result.events
    assert event["type"] == "deploy:finished"
    assert event["success"] is True
    assert event["url"] == "https://docs-9jaeg38me.vercel.app"
    assert event["operationId"] == "dpl_2euZBFqxYdDMDG1jTrHFnNZ2eUVa"
    assert event_from_json(event).to_json() == event


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["deployment.error", "deployment.canceled"])
async def test_vercel_failure_becomes_deploy_finished_false(
    clock: FakeClock, log: MemoryDeliveryLog, kind: str
) -> None:
    """A failed or canceled deployment publishes deploy:finished success=false without a URL."""
    headers, body = vercel_request(vercel_event(kind))
    result = await deliver("vercel", headers, body, clock, log)
    (event,) = result.events
    assert (event["type"], event["success"], "url" in event) == ("deploy:finished", False, False)
    assert result.invalidate is True


@pytest.mark.anyio
async def test_vercel_other_type_is_ignored(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """A type we do not map (project.created) answers 202 and publishes nothing."""
    headers, body = vercel_request(vercel_event("project.created"))
    result = await deliver("vercel", headers, body, clock, log)
    assert (result.status, result.events) == (202, ())


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "count"),
    [
        (SANITY_DOCUMENT, 1),
        ([SANITY_DOCUMENT, {**SANITY_DOCUMENT, "_id": "b"}, {**SANITY_DOCUMENT, "_id": "c"}], 3),
        ({"projectId": "3do82whm", "ids": {"created": [], "updated": ["a", "b"], "all": ["a", "b"]}}, 2),
    ],
    ids=["document", "array", "ids-projection"],
)
async def test_sanity_delivery_becomes_sanity_webhook_with_count(
    clock: FakeClock, log: MemoryDeliveryLog, payload: Any, count: int
) -> None:
    """A Sanity mutation delivery publishes sanity:webhook with the number of documents it covers."""
    headers, body = sanity_request(payload, clock)
    result = await deliver("sanity", headers, body, clock, log)
    assert result.status == 200
    assert result.events == (
        {"type": "sanity:webhook", "projectId": "proj-sn", "count": count, "ts": int(clock.time() * 1000)},
    )
    event_from_json(result.events[0])


def test_sanity_count_is_never_zero() -> None:
    """An empty list or empty ids still stands for one delivery."""
    assert sanity_document_count([]) == 1
    assert sanity_document_count({"ids": {"all": []}}) == 1
    assert sanity_document_count("published") == 1


# --- rejections ---------------------------------------------------------------------------------------------

PROVIDERS: list[WebhookProvider] = ["github", "vercel", "sanity"]


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tampered_body_is_unauthorized(clock: FakeClock, log: MemoryDeliveryLog, provider: str) -> None:
    """A body changed after signing answers 401, publishes nothing, and is not remembered as delivered."""
    headers, body = request_for(provider, clock)
    tampered = body.replace(b'"', b' "', 1)
    json.loads(tampered)  # still valid JSON: only the signature can catch it
    result = await deliver(provider, headers, tampered, clock, log)
    assert_rejected(result, 401, "unauthorized")
    assert len(log) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_wrong_secret_is_unauthorized(clock: FakeClock, log: MemoryDeliveryLog, provider: str) -> None:
    """A delivery signed with another secret answers 401."""
    headers, body = request_for(provider, clock, secret=OTHER_SECRET)
    assert_rejected(await deliver(provider, headers, body, clock, log), 401, "unauthorized")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "header"),
    [
        ("github", "X-Hub-Signature-256"),
        ("vercel", "x-vercel-signature"),
        ("sanity", "sanity-webhook-signature"),
    ],
)
async def test_missing_signature_is_unauthorized(
    clock: FakeClock, log: MemoryDeliveryLog, provider: str, header: str
) -> None:
    """Without the signature header the delivery answers 401 'Missing webhook signature'."""
    headers, body = request_for(provider, clock)
    del headers[header]
    result = await deliver(provider, headers, body, clock, log)
    assert_rejected(result, 401, "unauthorized")
    assert result.body["error"]["message"] == "Missing webhook signature"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "header", "value"),
    [
        ("github", "X-Hub-Signature-256", "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
        ("github", "X-Hub-Signature-256", "sha256=zz" + "0" * 62),
        ("github", "X-Hub-Signature-256", "sha256=abc"),
        ("vercel", "x-vercel-signature", "sha1=" + "0" * 40),
        ("vercel", "x-vercel-signature", "not-hex"),
        ("sanity", "sanity-webhook-signature", "v1=e7C9h2sfbFfc4V7TEz7PSOp4IoNzl0UdVsBV-1wgdeA"),
        (
            "sanity",
            "sanity-webhook-signature",
            "t=1764136800000,v2=e7C9h2sfbFfc4V7TEz7PSOp4IoNzl0UdVsBV-1wgdeA",
        ),
        ("sanity", "sanity-webhook-signature", "t=soon,v1=e7C9h2sfbFfc4V7TEz7PSOp4IoNzl0UdVsBV-1wgdeA"),
    ],
)
async def test_malformed_signature_is_unauthorized(
    clock: FakeClock, log: MemoryDeliveryLog, provider: str, header: str, value: str
) -> None:
    """A header that does not follow the provider's format answers 401 'Malformed webhook signature'."""
    headers, body = request_for(provider, clock)
    headers[header] = value
    result = await deliver(provider, headers, body, clock, log)
    assert_rejected(result, 401, "unauthorized")
    assert result.body["error"]["message"] == "Malformed webhook signature"


@pytest.mark.anyio
async def test_github_sha1_prefix_is_unauthorized(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """A correct HMAC-SHA1 under the 'sha1=' prefix (or only the legacy X-Hub-Signature) is not accepted."""
    headers, body = github_request(GITHUB_PUSH)
    legacy = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    headers["X-Hub-Signature-256"] = legacy
    assert_rejected(await deliver("github", headers, body, clock, log), 401, "unauthorized")
    del headers["X-Hub-Signature-256"]
    headers["X-Hub-Signature"] = legacy
    assert_rejected(await deliver("github", headers, body, clock, log), 401, "unauthorized")


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_empty_secret_never_verifies(clock: FakeClock, log: MemoryDeliveryLog, provider: str) -> None:
    """An integration with an empty secret rejects even a delivery signed with the empty key."""
    headers, body = request_for(provider, clock, secret="")
    result = await deliver(provider, headers, body, clock, log, resolver=Resolver(secret=""))
    assert_rejected(result, 401, "unauthorized")


@pytest.mark.anyio
async def test_stale_sanity_timestamp_is_unauthorized(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """A correctly signed Sanity delivery older than the tolerance answers 401; just inside it is accepted."""
    headers, body = sanity_request(SANITY_DOCUMENT, clock)
    clock.advance(300.5)
    result = await deliver("sanity", headers, body, clock, log)
    assert_rejected(result, 401, "unauthorized")
    assert result.body["error"]["message"] == "Webhook timestamp outside the allowed window"
    fresh_headers, fresh_body = sanity_request(SANITY_DOCUMENT, clock, **{"idempotency-key": "k2"})
    clock.advance(299)
    assert (await deliver("sanity", fresh_headers, fresh_body, clock, log)).status == 200


@pytest.mark.anyio
async def test_far_future_sanity_timestamp_is_unauthorized(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """A timestamp further ahead than the tolerance is refused too; the tolerance is configurable."""
    body = raw(SANITY_DOCUMENT)
    headers = {**SANITY_HEADERS, **sign_sanity(SECRET, body, int((clock.time() + 600) * 1000))}
    assert_rejected(await deliver("sanity", headers, body, clock, log), 401, "unauthorized")
    assert (await deliver("sanity", headers, body, clock, log, tolerance=900)).status == 200


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_replayed_delivery_is_duplicate_without_events(
    clock: FakeClock, log: MemoryDeliveryLog, provider: str
) -> None:
    """The same delivery twice: the second answers 200 duplicate and publishes nothing."""
    headers, body = request_for(provider, clock)
    first = await deliver(provider, headers, body, clock, log)
    second = await deliver(provider, headers, body, clock, log)
    assert first.status == 200
    assert len(first.events) == 1
    assert (second.status, second.events, second.invalidate) == (200, (), False)
    assert second.body == {"ok": True, "duplicate": True}


@pytest.mark.anyio
async def test_sanity_retry_with_new_signature_is_duplicate(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """A Sanity retry is re-signed with a later timestamp but keeps its idempotency-key: still a duplicate."""
    headers, body = sanity_request(SANITY_DOCUMENT, clock)
    assert len((await deliver("sanity", headers, body, clock, log)).events) == 1
    clock.advance(30)
    retry_headers, retry_body = sanity_request(SANITY_DOCUMENT, clock)
    assert retry_headers["sanity-webhook-signature"] != headers["sanity-webhook-signature"]
    assert (await deliver("sanity", retry_headers, retry_body, clock, log)).body["duplicate"] is True


@pytest.mark.anyio
async def test_a_resent_github_delivery_with_a_new_delivery_header_is_still_a_duplicate(
    clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    """X-GitHub-Delivery is not signed: a captured delivery resent under a forged GUID is caught by its signed
    body and publishes nothing."""
    headers, body = github_request(GITHUB_PUSH)
    assert len((await deliver("github", headers, body, clock, log)).events) == 1
    forged = {**headers, "X-GitHub-Delivery": "00000000-forged"}
    again = await deliver("github", forged, body, clock, log)
    assert again.body == {"ok": True, "duplicate": True}
    assert again.events == ()


@pytest.mark.anyio
async def test_a_resent_sanity_delivery_with_a_new_idempotency_key_is_still_a_duplicate(
    clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    """Sanity's idempotency-key header is not signed: a captured delivery resent with another key (same signed
    timestamp and body) is caught and publishes nothing."""
    headers, body = sanity_request(SANITY_DOCUMENT, clock)
    assert len((await deliver("sanity", headers, body, clock, log)).events) == 1
    forged = {**headers, "idempotency-key": "forged-key"}
    again = await deliver("sanity", forged, body, clock, log)
    assert again.body == {"ok": True, "duplicate": True}


def test_sanity_delivery_id_fallbacks() -> None:
    """Without idempotency-key, Sanity deliveries are keyed by transaction + document, then by signature."""
    headers = {k: v for k, v in SANITY_HEADERS.items() if k != "idempotency-key"}
    assert delivery_id("sanity", headers, SANITY_DOCUMENT) == (
        f"{SANITY_HEADERS['sanity-transaction-id']}/{SANITY_DOCUMENT['_id']}"
    )
    bare = {"sanity-webhook-id": "Ln8fR8mJNrsTQIFi", "sanity-webhook-signature": "t=1,v1=abc"}
    assert delivery_id("sanity", bare, SANITY_DOCUMENT) == "sig:t=1,v1=abc"


@pytest.mark.anyio
async def test_delivery_is_accepted_again_after_replay_ttl(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """Delivery ids expire on the injected clock after replay_ttl (a push without a signed send time)."""
    window = {"replay_ttl": 60, "tolerance": 20}
    headers, body = github_request(GITHUB_PUSH)
    assert len((await deliver("github", headers, body, clock, log, **window)).events) == 1
    clock.advance(59)
    assert (await deliver("github", headers, body, clock, log, **window)).body.get("duplicate") is True
    clock.advance(2)
    assert len((await deliver("github", headers, body, clock, log, **window)).events) == 1


@pytest.mark.anyio
async def test_replay_ttl_never_shorter_than_the_signature_window(
    clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    """With replay_ttl under 2 * tolerance, a Sanity delivery is still a duplicate for the whole time its
    signature is accepted."""
    body = raw(SANITY_DOCUMENT)
    # Signed at the edge of the future tolerance.
    headers = {**SANITY_HEADERS, **sign_sanity(SECRET, body, int((clock.time() + 300) * 1000))}
    assert len((await deliver("sanity", headers, body, clock, log, replay_ttl=10)).events) == 1
    clock.advance(599)  # the signature is still accepted (300 s after t)
    again = await deliver("sanity", headers, body, clock, log, replay_ttl=10)
    assert again.body == {"ok": True, "duplicate": True}


@pytest.mark.anyio
async def test_memory_delivery_log_is_bounded_and_never_evicts_a_live_entry(clock: FakeClock) -> None:
    """The log holds at most maxsize entries; full of live ones it refuses (BackendUnavailable) instead of
    forgetting one, and makes room again as entries expire."""
    log = MemoryDeliveryLog(clock=clock, maxsize=3)
    for n in range(3):
        assert await log.first_seen(f"d{n}", 60 + n) is True
    with pytest.raises(BackendUnavailable):
        await log.first_seen("d3", 3600)
    assert len(log) == 3
    assert await log.first_seen("d0", 3600) is False
    clock.advance(60)
    assert await log.first_seen("d3", 3600) is True
    assert await log.first_seen("d1", 3600) is False


@pytest.mark.anyio
async def test_oversized_body_is_413(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """A body over max_body answers 413 before anything else runs; exactly max_body is allowed."""
    headers, body = github_request(GITHUB_PUSH)
    resolver = Resolver()
    result = await deliver("github", headers, body, clock, log, resolver=resolver, max_body=len(body) - 1)
    assert_rejected(result, 413, "invalid_request")
    assert resolver.calls == []
    assert (await deliver("github", headers, body, clock, log, max_body=len(body))).status == 200


@pytest.mark.anyio
async def test_default_body_cap_is_one_mebibyte(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """Without max_body, a body of 1 MiB + 1 byte answers 413."""
    body = b" " * (1_048_576 + 1)
    assert_rejected(await deliver("github", {}, body, clock, log), 413, "invalid_request")


@pytest.mark.anyio
async def test_unknown_integration_answers_like_a_bad_signature(
    clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    """When the resolver knows no integration the delivery answers exactly as a bad signature does (401), so
    unsigned requests cannot probe which integrations exist; the resolver saw lower-case headers and JSON."""
    payload = {**GITHUB_PUSH, "repository": {**GITHUB_PUSH["repository"], "full_name": "someone/else"}}
    headers, body = github_request(payload)
    resolver = Resolver()
    unknown = await deliver("github", headers, body, clock, log, resolver=resolver)
    assert_rejected(unknown, 401, "unauthorized")
    forged = await deliver("github", {**headers, **sign_github("wrong", body)}, body, clock, log)
    assert unknown.body == forged.body
    ((provider, seen_headers, seen_body),) = resolver.calls
    assert provider == "github"
    assert seen_headers["x-github-event"] == "push"
    assert seen_body == payload


@pytest.mark.anyio
async def test_unknown_provider_is_404(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """A provider other than github/vercel/sanity answers 404 without calling the resolver."""
    resolver = Resolver()
    result = await deliver("supabase", {}, b"{}", clock, log, resolver=resolver)
    assert_rejected(result, 404, "not_found")
    assert resolver.calls == []


@pytest.mark.anyio
@pytest.mark.parametrize("body", [b"{not json", b"", b'{"a": "\xff"}'], ids=["syntax", "empty", "not-utf8"])
async def test_malformed_json_is_400(clock: FakeClock, log: MemoryDeliveryLog, body: bytes) -> None:
    """A body that is not UTF-8 JSON answers 400 invalid_request before the resolver runs."""
    resolver = Resolver()
    assert_rejected(await deliver("vercel", {}, body, clock, log, resolver=resolver), 400, "invalid_request")
    assert resolver.calls == []


@pytest.mark.anyio
async def test_signed_delivery_without_delivery_id_is_400(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """A GitHub delivery without X-GitHub-Delivery, or a Vercel body without id, answers 400."""
    headers, body = github_request(GITHUB_PUSH)
    del headers["X-GitHub-Delivery"]
    assert_rejected(await deliver("github", headers, body, clock, log), 400, "invalid_request")
    payload = vercel_event("deployment.created")
    del payload["id"]
    v_headers, v_body = vercel_request(payload)
    assert_rejected(await deliver("vercel", v_headers, v_body, clock, log), 400, "invalid_request")


@pytest.mark.anyio
@pytest.mark.parametrize("blank", ["", " ", "\t  "], ids=["empty", "space", "whitespace"])
async def test_blank_delivery_id_is_400_like_a_missing_one(
    clock: FakeClock, log: MemoryDeliveryLog, blank: str
) -> None:
    """An X-GitHub-Delivery header, or a Vercel body id, that is present but blank answers exactly as a missing
    one does, and records nothing."""
    headers, body = github_request(GITHUB_PUSH, delivery=blank)
    missing, missing_body = github_request(GITHUB_PUSH)
    del missing["X-GitHub-Delivery"]
    result = await deliver("github", headers, body, clock, log)
    assert_rejected(result, 400, "invalid_request")
    assert result.body == (await deliver("github", missing, missing_body, clock, log)).body
    assert result.body["error"]["message"] == "Missing webhook delivery id"
    v_headers, v_body = vercel_request(vercel_event("deployment.created", delivery=blank))
    v_result = await deliver("vercel", v_headers, v_body, clock, log)
    assert_rejected(v_result, 400, "invalid_request")
    assert v_result.body["error"]["message"] == "Missing webhook delivery id"
    assert len(log) == 0


@pytest.mark.parametrize("blank", ["", " ", "\t  "], ids=["empty", "space", "whitespace"])
def test_blank_sanity_ids_fall_back_like_missing_ones(blank: str) -> None:
    """A blank idempotency-key is passed over for transaction + document, and a blank one of those for the
    signature, as when they are missing."""
    headers = {**SANITY_HEADERS, "idempotency-key": blank}
    assert delivery_id("sanity", headers, SANITY_DOCUMENT) == (
        f"{SANITY_HEADERS['sanity-transaction-id']}/{SANITY_DOCUMENT['_id']}"
    )
    signed = {**headers, "sanity-webhook-signature": "t=1,v1=abc"}
    assert (
        delivery_id("sanity", {**signed, "sanity-transaction-id": blank}, SANITY_DOCUMENT) == "sig:t=1,v1=abc"
    )
    assert delivery_id("sanity", {**signed, "sanity-document-id": blank}, SANITY_DOCUMENT) == "sig:t=1,v1=abc"


@pytest.mark.anyio
async def test_signed_but_malformed_payload_is_400_and_not_remembered(
    clock: FakeClock, log: MemoryDeliveryLog
) -> None:
    """A signed deployment event without deployment.id answers 400 and does not burn its delivery id."""
    broken = copy.deepcopy(vercel_event("deployment.created"))
    del broken["payload"]["deployment"]["id"]
    headers, body = vercel_request(broken)
    result = await deliver("vercel", headers, body, clock, log)
    assert_rejected(result, 400, "invalid_request")
    assert "payload.deployment.id" in result.body["error"]["message"]
    good_headers, good_body = vercel_request(vercel_event("deployment.created"))
    assert len((await deliver("vercel", good_headers, good_body, clock, log)).events) == 1


@pytest.mark.anyio
async def test_github_delivery_without_event_header_is_400(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """A signed GitHub delivery that does not say which event it is answers 400."""
    headers, body = github_request(GITHUB_PUSH)
    del headers["X-GitHub-Event"]
    assert_rejected(await deliver("github", headers, body, clock, log), 400, "invalid_request")


# --- invariants ---------------------------------------------------------------------------------------------


def _signed(provider: WebhookProvider, secret: str, body: bytes, now: float) -> dict[str, str]:
    if provider == "github":
        return sign_github(secret, body)
    if provider == "vercel":
        return sign_vercel(secret, body)
    return sign_sanity(secret, body, int(now * 1000))


@given(
    provider=st.sampled_from(PROVIDERS),
    secret=st.text(min_size=1, max_size=40),
    body=st.binary(min_size=1, max_size=300),
    data=st.data(),
)
def test_any_single_byte_change_fails_verification(
    provider: WebhookProvider, secret: str, body: bytes, data: Any
) -> None:
    """Signing verifies the exact body, and changing any one byte of it makes verification fail."""
    now = 1_764_136_800.0
    headers = _signed(provider, secret, body, now)
    assert check_signature(provider, secret, headers, body, now=now, tolerance=300) is None
    index = data.draw(st.integers(0, len(body) - 1))
    replacement = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
    changed = body[:index] + bytes([replacement]) + body[index + 1 :]
    reason = check_signature(provider, secret, headers, changed, now=now, tolerance=300)
    assert reason == "bad_signature"


@given(
    provider=st.sampled_from(PROVIDERS), secret=st.text(min_size=1, max_size=40), other=st.text(max_size=40)
)
def test_other_secret_never_verifies(provider: WebhookProvider, secret: str, other: str) -> None:
    """A signature made with one secret never verifies under a different one."""
    body, now = raw(SANITY_DOCUMENT), 1_764_136_800.0
    headers = _signed(provider, secret, body, now)
    if other != secret:
        assert check_signature(provider, other, headers, body, now=now, tolerance=300) is not None


@pytest.mark.anyio
async def test_secrets_and_signatures_never_leak(clock: FakeClock, log: MemoryDeliveryLog) -> None:
    """No result body or log line contains the secret or a signature, for accepted and rejected deliveries."""
    secrets_seen: list[str] = []
    results: list[WebhookResult] = []
    with capture_logs() as logs:
        for provider in PROVIDERS:
            for secret in (SECRET, OTHER_SECRET):
                headers, body = request_for(provider, clock, secret=secret)
                secrets_seen += [v for k, v in headers.items() if "signature" in k.lower()]
                results.append(await deliver(provider, headers, body, clock, log))
        stale_headers, stale_body = sanity_request(SANITY_DOCUMENT, clock, **{"idempotency-key": "late"})
        clock.advance(3600)
        results.append(await deliver("sanity", stale_headers, stale_body, clock, log))
    assert {r.status for r in results} == {200, 401}
    text = repr(logs) + repr([(r.body, r.events) for r in results])
    for needle in [SECRET, OTHER_SECRET, *secrets_seen]:
        assert needle not in text
    rejected = [entry for entry in logs if entry["event"] == "integration_status.webhook.rejected"]
    assert len(rejected) == 4
    assert all(set(entry) == {"event", "log_level", "provider", "reason"} for entry in rejected)
    assert SECRET not in repr(WebhookTarget(project_id="p", secret=Secret(SECRET)))


def test_webhooks_module_imports_no_web_framework() -> None:
    """Importing the webhook entry point pulls in neither starlette nor flask."""
    code = (
        "import sys, integration_status.service.webhooks; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'flask', 'httpx')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
