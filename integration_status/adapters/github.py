"""GitHub: is the linked repository reachable, and when was the linked branch last pushed?

Calls (``base_url`` defaults to ``https://api.github.com``; set it to ``https://HOST/api/v3`` for GitHub
Enterprise Server): ``GET /repos/{owner}/{repo}``, then the last push to the branch from
``GET /repos/{owner}/{repo}/activity`` with a fallback to ``GET /repos/{owner}/{repo}/commits``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import attrs

from integration_status._config import check_base_url
from integration_status.adapters._common import (
    UrlHook,
    delegate,
    paced,
    parse_time,
    raise_first,
    refine,
    revalidate,
    settle,
    text,
    url_action,
)
from integration_status.adapters.http import HttpClient, JsonResponse
from integration_status.core.clock import utcnow
from integration_status.exceptions import ProviderUnavailable
from integration_status.models import Problem, ProviderKey, StatusValue
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    Adapter,
    FetchContext,
    ProviderConnection,
)
from integration_status.snapshot import (
    Ago,
    ProviderSnapshot,
    Segment,
    Sensitive,
    Validators,
    default_actions,
)

__all__ = ["SYNC_EVENT_TYPE", "GitHubAdapter", "GitHubFacts", "github_snapshot"]

#: The ``event_type`` of the ``repository_dispatch`` the default sync action sends.
SYNC_EVENT_TYPE: Final = "integration-status.sync"
_PROVIDER: Final[ProviderKey] = "github"
_HEADERS: Final = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


@attrs.frozen(kw_only=True)
class GitHubFacts:
    """What the GitHub API said about one linked repository."""

    repository: str  # "owner/name"
    branch: str
    archived: bool = False
    #: GitHub disabled the repository (billing, terms of service): nothing can be read or pushed until fixed.
    disabled: bool = False
    can_push: bool = True
    last_push: datetime | None = None
    head_sha: str | None = None


def github_snapshot(
    facts: GitHubFacts,
    *,
    now: datetime,
    stale_after: timedelta = timedelta(days=7),
    push_configured: bool = False,
    pull_configured: bool = False,
) -> ProviderSnapshot:
    """The status rule: error when GitHub disabled the repository; warning when it is archived (read-only) or
    the branch was not pushed within ``stale_after``; connected otherwise.

    >>> from datetime import UTC
    >>> now = datetime(2026, 1, 10, tzinfo=UTC)
    >>> github_snapshot(GitHubFacts(repository="o/r", branch="main", last_push=now), now=now).status
    'connected'
    >>> github_snapshot(GitHubFacts(repository="o/r", branch="main"), now=now).status
    'warning'
    """
    linked = Segment(pieces=("Linked to ", Sensitive(kind="branch", value=facts.branch)), redacted="Linked")
    recent = facts.last_push is not None and now - facts.last_push <= stale_after
    summary: list[Segment] = [linked]
    if facts.disabled:
        return ProviderSnapshot(
            provider=_PROVIDER,
            status="error",
            summary=(linked, text("Repository disabled")),
            problem=Problem(code="unknown", hint="Repository disabled by GitHub"),
            details=_details(facts),
        )
    if facts.archived:
        summary.append(text("Repository archived"))
    elif recent and facts.last_push is not None:
        summary.append(Segment(pieces=("Last push ", Ago(at=facts.last_push))))
    else:
        summary.append(text("No recent activity"))
    status: StatusValue = "connected" if recent and not facts.archived else "warning"
    details = _details(facts)
    write_block = "Repository archived" if facts.archived else None if facts.can_push else "Read-only access"
    actions = refine(
        default_actions(_PROVIDER, status),
        {
            "push": write_block or (None if push_configured else "Not configured"),
            "pull": None if pull_configured else "Not configured",
            "sync": write_block,
        },
    )
    return ProviderSnapshot(
        provider=_PROVIDER, status=status, summary=tuple(summary), actions=actions, details=details
    )


def _details(facts: GitHubFacts) -> dict[str, Any]:
    details: dict[str, Any] = {
        "repository": Sensitive(kind="repo", value=facts.repository),
        "branch": Sensitive(kind="branch", value=facts.branch),
        "org": Sensitive(kind="org", value=facts.repository.split("/", 1)[0]),
    }
    if facts.last_push is not None:
        details["lastPushAt"] = Ago(at=facts.last_push)
    if facts.head_sha:
        details["sha"] = Sensitive(kind="sha", value=facts.head_sha)
    return details


def unlinked_snapshot() -> ProviderSnapshot:
    """No repository configured: disconnected, only ``connect`` available."""
    return ProviderSnapshot(
        provider=_PROVIDER, status="disconnected", summary=(text("No repository linked"),)
    )


def _shape_error(what: str) -> ProviderUnavailable:
    return ProviderUnavailable(f"github: unexpected response shape ({what})", provider=_PROVIDER)


class GitHubAdapter(Adapter):  # nominally an Adapter: a list of mixed adapters infers as list[Adapter]
    """The GitHub adapter. ``push``/``pull`` run host hooks; ``sync`` sends a ``repository_dispatch``
    (event type ``integration-status.sync``, needs contents:write); ``connect`` answers a URL from a host
    hook."""

    provider: ProviderKey = _PROVIDER
    #: The connection settings this adapter reads; others are reported as a likely typo.
    settings_keys: frozenset[str] = frozenset({"repository", "branch"})

    def __init__(
        self,
        *,
        http: HttpClient,
        base_url: str = "https://api.github.com",
        stale_after: timedelta = timedelta(days=7),
        on_push: ActionHandler | None = None,
        on_pull: ActionHandler | None = None,
        connect_url: UrlHook | None = None,
    ) -> None:
        self._http = http
        self._base = check_base_url(base_url, provider=_PROVIDER)
        self._stale_after = stale_after
        self._on_push = on_push
        self._on_pull = on_pull
        self._connect_url = connect_url

    def __repr__(self) -> str:
        return f"GitHubAdapter(base_url={self._base!r})"

    async def fetch(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
        """Read the repository and the branch's last push; raise a ProviderError on failure.

        Every call is conditional on the validators the previous snapshot kept: GitHub answers 304 when nothing
        changed, which does not count against its primary rate limit."""
        return paced(self._http, connection, ctx, await self._read(connection, ctx))

    async def _read(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
        repository = connection.settings.get("repository", "").strip()
        if not repository:
            return unlinked_snapshot()
        path = _repo_path(repository)
        configured = connection.settings.get("branch", "").strip()
        kept: dict[str, Validators] = {}

        def read_repo() -> Awaitable[Mapping[str, Any]]:
            return revalidate(
                "repo",
                ctx.previous,
                kept,
                lambda v: self._get(connection, ctx, path, not_found_is_revoked=True, validators=v),
                _repo_facts,
            )

        # The branch to read pushes of: the configured one, else the default branch seen last time. Known in
        # advance, the repository and its pushes are read at once; the default branch is checked afterwards.
        guess = configured or _previous_branch(ctx)
        if guess:
            results = await settle(read_repo, lambda: self._last_push(connection, ctx, path, guess, kept))
            raise_first(results[:1])
            repo: Mapping[str, Any] = results[0]
        else:
            repo = await read_repo()
        branch = configured or str(repo["default_branch"])
        if guess and branch == guess:
            raise_first(results)
            last_push, sha = results[1]
        else:
            last_push, sha = await self._last_push(connection, ctx, path, branch, kept)
        facts = GitHubFacts(
            repository=str(repo.get("full_name") or repository),
            branch=branch,
            archived=repo.get("archived") is True,
            disabled=repo.get("disabled") is True,
            can_push=repo.get("can_push") is not False,
            last_push=last_push,
            head_sha=sha,
        )
        snapshot = github_snapshot(
            facts,
            now=utcnow(ctx.clock),
            stale_after=self._stale_after,
            push_configured=self._on_push is not None,
            pull_configured=self._on_pull is not None,
        )
        return attrs.evolve(snapshot, validators=kept)

    async def _last_push(
        self,
        connection: ProviderConnection,
        ctx: FetchContext,
        path: str,
        branch: str,
        kept: dict[str, Validators],
    ) -> tuple[datetime | None, str | None]:
        previous = ctx.previous
        try:
            push: Mapping[str, Any] = await revalidate(
                "activity",
                previous,
                kept,
                lambda v: self._get(
                    connection,
                    ctx,
                    f"{path}/activity",
                    params={"ref": f"refs/heads/{branch}", "activity_type": "push", "per_page": "1"},
                    validators=v,
                ),
                _push_facts,
            )
        except ProviderUnavailable as exc:
            # Older GitHub Enterprise Server versions have no activity API (404); use the commit list instead.
            if exc.status_code not in (404, 410, 422):
                raise
        else:
            if push.get("at") is not None:
                return parse_time(push["at"]), _text_or_none(push.get("sha"))
        # No push in the activity window (it only reaches back so far): the newest commit tells the rest.
        try:
            head: Mapping[str, Any] = await revalidate(
                "commits",
                previous,
                kept,
                lambda v: self._get(
                    connection, ctx, f"{path}/commits", params={"sha": branch, "per_page": "1"}, validators=v
                ),
                _commit_facts,
            )
        except ProviderUnavailable as exc:
            if exc.status_code in (404, 409, 422):  # unknown branch, empty repository
                return None, None
            raise
        return parse_time(head.get("at")), _text_or_none(head.get("sha"))

    async def _get(
        self,
        connection: ProviderConnection,
        ctx: FetchContext,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        not_found_is_revoked: bool = False,
        validators: Validators | None = None,
    ) -> JsonResponse:
        return await self._http.request_json(
            _PROVIDER,
            "GET",
            f"{self._base}{path}",
            token=connection.token,
            headers=_HEADERS,
            params=params,
            timeout=ctx.remaining(),
            clock=ctx.clock,
            not_found_is_revoked=not_found_is_revoked,
            validators=validators,
        )

    def action_handlers(self) -> Mapping[str, ActionHandler]:
        return {
            "push": delegate(_PROVIDER, "push", self._on_push),
            "pull": delegate(_PROVIDER, "pull", self._on_pull),
            "sync": self._sync,
            "connect": url_action(_PROVIDER, "connect", self._connect_url),
        }

    async def _sync(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        """Send a ``repository_dispatch`` that the repository's workflows can react to."""
        repository = connection.settings.get("repository", "").strip()
        if not repository:
            raise ProviderUnavailable("github: no repository linked", provider=_PROVIDER)
        await self._http.request_json(
            _PROVIDER,
            "POST",
            f"{self._base}{_repo_path(repository)}/dispatches",
            token=connection.token,
            headers=_HEADERS,
            json={"event_type": SYNC_EVENT_TYPE, "client_payload": {"operationId": ctx.operation_id}},
            timeout=ctx.timeout,
            clock=ctx.clock,
            not_found_is_revoked=True,
        )
        return ActionOutcome(operation_id=ctx.operation_id, done=True, changes_state=True)


