"""Vercel: is the project reachable, does it deploy, and is production live? Ships a real ``deploy`` action.

Calls (``base_url`` defaults to ``https://api.vercel.com``; every call takes ``?teamId=`` when the connection
has a ``team_id``): ``GET /v9/projects/{idOrName}``, ``GET /v6/deployments`` (this week's count),
``POST /v13/deployments`` and ``GET /v13/deployments/{id}`` (deploy and its progress).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final
from urllib.parse import quote

import attrs

from integration_status._config import check_base_url
from integration_status._logging import get_logger
from integration_status.adapters._common import (
    UrlHook,
    paced,
    plural,
    raise_first,
    refine,
    settle,
    text,
    url_action,
)
from integration_status.adapters.http import HttpClient, JsonResponse
from integration_status.core.clock import Clock, epoch_ms
from integration_status.core.idempotency import reconciling
from integration_status.exceptions import (
    OutcomeUnknown,
    ProviderAuthError,
    ProviderError,
    ProviderUnavailable,
)
from integration_status.models import ProviderKey, StatusValue
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    Adapter,
    FetchContext,
    ProviderConnection,
    Secret,
)
from integration_status.snapshot import ProviderSnapshot, Segment, Sensitive, default_actions

__all__ = ["VercelAdapter", "VercelFacts", "vercel_snapshot"]

_PROVIDER: Final[ProviderKey] = "vercel"
_FINAL_STATES: Final = frozenset({"READY", "ERROR", "CANCELED"})
_BUILDING: Final = frozenset({"QUEUED", "INITIALIZING", "BUILDING"})
_WEEK: Final = timedelta(days=7)
_PAGE_SIZE: Final = 100
_MAX_PAGES: Final = 5
_log = get_logger(__name__)


@attrs.frozen(kw_only=True)
class VercelFacts:
    """What the Vercel API said about one project."""

    has_deployments: bool
    deployments_this_week: int
    production_state: str | None = None  # readyState of the current production deployment
    production_url: str | None = None  # "https://..."
    git_linked: bool = False
    paused: bool = False
    can_deploy: bool = True  # something to redeploy, a git link, or a deploy hook


def vercel_snapshot(facts: VercelFacts) -> ProviderSnapshot:
    """The status rule: connected when deployments exist and production is live (or building) and the project
    deploys from Git; warning for a project with no deployments yet, a paused project (its production
    deployment is blocked), a failed or canceled production deployment, or a project with no Git link ("No Git
    link": only manual deploys reach it, so pushes do not).

    >>> vercel_snapshot(VercelFacts(has_deployments=False, deployments_this_week=0)).status
    'warning'
    >>> facts = VercelFacts(has_deployments=True, deployments_this_week=3, production_state="READY")
    >>> [vercel_snapshot(f).status for f in (attrs.evolve(facts, git_linked=True), facts)]
    ['connected', 'warning']
    """
    status: StatusValue
    if not facts.has_deployments:
        status = "warning"
        summary: tuple[Segment, ...] = (text("Linked"), text("No deployments yet"))
    else:
        tail = {"READY": "Live", "ERROR": "Deploy failed", "CANCELED": "Deploy canceled"}.get(
            facts.production_state or "", "Building" if facts.production_state in _BUILDING else "Not live"
        )
        if facts.paused:
            tail = "Paused"
        summary = (text(plural(facts.deployments_this_week, "deployment") + " this week"), text(tail))
        status = "connected" if tail in ("Live", "Building") else "warning"
        if not facts.git_linked:
            summary += (text("No Git link"),)
            status = "warning"
    details: dict[str, Any] = {"deploymentsThisWeek": facts.deployments_this_week}
    if facts.production_url:
        details["productionUrl"] = Sensitive(kind="url", value=facts.production_url)
    reason = None if facts.can_deploy else "No deployments yet"
    changes = {"deploy": reason, "link": "Already linked" if facts.git_linked else None}
    return ProviderSnapshot(
        provider=_PROVIDER,
        status=status,
        summary=summary,
        actions=refine(default_actions(_PROVIDER, status), changes),
        details=details,
    )


def _https(url: Any) -> str | None:
    if not isinstance(url, str) or not url:
        return None
    return url if url.startswith("https://") else f"https://{url}"


def _production(project: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The current production deployment: ``targets.production``, else the newest production deployment."""
    targets = project.get("targets")
    if isinstance(targets, Mapping) and isinstance(targets.get("production"), Mapping):
        prod: Mapping[str, Any] = targets["production"]
        return prod
    for item in project.get("latestDeployments") or ():
        if isinstance(item, Mapping) and item.get("target") == "production":
            return item
    return None


class VercelAdapter(Adapter):  # nominally an Adapter: a list of mixed adapters infers as list[Adapter]
    """The Vercel adapter. ``deploy`` redeploys production (or deploys the linked git branch, or calls the
    connection's ``deploy_hook`` setting), answers 202 and reports ``deploy:started`` and
    ``deploy:finished``."""

    provider: ProviderKey = _PROVIDER
    #: The connection settings this adapter reads; others are reported as a likely typo.
    settings_keys: frozenset[str] = frozenset({"project", "team_id", "deploy_hook"})

    def __init__(
        self,
        *,
        http: HttpClient,
        base_url: str = "https://api.vercel.com",
        deploy_poll_interval: float = 3.0,
        deploy_timeout: float = 900.0,
        link_url: UrlHook | None = None,
        connect_url: UrlHook | None = None,
    ) -> None:
        self._http = http
        self._base = check_base_url(base_url, provider=_PROVIDER)
        self._poll = deploy_poll_interval
        self._deploy_timeout = deploy_timeout
        self._link_url = link_url
        self._connect_url = connect_url

    def __repr__(self) -> str:
        return f"VercelAdapter(base_url={self._base!r})"

    async def fetch(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
        """Read the project and count this week's deployments; raise a ProviderError on failure."""
        return paced(self._http, connection, ctx, await self._read(connection, ctx))

    async def _read(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
        project_ref = connection.settings.get("project", "").strip()
        if not project_ref:
            return ProviderSnapshot(
                provider=_PROVIDER, status="disconnected", summary=(text("No project linked"),)
            )
        since = epoch_ms(ctx.clock) - int(_WEEK.total_seconds() * 1000)
        count: int | None = None
        if project_ref.startswith("prj_"):
            # The setting is the project id: the week's deployments can be counted while the project is read.
            results = await settle(
                lambda: self._project(connection, project_ref, ctx.remaining(), ctx.clock),
                lambda: self._count_since(connection, ctx, project_ref, since),
            )
            raise_first(results[:1])
            project, counted = results
        else:
            project = await self._project(connection, project_ref, ctx.remaining(), ctx.clock)
            counted = None
        latest = [d for d in project.get("latestDeployments") or () if isinstance(d, Mapping)]
        prod = _production(project)
        if latest or prod is not None:
            if counted is None or str(project.get("id")) != project_ref:
                counted = await self._count_since(
                    connection, ctx, str(project.get("id") or project_ref), since
                )
            raise_first([counted])
            count = counted
        count = count or 0
        facts = VercelFacts(
            has_deployments=bool(latest) or prod is not None or count > 0,
            deployments_this_week=count,
            production_state=str(prod.get("readyState")) if prod and prod.get("readyState") else None,
            production_url=_https(prod.get("url")) if prod else None,
            git_linked=isinstance(project.get("link"), Mapping),
            paused=project.get("paused") is True,
            can_deploy=prod is not None
            or isinstance(project.get("link"), Mapping)
            or _hook(connection) is not None,
        )
        return vercel_snapshot(facts)

    async def _project(
        self, connection: ProviderConnection, ref: str, budget: float, clock: Clock
    ) -> Mapping[str, Any]:
        resp = await self._call(
            connection, "GET", f"/v9/projects/{quote(ref, safe='')}", budget=budget, clock=clock, revoked=True
        )
        if not isinstance(resp.body, Mapping) or not isinstance(resp.body.get("id"), str):
            raise ProviderUnavailable("vercel: unexpected response shape (project)", provider=_PROVIDER)
        return resp.body

    async def _count_since(
        self, connection: ProviderConnection, ctx: FetchContext, project_id: str, since: int
    ) -> int:
        count = 0
        until: int | None = None
        for _ in range(_MAX_PAGES):  # bounded: a busy project's count stops at a few hundred
            params = {"projectId": project_id, "since": str(since), "limit": str(_PAGE_SIZE)}
            if until is not None:
                params["until"] = str(until)
            resp = await self._call(
                connection, "GET", "/v6/deployments", params=params, budget=ctx.remaining(), clock=ctx.clock
            )
            body = resp.body
            if not isinstance(body, Mapping) or not isinstance(body.get("deployments"), list):
                raise ProviderUnavailable(
                    "vercel: unexpected response shape (deployments)", provider=_PROVIDER
                )
            count += sum(1 for d in body["deployments"] if isinstance(d, Mapping) and _created(d) >= since)
            pagination = body.get("pagination")
            nxt = pagination.get("next") if isinstance(pagination, Mapping) else None
            # Stop at the end, past the window, or if the cursor does not move (never loop on one page).
            if not isinstance(nxt, int | float) or nxt < since or not body["deployments"]:
                break
            if until is not None and nxt >= until:
                break
            until = int(nxt)
        return count

    async def _call(
        self,
        connection: ProviderConnection,
        method: str,
        path: str,
        *,
        budget: float,
        clock: Clock,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        revoked: bool = False,
    ) -> JsonResponse:
        query = dict(params or {})
        team = connection.settings.get("team_id", "").strip()
        if team:
            query["teamId"] = team
        return await self._http.request_json(
            _PROVIDER,
            method,
            f"{self._base}{path}",
            token=connection.token,
            params=query,
            json=json,
            timeout=budget,
            clock=clock,
            not_found_is_revoked=revoked,
        )

    def action_handlers(self) -> Mapping[str, ActionHandler]:
        return {
            "deploy": self._deploy,
            "link": url_action(_PROVIDER, "link", self._link_url),
            "connect": url_action(_PROVIDER, "connect", self._connect_url),
        }

    @reconciling
    async def _deploy(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        """Start a production deployment and follow it in the background; resumed after a crash, find the
        deployment the crashed attempt started and follow that one instead."""
        if ctx.resume is not None:
            found = await self._reconcile(connection, ctx, ctx.resume)
            if found is not None:
                since = int(ctx.resume.get("at") or epoch_ms(ctx.clock))
                return self._follow_in_background(request, connection, ctx, *found, started_ms=since)
            if ctx.resume.get("answered"):  # only following was left to do, and there is nothing to follow
                return ActionOutcome(operation_id=ctx.operation_id, done=False, changes_state=False)
            # Vercel has no deployment since the crashed attempt began: it provably never started one.
        started_ms = epoch_ms(ctx.clock)
        hook = _hook(connection)
        deployment_id: str | None = None
        project_id: str | None = None
        if hook is not None:
            # A deploy hook needs no token; it answers with a job, not a deployment id (found while polling).
            await self._http.request_json(
                _PROVIDER, "POST", hook, token=None, timeout=ctx.timeout, clock=ctx.clock
            )
            await ctx.checkpoint({"hook": True})
        else:
            ref = connection.settings.get("project", "").strip()
            if not ref:
                raise ProviderUnavailable("vercel: no project linked", provider=_PROVIDER)
            project = await self._project(connection, ref, ctx.timeout, ctx.clock)
            project_id = str(project["id"])
            body = _deploy_body(project)
            resp = await self._call(
                connection, "POST", "/v13/deployments", json=body, budget=ctx.timeout, clock=ctx.clock
            )
            if not isinstance(resp.body, Mapping) or not isinstance(resp.body.get("id"), str):
                raise ProviderUnavailable(
                    "vercel: unexpected response shape (deployment)", provider=_PROVIDER
                )
            deployment_id = resp.body["id"]
            await ctx.checkpoint({"deploymentId": deployment_id, "vercelProjectId": project_id})
        await ctx.publish(
            {
                "type": "deploy:started",
                "provider": _PROVIDER,
                "projectId": request.project_id,
                "operationId": ctx.operation_id,
                "ts": started_ms,
            }
        )
        return self._follow_in_background(
            request, connection, ctx, deployment_id, project_id, started_ms=started_ms
        )

    def _follow_in_background(
        self,
        request: ActionRequest,
        connection: ProviderConnection,
        ctx: ActionContext,
        deployment_id: str | None,
        project_id: str | None,
        *,
        started_ms: int,
    ) -> ActionOutcome:

        async def follow() -> None:
            success, url = await self._follow(connection, ctx, deployment_id, project_id, started_ms)
            event: dict[str, Any] = {
                "type": "deploy:finished",
                "provider": _PROVIDER,
                "projectId": request.project_id,
                "operationId": ctx.operation_id,
                "ts": epoch_ms(ctx.clock),
                "success": success,
            }
            if url:
                event["url"] = url
            await ctx.publish(event)

        ctx.spawn(follow)
        return ActionOutcome(operation_id=ctx.operation_id, done=False, changes_state=True)

    async def _reconcile(
        self, connection: ProviderConnection, ctx: ActionContext, resume: Mapping[str, Any]
    ) -> tuple[str | None, str | None] | None:
        """The deployment a crashed attempt started, from its checkpoint or by asking Vercel for one created
        since the attempt began: ``(deployment id or None while a hook's job has none yet, project id)``, or
        None when Vercel has none (the attempt never reached it). Raises OutcomeUnknown when Vercel cannot
        be asked (a hook-only connection without a token)."""
        project_id = resume.get("vercelProjectId")
        if isinstance(resume.get("deploymentId"), str):
            return resume["deploymentId"], project_id
        if resume.get("hook") and connection.token is None:
            return None, None  # the hook answered; following finds the deployment, or gives up
        since = int(resume.get("at") or 0)
        try:
            found, project_id = await self._find_hook_deployment(
                connection, ctx, project_id, since, ctx.timeout
            )
        except ProviderAuthError:
            raise OutcomeUnknown(
                "The outcome of vercel deploy is unknown: the server handling it stopped, and vercel cannot "
                "be asked without a project token",
                provider=_PROVIDER,
                hint="Check the project's deployments on Vercel before deploying again with a new Idempotency-Key",
            ) from None
        if found is None and resume.get("hook"):
            return None, project_id  # the hook answered: its deployment may not be listed yet
        if found is not None:
            await ctx.checkpoint({"deploymentId": found, "vercelProjectId": project_id})
            return found, project_id
        return None

    async def _follow(
        self,
        connection: ProviderConnection,
        ctx: ActionContext,
        deployment_id: str | None,
        project_id: str | None,
        started_ms: int,
    ) -> tuple[bool, str | None]:
        """Poll until the deployment reaches a final state or ``deploy_timeout`` passes."""
        deadline = ctx.clock.monotonic() + self._deploy_timeout
        url: str | None = None
        while ctx.clock.monotonic() < deadline:
            await ctx.clock.sleep(self._poll)
            budget = min(ctx.timeout, max(0.0, deadline - ctx.clock.monotonic()))
            try:
                if deployment_id is None:
                    deployment_id, project_id = await self._find_hook_deployment(
                        connection, ctx, project_id, started_ms, budget
                    )
                    continue
                resp = await self._call(
                    connection,
                    "GET",
                    f"/v13/deployments/{quote(deployment_id, safe='')}",
                    budget=budget,
                    clock=ctx.clock,
                )
            except ProviderAuthError:
                return False, url
            except ProviderError as exc:  # transient: keep polling until the deadline
                _log.info("integration_status.vercel.deploy_poll_failed", code=exc.problem_code)
                continue
            state = resp.body.get("readyState") if isinstance(resp.body, Mapping) else None
            url = _https(resp.body.get("url")) if isinstance(resp.body, Mapping) else url
            if state in _FINAL_STATES:
                return state == "READY", url
        return False, url

    async def _find_hook_deployment(
        self,
        connection: ProviderConnection,
        ctx: ActionContext,
        project_id: str | None,
        since_ms: int,
        budget: float,
    ) -> tuple[str | None, str | None]:
        if project_id is None:
            ref = connection.settings.get("project", "").strip()
            if not ref or connection.token is None:
                raise ProviderAuthError(
                    "vercel: cannot follow a deploy hook without a project token", provider=_PROVIDER
                )
            project_id = str((await self._project(connection, ref, budget, ctx.clock))["id"])
        resp = await self._call(
            connection,
            "GET",
            "/v6/deployments",
            budget=budget,
            clock=ctx.clock,
            params={"projectId": project_id, "since": str(since_ms), "limit": "1"},
        )
        items = resp.body.get("deployments") if isinstance(resp.body, Mapping) else None
        if isinstance(items, list) and items and isinstance(items[0], Mapping):
            uid = items[0].get("uid") or items[0].get("id")
            return (str(uid) if uid else None), project_id
        return None, project_id


def _created(deployment: Mapping[str, Any]) -> int:
    value = deployment.get("created", deployment.get("createdAt"))
    return int(value) if isinstance(value, int | float) else 0


def _hook(connection: ProviderConnection) -> Secret | None:
    value = connection.settings.get("deploy_hook", "").strip()
    return Secret(value) if value else None


def _deploy_body(project: Mapping[str, Any]) -> dict[str, Any]:
    """Redeploy current production when there is one, else deploy the linked git production branch."""
    name = str(project.get("name") or project["id"])
    prod = _production(project)
    if prod is not None and isinstance(prod.get("id"), str):
        return {"name": name, "project": project["id"], "deploymentId": prod["id"], "target": "production"}
    link = project.get("link")
    if isinstance(link, Mapping) and link.get("type"):
        ref = link.get("productionBranch") or "main"
        source: dict[str, Any] = {"type": link["type"], "ref": ref}
        if link.get("repoId") is not None:
            source["repoId"] = link["repoId"]
        else:
            source.update({"org": link.get("org"), "repo": link.get("repo")})
        return {"name": name, "project": project["id"], "target": "production", "gitSource": source}
    raise ProviderUnavailable(
        "vercel: nothing to deploy (no deployments yet and no git link)", provider=_PROVIDER
    )
