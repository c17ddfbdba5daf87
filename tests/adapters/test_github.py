"""GitHubAdapter: status rules, fallbacks, redaction-ready summaries, errors and actions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from adapter_support import Router, fetch_ctx
from hypothesis import given
from hypothesis import strategies as st

from integration_status.adapters.github import GitHubAdapter, GitHubFacts, github_snapshot
from integration_status.adapters.http import HttpClient
from integration_status.core.clock import SYSTEM_CLOCK, utcnow
from integration_status.exceptions import (
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from integration_status.protocols import ActionContext, ActionRequest, ProviderConnection
from integration_status.snapshot import Ago, Sensitive, Visibility, render_summary

REPO = "/repos/octocat/Hello-World"
CONN = ProviderConnection(
    provider="github", settings={"repository": "octocat/Hello-World"}, token="ghp_TOPSECRET"
)


def _repo(payload: Any, **changes: Any) -> dict[str, Any]:
    env = payload("github/repo_200")
    env["body"].update(changes)
    return env


def _activity(payload: Any, at: datetime) -> dict[str, Any]:
    env = payload("github/activity_push_200")
    env["body"][0]["timestamp"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return env


@pytest.mark.anyio
async def test_recent_push_is_connected(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """A push two minutes ago: connected, "Linked to main · Last push 2m ago", with GitHub's headers."""
    now = utcnow(clock)
    router.add("GET", REPO, _repo(payload, default_branch="main"))
    router.add("GET", f"{REPO}/activity", _activity(payload, now - timedelta(minutes=2)))
    snap = await GitHubAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "connected"
    assert render_summary(snap.summary, Visibility.full(), now) == "Linked to main · Last push 2m ago"
    assert render_summary(snap.summary, Visibility.none(), now) == "Linked · Last push 2m ago"
    activity = router.calls[1]
    assert activity.url.params["ref"] == "refs/heads/main"
    assert activity.url.params["activity_type"] == "push"
    assert activity.headers["x-github-api-version"] == "2022-11-28"
    assert activity.headers["accept"] == "application/vnd.github+json"
    assert activity.headers["authorization"] == "Bearer ghp_TOPSECRET"


@pytest.mark.anyio
async def test_old_push_is_warning(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """A push more than 7 days ago: warning, "Linked to main · No recent activity"."""
    router.add("GET", REPO, _repo(payload, default_branch="main"))
    router.add("GET", f"{REPO}/activity", _activity(payload, utcnow(clock) - timedelta(days=8)))
    snap = await GitHubAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "warning"
    assert (
        render_summary(snap.summary, Visibility.full(), utcnow(clock))
        == "Linked to main · No recent activity"
    )


@pytest.mark.anyio
async def test_falls_back_to_commits(http: HttpClient, router: Router, clock: Any, payload: Any) -> None:
    """Empty activity: the newest commit on the configured branch gives the date (recorded payload: 2011)."""
    conn = ProviderConnection(
        provider="github", settings={"repository": "octocat/Hello-World", "branch": "dev"}
    )
    router.add("GET", REPO, _repo(payload))
    router.add("GET", f"{REPO}/activity", httpx.Response(200, json=[]))
    router.add("GET", f"{REPO}/commits", payload("github/commits_latest_200"))
    snap = await GitHubAdapter(http=http).fetch(conn, fetch_ctx(clock))
    assert router.calls[-1].url.params["sha"] == "dev"
    assert snap.status == "warning"
    assert snap.detail("lastPushAt") == Ago(at=datetime(2011, 4, 14, 16, 0, 49, tzinfo=UTC))
    assert snap.detail("sha") == Sensitive(kind="sha", value="6dcb09b5b57875f334f61aebed695e2e4193db5e")


@pytest.mark.anyio
async def test_activity_api_missing_falls_back(
    http: HttpClient, router: Router, clock: Any, payload: Any
) -> None:
    """A server without the activity API (404) still gets a status from the commit list."""
    ghe = "/api/v3" + REPO
    router.add("GET", ghe, _repo(payload))
    router.add("GET", f"{ghe}/activity", httpx.Response(404, json={"message": "Not Found"}))
    router.add("GET", f"{ghe}/commits", httpx.Response(409, json={"message": "Git Repository is empty."}))
    adapter = GitHubAdapter(http=http, base_url="https://ghe.example.test/api/v3/")
    snap = await adapter.fetch(CONN, fetch_ctx(clock))
    assert snap.status == "warning"
    assert str(router.calls[0].url).startswith("https://ghe.example.test/api/v3/repos/")


@pytest.mark.anyio
async def test_no_repository_is_disconnected(http: HttpClient, router: Router, clock: Any) -> None:
    """No repository setting: disconnected without any call, only connect offered."""
    snap = await GitHubAdapter(http=http).fetch(ProviderConnection(provider="github"), fetch_ctx(clock))
    assert snap.status == "disconnected"
    assert router.calls == []
    assert [a.id for a in snap.actions if a.available] == ["connect"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("github/error_401_bad_credentials", ProviderAuthError),
        ("github/error_404_repo_not_found_or_no_access", ProviderAuthError),
        ("github/error_403_primary_rate_limit", ProviderRateLimited),
    ],
)
async def test_repo_errors(
    http: HttpClient, router: Router, clock: Any, payload: Any, name: str, expected: type
) -> None:
    """Lost access (401, 404 on the linked repo) is an auth error; an exhausted quota is rate limited."""
    router.add("GET", REPO, payload(name))
    with pytest.raises(expected) as info:
        await GitHubAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert "TOPSECRET" not in repr(info.value)
    assert "Hello-World" not in str(info.value)


