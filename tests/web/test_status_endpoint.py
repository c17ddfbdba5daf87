"""GET {prefix}/status through the Starlette mount: 200/304/400/401/404, headers, and per-viewer hashes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from integration_status.protocols import RequestInfo, Viewer
from integration_status.service import StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.snapshot import ProviderSnapshot, Segment, Sensitive
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections
from integration_status.web.starlette import create_app

pytestmark = pytest.mark.anyio

GITHUB = ProviderSnapshot(
    provider="github",
    status="connected",
    summary=(Segment(pieces=("Linked to ", Sensitive(kind="branch", value="release-x")), redacted="Linked"),),
)


async def header_auth(request: RequestInfo) -> Viewer | None:
    role = request.headers.get("x-role")
    if not role:
        return None
    return Viewer(user_id="u", roles=set() if role == "none" else {role})


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", "github"),
        adapters=[ScriptedAdapter("github", GITHUB)],
        authenticator=header_auth,
        clock=FakeClock(),
    )
    async with service:
        transport = httpx.ASGITransport(app=create_app(service, lifespan=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            c.headers["X-Role"] = "owner"
            yield c


async def test_200_with_envelope_etag_and_no_store(client: httpx.AsyncClient) -> None:
    """A good request gets the envelope, a quoted strong ETag equal to the hash, and Cache-Control: no-store."""
    r = await client.get("/api/integrations/status", params={"projectId": "p"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"projectId", "items", "hash"}
    assert len(body["items"]) == 4
    assert r.headers["etag"] == f'"{body["hash"]}"'
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("tag", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
async def test_304_when_if_none_match_matches(client: httpx.AsyncClient, tag: str) -> None:
    """Exact, weak, listed and * tags all answer 304 with no body, the same ETag and no Content-Length: 0."""
    first = await client.get("/api/integrations/status", params={"projectId": "p"})
    etag = first.headers["etag"]
    r = await client.get(
        "/api/integrations/status",
        params={"projectId": "p"},
        headers={"If-None-Match": tag.format(etag=etag)},
    )
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag
    assert r.headers["cache-control"] == "no-store"
    assert "content-length" not in r.headers


@pytest.mark.parametrize("tag", ['"nope"', "garbage", 'W/"', ""])
async def test_non_matching_or_malformed_if_none_match_is_200(client: httpx.AsyncClient, tag: str) -> None:
    """A tag that does not match, or a malformed header, gets the normal 200."""
    r = await client.get(
        "/api/integrations/status", params={"projectId": "p"}, headers={"If-None-Match": tag}
    )
    assert r.status_code == 200


async def test_missing_project_id_is_400(client: httpx.AsyncClient) -> None:
    """No projectId -> 400 invalid_request in the error object."""
    r = await client.get("/api/integrations/status")
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "invalid_request", "message": "projectId is required"}}


async def test_unauthenticated_is_401_even_with_matching_etag(client: httpx.AsyncClient) -> None:
    """No viewer -> 401, which wins over If-None-Match."""
    r = await client.get(
        "/api/integrations/status", params={"projectId": "p"}, headers={"X-Role": "", "If-None-Match": "*"}
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("role", ["none"])
async def test_no_access_is_404_like_unknown(client: httpx.AsyncClient, role: str) -> None:
    """A viewer without access gets the same 404 as for a project that does not exist."""
    hidden = await client.get("/api/integrations/status", params={"projectId": "p"}, headers={"X-Role": role})
    unknown = await client.get("/api/integrations/status", params={"projectId": "nope"})
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json() == unknown.json()


async def test_viewers_who_see_different_data_never_share_a_hash(client: httpx.AsyncClient) -> None:
    """The owner sees the branch, the member does not; their hashes differ and neither leaks into the other."""
    owner = await client.get("/api/integrations/status", params={"projectId": "p"})
    member = await client.get(
        "/api/integrations/status", params={"projectId": "p"}, headers={"X-Role": "member"}
    )
    assert owner.json()["hash"] != member.json()["hash"]
    assert "release-x" in owner.text
    assert "release-x" not in member.text
    r = await client.get(
        "/api/integrations/status",
        params={"projectId": "p"},
        headers={"X-Role": "member", "If-None-Match": owner.headers["etag"]},
    )
    assert r.status_code == 200


async def test_hash_is_the_keyed_hash_of_the_body_without_hash() -> None:
    """With a configured secret, the hash is HMAC-SHA256 under its derived key of the canonical JSON of the
    envelope without `hash` (and a plain SHA-256 of it is not)."""
    import hashlib

    from integration_status.core.etag import canonical_json, compute_etag, etag_key
    from integration_status.service import Settings

    service = StatusService(
        connections=StaticConnections.linked("p", "github"),
        adapters=[ScriptedAdapter("github", GITHUB)],
        authenticator=header_auth,
        settings=Settings(etag_secret="deployment-secret"),
        clock=FakeClock(),
        authorizer=allow_global_roles,
    )
    async with service:
        transport = httpx.ASGITransport(app=create_app(service, lifespan=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.get(
                "/api/integrations/status", params={"projectId": "p"}, headers={"X-Role": "owner"}
            )
    body = r.json()
    digest = body.pop("hash")
    assert compute_etag(body, key=etag_key("deployment-secret")) == digest
    assert hashlib.sha256(canonical_json(body)).hexdigest()[:32] != digest
