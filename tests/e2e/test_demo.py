"""The demo a newcomer runs: status with four items, ETag and 304, per-role redaction, and real providers by
configuration alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from integration_status.demo.server import build_app
from tests.e2e.conftest import serve

pytestmark = pytest.mark.anyio
PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "provider-payloads"


async def test_demo_status_etag_and_304() -> None:
    """GET status?projectId=demo answers four items with an ETag, and 304 on a repeat with If-None-Match."""
    async with serve(build_app()) as base, httpx.AsyncClient(base_url=base) as client:
        first = await client.get("/api/integrations/status", params={"projectId": "demo"})
        assert first.status_code == 200
        body = first.json()
        assert [i["key"] for i in body["items"]] == ["sanity", "github", "vercel", "supabase"]
        assert first.headers["etag"] == f'"{body["hash"]}"'
        again = await client.get(
            "/api/integrations/status",
            params={"projectId": "demo"},
            headers={"If-None-Match": first.headers["etag"]},
        )
        assert again.status_code == 304
        page = await client.get("/", follow_redirects=True)
        assert page.status_code == 200
        assert "status-bar.js" in page.text


async def test_demo_roles_and_projects() -> None:
    """Members see no repository names; `empty` is all disconnected; other ids are 404."""
    async with serve(build_app()) as base, httpx.AsyncClient(base_url=base) as client:
        owner = await client.get("/api/integrations/status", params={"projectId": "demo"})
        member = await client.get(
            "/api/integrations/status", params={"projectId": "demo"}, headers={"X-Role": "member"}
        )
        assert "Linked to main" in owner.text
        assert "main" not in member.text
        assert owner.json()["hash"] != member.json()["hash"]
        empty = await client.get("/api/integrations/status", params={"projectId": "empty"})
        assert {i["status"] for i in empty.json()["items"]} == {"disconnected"}
        missing = await client.get("/api/integrations/status", params={"projectId": "nope"})
        assert missing.status_code == 404


def fixture(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


async def test_demo_switches_to_real_providers_by_configuration() -> None:
    """With --providers real, the demo calls the GitHub API at GITHUB_API_URL with the token from the env."""
    repo = fixture("github/repo_200.json")["body"]
    activity = fixture("github/activity_push_200.json")["body"]
    seen: list[str] = []

    async def github(request: Request) -> JSONResponse:
        seen.append(request.headers.get("authorization", ""))
        return JSONResponse(activity if request.url.path.endswith("/activity") else repo)

    fake = Starlette(
        routes=[Route("/repos/{owner}/{name}", github), Route("/repos/{owner}/{name}/activity", github)]
    )
    async with serve(fake) as github_url:
        env = {
            "GITHUB_TOKEN": "ghp_demo",
            "GITHUB_REPOSITORY": "octocat/Hello-World",
            "GITHUB_API_URL": github_url,
        }
        app = build_app(providers="real", env=env)
        async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
            r = await client.get("/api/integrations/status", params={"projectId": "demo"})
    items = {i["key"]: i for i in r.json()["items"]}
    assert seen
    assert all(h == "Bearer ghp_demo" for h in seen)
    assert items["github"]["status"] in {"connected", "warning"}
    assert items["github"]["summary"].startswith("Linked to ")
    assert items["vercel"]["status"] == "disconnected"
    assert "ghp_demo" not in r.text


async def test_demo_answers_unknown_paths_and_wrong_methods_with_the_error_object() -> None:
    """The demo's own 404 and 405 (outside the API prefix too) are JSON error objects, not plain text."""
    async with serve(build_app()) as base, httpx.AsyncClient(base_url=base) as client:
        for method, path, status, code in (
            ("GET", "/nope", 404, "not_found"),
            ("GET", "/static/missing.js", 404, "not_found"),
            ("POST", "/", 405, "invalid_request"),
            ("DELETE", "/api/integrations/status", 405, "invalid_request"),
            ("GET", "/api/integrations/unknown", 404, "not_found"),
        ):
            r = await client.request(method, path)
            assert r.status_code == status, (method, path)
            assert r.headers["content-type"].startswith("application/json"), (method, path)
            assert r.json()["error"]["code"] == code


async def test_demo_health_gives_detail_to_owners_only() -> None:
    """A demo viewer or member gets the liveness answer; the (default) owner the detailed checks."""
    async with serve(build_app()) as base, httpx.AsyncClient(base_url=base) as client:
        for role in ("viewer", "member"):
            r = await client.get("/api/integrations/health", headers={"X-Role": role})
            assert (r.status_code, r.json()) == (200, {"status": "ok"})
        owner = await client.get("/api/integrations/health")
        assert "checks" in owner.json()