@pytest.mark.anyio
async def test_resource_not_accessible_on_commits_is_auth(
    http: HttpClient, router: Router, clock: Any, payload: Any
) -> None:
    """GitHub's 403 "Resource not accessible" while reading commits is lost access."""
    router.add("GET", REPO, _repo(payload))
    router.add("GET", f"{REPO}/activity", httpx.Response(200, json=[]))
    router.add("GET", f"{REPO}/commits", payload("github/error_403_resource_not_accessible"))
    with pytest.raises(ProviderAuthError):
        await GitHubAdapter(http=http).fetch(CONN, fetch_ctx(clock))


@pytest.mark.anyio
async def test_unexpected_shape_is_unavailable(http: HttpClient, router: Router, clock: Any) -> None:
    """A repository answer without default_branch is an unexpected shape."""
    router.add("GET", REPO, httpx.Response(200, json={"name": "x"}))
    with pytest.raises(ProviderUnavailable, match="shape"):
        await GitHubAdapter(http=http).fetch(CONN, fetch_ctx(clock))


@pytest.mark.anyio
async def test_read_only_and_hooks_refine_actions(
    http: HttpClient, router: Router, clock: Any, payload: Any
) -> None:
    """Without push permission, push and sync are unavailable; push/pull without host hooks say so."""
    router.add("GET", REPO, _repo(payload, permissions={"push": False, "pull": True}))
    router.add("GET", f"{REPO}/activity", _activity(payload, utcnow(clock)))
    snap = await GitHubAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    reasons = {a.id: a.reason for a in snap.actions}
    assert reasons["push"] == "Read-only access"
    assert reasons["sync"] == "Read-only access"
    assert reasons["pull"] == "Not configured"


def test_snapshot_keeps_sensitive_values_out_of_plain_text() -> None:
    """Repo, branch and org live only in Sensitive pieces, never in plain summary strings."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    snap = github_snapshot(
        GitHubFacts(repository="acme/secret-repo", branch="feat/x", last_push=now), now=now
    )
    plain = [p for seg in snap.summary for p in seg.pieces if isinstance(p, str)] + [
        s.redacted for s in snap.summary
    ]
    assert not any(v and ("secret-repo" in v or "feat/x" in v or "acme" in v) for v in plain)
    assert snap.detail("repository") == Sensitive(kind="repo", value="acme/secret-repo")
    assert snap.detail("org") == Sensitive(kind="org", value="acme")
    assert "secret-repo" not in repr(snap)


@given(age=st.integers(min_value=0, max_value=30 * 86400))
def test_seven_day_rule(age: int) -> None:
    """connected exactly when the last push is at most 7 days old."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    facts = GitHubFacts(repository="o/r", branch="main", last_push=now - timedelta(seconds=age))
    assert (github_snapshot(facts, now=now).status == "connected") == (age <= 7 * 86400)