def _repo_facts(body: Any) -> dict[str, Any]:
    """What a repository answer says, as JSON kept with its validators."""
    if not isinstance(body, Mapping) or not isinstance(body.get("default_branch"), str):
        raise _shape_error("repository")
    permissions = body.get("permissions")
    return {
        "default_branch": body["default_branch"],
        "full_name": _text_or_none(body.get("full_name")),
        "archived": body.get("archived") is True,
        "disabled": body.get("disabled") is True,
        "can_push": not isinstance(permissions, Mapping) or bool(permissions.get("push", True)),
    }


def _push_facts(body: Any) -> dict[str, Any]:
    """The newest push of an activity answer: ``{"at", "sha"}``, or ``{}`` when there is none in its window."""
    if not isinstance(body, list):
        raise _shape_error("activity")
    if not body or not isinstance(body[0], Mapping):
        return {}
    return {"at": _text_or_none(body[0].get("timestamp")), "sha": _text_or_none(body[0].get("after"))}


def _commit_facts(body: Any) -> dict[str, Any]:
    """The newest commit of a commit list: ``{"at", "sha"}`` (committer date), or ``{}`` for an empty branch."""
    if not isinstance(body, list):
        raise _shape_error("commits")
    if not body or not isinstance(body[0], Mapping):
        return {}
    commit = body[0].get("commit")
    committer = commit.get("committer") if isinstance(commit, Mapping) else None
    at = committer.get("date") if isinstance(committer, Mapping) else None
    return {"at": _text_or_none(at), "sha": _text_or_none(body[0].get("sha"))}


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _previous_branch(ctx: FetchContext) -> str | None:
    """The branch the previous check read: its default branch as kept with the repository's validators, else the
    branch detail."""
    if ctx.previous is None:
        return None
    repo = ctx.previous.validators_for("repo")
    if (
        repo is not None
        and isinstance(repo.facts, Mapping)
        and isinstance(repo.facts.get("default_branch"), str)
    ):
        return str(repo.facts["default_branch"])
    known = ctx.previous.detail("branch")
    return known.value if isinstance(known, Sensitive) and known.value else None


def _repo_path(repository: str) -> str:
    owner, _, name = repository.partition("/")
    if not owner or not name or "/" in name:
        raise ProviderUnavailable(
            "github: the repository setting must look like owner/name", provider=_PROVIDER
        )
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
