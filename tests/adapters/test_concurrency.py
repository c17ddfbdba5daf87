"""Independent provider calls run at once: slow providers (real loopback servers) fit the adapter budget."""

from __future__ import annotations

from urllib.parse import urlsplit

import anyio
import attrs
import pytest
from adapter_support import Answer, LoopbackJson, fetch_ctx

from integration_status.adapters.github import GitHubAdapter
from integration_status.adapters.http import HttpClient
from integration_status.adapters.sanity import SanityAdapter
from integration_status.adapters.supabase import SupabaseAdapter
from integration_status.adapters.vercel import VercelAdapter
from integration_status.core.clock import SYSTEM_CLOCK, epoch_ms, utcnow
from integration_status.models import format_timestamp
from integration_status.protocols import ProviderConnection

BUDGET = 2.5


def _sanity(method: str, path: str, headers: dict[str, str]) -> Answer:
    route = urlsplit(path).path
    if route == "/v2021-06-07/projects/p1":
        return 200, {}, {"id": "p1", "studioHost": "p1"}
    if route == "/v2025-08-04/hooks/projects/p1":
        hooks = [{"id": f"h{i}", "name": f"Hook {i}", "dataset": "*"} for i in range(3)]
        return 200, {}, hooks
    if route.endswith("/messages"):
        return 200, {}, [{"createdAt": "2025-11-26T05:00:00Z", "status": "success"}]
    if route == "/v2021-10-21/data/query/production":
        return 200, {}, {"result": 4}
    return 404, {}, {"message": "no route"}


@pytest.mark.anyio
async def test_sanity_answering_in_half_a_second_per_call_is_connected_within_budget() -> None:
    """Seven calls of 0.5 s each (project, hooks, three logs, count) give "connected" inside the 2.5 s budget."""
    with LoopbackJson(_sanity, delay=0.5) as server:
        async with HttpClient() as http:
            adapter = SanityAdapter(http=http, api_url=server.url, query_url=server.url)
            conn = ProviderConnection(provider="sanity", settings={"project_id": "p1"}, token="sk_x")
            with anyio.fail_after(BUDGET):
                snap = await adapter.fetch(conn, fetch_ctx(SYSTEM_CLOCK, BUDGET))
    assert snap.status == "connected"
    assert len(server.requests) == 6
    assert server.peak >= 3


def _github(method: str, path: str, headers: dict[str, str]) -> Answer:
    route = urlsplit(path).path
    if route == "/repos/o/r":
        return 200, {}, {"full_name": "o/r", "default_branch": "main"}
    if route == "/repos/o/r/activity":
        return 200, {}, [{"timestamp": format_timestamp(utcnow(SYSTEM_CLOCK)), "after": "abc"}]
    return 404, {}, {"message": "Not Found"}


@pytest.mark.anyio
async def test_github_reads_repository_and_pushes_at_once_when_the_branch_is_known() -> None:
    """With a branch setting, the repository and its last push are requested together."""
    with LoopbackJson(_github, delay=0.2) as server:
        async with HttpClient() as http:
            conn = ProviderConnection(
                provider="github", settings={"repository": "o/r", "branch": "main"}, token="t"
            )
            snap = await GitHubAdapter(http=http, base_url=server.url).fetch(conn, fetch_ctx(SYSTEM_CLOCK))
    assert snap.status == "connected"
    assert server.peak == 2


def _vercel(method: str, path: str, headers: dict[str, str]) -> Answer:
    route = urlsplit(path).path
    if route == "/v9/projects/prj_1":
        production = {"id": "dpl_1", "readyState": "READY", "url": "x.vercel.app"}
        return 200, {}, {"id": "prj_1", "link": {"type": "github"}, "targets": {"production": production}}
    if route == "/v6/deployments":
        return 200, {}, {"deployments": [{"created": epoch_ms(SYSTEM_CLOCK)}], "pagination": {"next": None}}
    return 404, {}, {"error": {"code": "not_found"}}


@pytest.mark.anyio
async def test_vercel_counts_deployments_while_reading_a_project_named_by_id() -> None:
    """A ``prj_`` project setting lets the week's count run alongside the project read."""
    with LoopbackJson(_vercel, delay=0.2) as server:
        async with HttpClient() as http:
            conn = ProviderConnection(provider="vercel", settings={"project": "prj_1"}, token="t")
            snap = await VercelAdapter(http=http, base_url=server.url).fetch(conn, fetch_ctx(SYSTEM_CLOCK))
    assert snap.status == "connected"
    assert snap.detail("deploymentsThisWeek") == 1
    assert server.peak == 2


def _supabase(method: str, path: str, headers: dict[str, str]) -> Answer:
    route = urlsplit(path).path
    if route == "/v1/projects/ref1":
        return 200, {}, {"id": "ref1", "status": "ACTIVE_HEALTHY"}
    if route == "/v1/projects/ref1/health":
        return (
            200,
            {},
            [{"name": s, "status": "ACTIVE_HEALTHY", "healthy": True} for s in ("db", "rest", "auth")],
        )
    return 404, {}, {"message": "not found"}


@pytest.mark.anyio
async def test_supabase_reads_project_and_health_at_once_when_it_was_up() -> None:
    """A project that was up last time: project and health in parallel; the first check goes one by one."""
    with LoopbackJson(_supabase, delay=0.2) as server:
        async with HttpClient() as http:
            # The health call's round trip (0.2 s here, more on a busy machine) is what this adapter shows
            # as latency; the threshold is lifted so that the test is about concurrency only.
            adapter = SupabaseAdapter(http=http, base_url=server.url, latency_warning_ms=60_000)
            conn = ProviderConnection(provider="supabase", settings={"project_ref": "ref1"}, token="t")
            first = await adapter.fetch(conn, fetch_ctx(SYSTEM_CLOCK))
            assert server.peak == 1
            again = await adapter.fetch(conn, attrs.evolve(fetch_ctx(SYSTEM_CLOCK), previous=first))
    assert again.status == first.status == "connected"
    assert server.peak == 2
