"""Expiring tokens: a RefreshableToken is minted again once after a rejection, and the call retried once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from adapter_support import Router, fetch_ctx

from integration_status.adapters.github import GitHubAdapter
from integration_status.adapters.http import HttpClient
from integration_status.adapters.sanity import SanityAdapter
from integration_status.core.clock import utcnow
from integration_status.exceptions import ProviderAuthError
from integration_status.protocols import ProviderConnection, RefreshableToken, Secret

REPO = "/repos/octocat/Hello-World"


class Minter:
    """A host minting function: hands out ``ghs_1``, ``ghs_2``, … (or fails), counting its calls."""

    def __init__(self, *, fails: bool = False) -> None:
        self.calls = 0
        self.fails = fails

    async def __call__(self) -> Secret:
        self.calls += 1
        if self.fails:
            raise RuntimeError("refresh token ghr_SECRET revoked")
        return Secret(f"ghs_{self.calls}")


def _accepting(*tokens: str) -> Any:
    """A GitHub that accepts only ``tokens``: 401 "Bad credentials" otherwise."""

    def answer(request: httpx.Request, body: Any) -> httpx.Response:
        if request.headers.get("authorization") not in {f"Bearer {t}" for t in tokens}:
            return httpx.Response(401, json={"message": "Bad credentials"})
        return httpx.Response(200, json=body)

    return answer


def _github(router: Router, clock: Any, *tokens: str) -> None:
    accept = _accepting(*tokens)
    push = {
        "timestamp": (utcnow(clock) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "after": "abc",
    }
    router.add(
        "GET", REPO, lambda r: accept(r, {"full_name": "octocat/Hello-World", "default_branch": "main"})
    )
    router.add("GET", f"{REPO}/activity", lambda r: accept(r, [push]))


def _conn(token: RefreshableToken) -> ProviderConnection:
    return ProviderConnection(provider="github", settings={"repository": "octocat/Hello-World"}, token=token)


@pytest.mark.anyio
async def test_expired_token_is_refreshed_once_and_the_call_retried(
    http: HttpClient, router: Router, clock: Any
) -> None:
    """An expired installation token: one refresh, one retry of the rejected call, then connected."""
    _github(router, clock, "ghs_1")
    mint = Minter()
    token = RefreshableToken(mint, token="ghs_EXPIRED")
    snap = await GitHubAdapter(http=http).fetch(_conn(token), fetch_ctx(clock))
    assert snap.status == "connected"
    assert mint.calls == 1
    sent = [(r.url.path, r.headers["authorization"]) for r in router.calls]
    assert sent == [
        (REPO, "Bearer ghs_EXPIRED"),
        (REPO, "Bearer ghs_1"),
        (f"{REPO}/activity", "Bearer ghs_1"),
    ]
    assert (await token.current()).reveal() == "ghs_1"


@pytest.mark.anyio
async def test_revoked_access_is_oauth_revoked_after_exactly_one_refresh(
    http: HttpClient, router: Router, clock: Any
) -> None:
    """When the fresh token is rejected too: oauth_revoked, after exactly one refresh attempt and one retry."""
    _github(router, clock)  # accepts nothing
    mint = Minter()
    with pytest.raises(ProviderAuthError) as caught:
        await GitHubAdapter(http=http).fetch(_conn(RefreshableToken(mint, token="ghs_OLD")), fetch_ctx(clock))
    assert caught.value.problem_code == "oauth_revoked"
    assert mint.calls == 1
    assert router.count("GET", REPO) == 2


@pytest.mark.anyio
async def test_failed_minting_is_oauth_revoked_without_its_secrets(
    http: HttpClient, router: Router, clock: Any
) -> None:
    """A minting function that raises: oauth_revoked, one attempt, and nothing of its error travels on."""
    _github(router, clock)
    mint = Minter(fails=True)
    with pytest.raises(ProviderAuthError) as caught:
        await GitHubAdapter(http=http).fetch(_conn(RefreshableToken(mint, token="ghs_OLD")), fetch_ctx(clock))
    assert mint.calls == 1
    assert "ghr_SECRET" not in repr(caught.value)
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None


@pytest.mark.anyio
async def test_first_use_mints_when_the_host_has_no_token_yet(
    http: HttpClient, router: Router, clock: Any
) -> None:
    """Without a current token, the first call mints one; no call is sent without a token."""
    _github(router, clock, "ghs_1")
    mint = Minter()
    snap = await GitHubAdapter(http=http).fetch(_conn(RefreshableToken(mint)), fetch_ctx(clock))
    assert snap.status == "connected"
    assert mint.calls == 1
    assert all(r.headers["authorization"] == "Bearer ghs_1" for r in router.calls)


@pytest.mark.anyio
async def test_concurrent_rejections_share_one_mint(http: HttpClient, router: Router, clock: Any) -> None:
    """Sanity's calls run at once; all rejected with the expired token, they share one fresh token."""
    accept = _accepting("ghs_1")
    router.add("GET", "/v2021-06-07/projects/p1", lambda r: accept(r, {"id": "p1"}))
    router.add("GET", "/v2025-08-04/hooks/projects/p1", lambda r: accept(r, [{"id": "h1", "dataset": "*"}]))
    router.add("GET", "/v2025-08-04/hooks/projects/p1/h1/messages", lambda r: accept(r, []))
    router.add("GET", "/v2021-10-21/data/query/production", lambda r: accept(r, {"result": 1}))
    mint = Minter()
    conn = ProviderConnection(
        provider="sanity", settings={"project_id": "p1"}, token=RefreshableToken(mint, token="old")
    )
    snap = await SanityAdapter(http=http).fetch(conn, fetch_ctx(clock))
    assert snap.status == "connected"
    assert mint.calls == 1


@pytest.mark.anyio
async def test_a_fixed_token_is_never_retried(http: HttpClient, router: Router, clock: Any) -> None:
    """A plain Secret rejected with 401 is oauth_revoked at once: one call, no retry."""
    _github(router, clock)
    conn = ProviderConnection(
        provider="github", settings={"repository": "octocat/Hello-World"}, token="ghp_X"
    )
    with pytest.raises(ProviderAuthError):
        await GitHubAdapter(http=http).fetch(conn, fetch_ctx(clock))
    assert len(router.calls) == 1


def test_refreshable_token_never_shows_its_value() -> None:
    """Its repr and str hide the token, and so do the reprs of connections that carry it."""
    token = RefreshableToken(Minter(), token="ghs_VISIBLE")
    assert "ghs_VISIBLE" not in repr(token) + str(token) + repr(_conn(token))
