"""Conditional requests: GitHub answers 304 to the validators the previous snapshot kept, across workers too."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import attrs
import httpx
import pytest
from adapter_support import Router, fetch_ctx

from integration_status.adapters.github import GitHubAdapter
from integration_status.adapters.http import HttpClient
from integration_status.core.clock import utcnow
from integration_status.protocols import ProviderConnection
from integration_status.snapshot import ProviderSnapshot, Validators, Visibility, render_summary

REPO = "/repos/octocat/Hello-World"
CONN = ProviderConnection(provider="github", settings={"repository": "octocat/Hello-World"}, token="ghp_T")


class ETagged:
    """A GitHub resource with an ETag: 304 when ``If-None-Match`` names the current one, else 200 with it."""

    def __init__(self, body: Any, etag: str) -> None:
        self.body, self.etag = body, etag
        self.conditional: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        asked = request.headers.get("if-none-match")
        self.conditional.append(asked)
        if asked == self.etag:
            return httpx.Response(304, headers={"etag": self.etag, "x-ratelimit-remaining": "4990"})
        return httpx.Response(200, headers={"etag": self.etag}, json=self.body)


def _push(clock: Any, minutes: int, sha: str) -> list[dict[str, Any]]:
    at = (utcnow(clock) - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [{"timestamp": at, "after": sha}]


def _setup(router: Router, clock: Any) -> tuple[ETagged, ETagged]:
    repo = ETagged({"full_name": "octocat/Hello-World", "default_branch": "main"}, 'W/"r1"')
    activity = ETagged(_push(clock, 2, "aaa"), 'W/"a1"')
    router.add("GET", REPO, repo)
    router.add("GET", f"{REPO}/activity", activity)
    return repo, activity


@pytest.mark.anyio
async def test_unchanged_answers_are_304_and_serve_the_previous_facts(
    http: HttpClient, router: Router, clock: Any
) -> None:
    """The second check sends each call's ETag, gets two 304s, and answers the same snapshot with its validators."""
    repo, activity = _setup(router, clock)
    adapter = GitHubAdapter(http=http)
    first = await adapter.fetch(CONN, fetch_ctx(clock))
    assert repo.conditional == activity.conditional == [None]
    again = await adapter.fetch(CONN, attrs.evolve(fetch_ctx(clock), previous=first))
    assert repo.conditional[-1] == 'W/"r1"'
    assert activity.conditional[-1] == 'W/"a1"'
    assert again == first
    assert again.validators == first.validators
    assert (
        render_summary(again.summary, Visibility.full(), utcnow(clock)) == "Linked to main · Last push 2m ago"
    )


@pytest.mark.anyio
async def test_a_new_push_is_read_while_the_repository_answers_304(
    http: HttpClient, router: Router, clock: Any
) -> None:
    """Only the changed resource sends a body: a push changes the activity ETag, the repository stays 304."""
    _, activity = _setup(router, clock)
    adapter = GitHubAdapter(http=http)
    first = await adapter.fetch(CONN, fetch_ctx(clock))
    clock.advance(600)
    activity.body, activity.etag = _push(clock, 0, "bbb"), 'W/"a2"'
    again = await adapter.fetch(CONN, attrs.evolve(fetch_ctx(clock), previous=first))
    assert again != first
    assert again.detail("sha").value == "bbb"
    validators = again.validators_for("activity")
    assert validators is not None
    assert validators.etag == 'W/"a2"'


@pytest.mark.anyio
async def test_validators_survive_the_shared_cache_json(http: HttpClient, router: Router, clock: Any) -> None:
    """Through the JSON form a shared cache stores (another worker), the validators still make the call a 304."""
    repo, activity = _setup(router, clock)
    adapter = GitHubAdapter(http=http)
    first = await adapter.fetch(CONN, fetch_ctx(clock))
    stored = ProviderSnapshot.from_json(json.loads(json.dumps(first.to_json())))
    assert stored.validators == first.validators
    again = await adapter.fetch(CONN, attrs.evolve(fetch_ctx(clock), previous=stored))
    assert again == first
    assert repo.conditional[-1] == 'W/"r1"'
    assert activity.conditional[-1] == 'W/"a1"'


def test_validators_are_not_content() -> None:
    """Two snapshots that differ only in validators or freshness hint are equal (no change event, same ETag)."""
    plain = ProviderSnapshot(provider="github", status="connected")
    hinted = attrs.evolve(plain, validators={"repo": Validators(etag='"x"')}, fresh_for=120.0)
    assert plain == hinted
    assert hash(plain) == hash(hinted)


def test_entries_written_before_validators_still_load() -> None:
    """A cache entry's JSON without validators (an older version wrote it) loads with none."""
    data = ProviderSnapshot(provider="github", status="connected").to_json()
    del data["validators"], data["freshFor"]
    snap = ProviderSnapshot.from_json(data)
    assert snap.validators == ()
    assert snap.fresh_for is None


def test_validators_repr_hides_facts() -> None:
    """A snapshot repr in a log carries neither validators nor the repository names their facts hold."""
    v = Validators(etag='"x"', facts={"full_name": "acme/secret-repo"})
    snap = ProviderSnapshot(provider="github", status="connected", validators={"repo": v})
    assert "secret-repo" not in repr(v) + repr(snap)