def _actx(clock: Any, events: list[Any]) -> ActionContext:
    async def publish(event: Any) -> None:
        events.append(event)

    return ActionContext(clock=clock, operation_id="op_1", timeout=5, publish=publish, spawn=lambda fn: None)


@pytest.mark.anyio
async def test_sync_sends_repository_dispatch(http: HttpClient, router: Router, clock: Any) -> None:
    """sync POSTs a repository_dispatch with our event type, once, and is done."""
    router.add("POST", f"{REPO}/dispatches", httpx.Response(204))
    handler = GitHubAdapter(http=http).action_handlers()["sync"]
    req = ActionRequest(project_id="p1", provider="github", action="sync")
    outcome = await handler(req, CONN, _actx(clock, []))
    assert outcome.done
    assert outcome.operation_id == "op_1"
    body = json.loads(router.calls[0].content)
    assert body["event_type"] == "integration-status.sync"


@pytest.mark.anyio
async def test_push_pull_connect_need_host_hooks(http: HttpClient, clock: Any) -> None:
    """push without a hook is "not configured"; connect answers the hook's URL."""
    req = ActionRequest(project_id="p1", provider="github", action="push")

    async def url(r: ActionRequest) -> str:
        return f"https://example.test/connect/{r.project_id}"

    handlers = GitHubAdapter(http=http, connect_url=url).action_handlers()
    assert set(handlers) == {"push", "pull", "sync", "connect"}
    with pytest.raises(ProviderUnavailable, match="push is not configured for this host"):
        await handlers["push"](req, CONN, _actx(clock, []))
    outcome = await handlers["connect"](req, CONN, _actx(clock, []))
    assert outcome.data == {"url": "https://example.test/connect/p1"}


@pytest.mark.anyio
async def test_loopback_timeout_and_reset(hanging_server: str, resetting_server: str) -> None:
    """Against real sockets the adapter gives up within its budget, and a reset is a timeout."""
    async with HttpClient() as http:
        for server in (hanging_server, resetting_server):
            ctx = fetch_ctx(SYSTEM_CLOCK, timeout=0.3)
            start = SYSTEM_CLOCK.monotonic()
            with pytest.raises(ProviderTimeout):
                await GitHubAdapter(http=http, base_url=server).fetch(CONN, ctx)
            assert SYSTEM_CLOCK.monotonic() - start < 1.0


@pytest.mark.anyio
async def test_disabled_repository_is_error(
    http: HttpClient, router: Router, clock: Any, payload: Any
) -> None:
    """A repository GitHub disabled (``disabled: true``): error with a hint, whatever its last push."""
    now = utcnow(clock)
    router.add("GET", REPO, _repo(payload, default_branch="main", disabled=True))
    router.add("GET", f"{REPO}/activity", _activity(payload, now - timedelta(minutes=2)))
    snap = await GitHubAdapter(http=http).fetch(CONN, fetch_ctx(clock))
    assert snap.status == "error"
    assert snap.problem is not None
    assert snap.problem.hint == "Repository disabled by GitHub"
    assert render_summary(snap.summary, Visibility.none(), now) == "Linked · Repository disabled"


def test_archived_repository_warns_and_blocks_writes() -> None:
    """An archived repository is read-only: warning, push and sync unavailable, even after a recent push."""
    now = datetime(2026, 1, 10, tzinfo=UTC)
    facts = GitHubFacts(repository="o/r", branch="main", archived=True, last_push=now)
    snap = github_snapshot(facts, now=now, push_configured=True)
    assert snap.status == "warning"
    blocked = {a.id: a.reason for a in snap.actions if not a.available}
    assert blocked["push"] == blocked["sync"] == "Repository archived"
