"""Sanity: is the project usable, are its webhooks delivering, and how many documents changed today?

Calls (``api_url`` defaults to ``https://api.sanity.io``, ``query_url`` to ``https://{projectId}.api.sanity.io``):
``GET {api}/v2021-06-07/projects/{id}``, ``GET {api}/v2025-08-04/hooks/projects/{id}`` and each enabled hook's
``…/{hookId}/messages``, and the GROQ query ``count(*[_updatedAt > $since])`` on the configured dataset.
"""

from __future__ import annotations

import json as _json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import attrs

from integration_status._config import check_base_url
from integration_status.adapters._common import (
    UrlHook,
    gather,
    paced,
    parse_time,
    plural,
    raise_first,
    settle,
    text,
    url_action,
)
from integration_status.adapters.http import HttpClient, JsonResponse
from integration_status.core.clock import Clock, utcnow
from integration_status.exceptions import ProviderUnavailable
from integration_status.models import Problem, ProviderKey, format_timestamp
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    Adapter,
    FetchContext,
    ProviderConnection,
)
from integration_status.snapshot import ProviderSnapshot, Segment, Sensitive

__all__ = [
    "UPDATED_SINCE_QUERY",
    "SanityAdapter",
    "SanityFacts",
    "WebhookHealth",
    "sanity_snapshot",
    "webhook_health",
]

_PROVIDER: Final[ProviderKey] = "sanity"
#: Documents (drafts included, system documents excluded) changed since ``$since``.
UPDATED_SINCE_QUERY: Final = 'count(*[!(_id in path("_.**")) && _updatedAt > $since])'
#: How many enabled hooks get their delivery log read per fetch (each is one call, all at once).
_MAX_HOOKS_CHECKED: Final = 5


@attrs.frozen(kw_only=True)
class WebhookHealth:
    """What the hooks and their delivery logs say: hooks that deliver to the dataset, and the names of those
    that are failing (latest delivery failed) or disabled (by Sanity or by a user)."""

    enabled: int = 1
    failing: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.enabled > 0 and not self.failing and not self.disabled


@attrs.frozen(kw_only=True)
class SanityFacts:
    """What the Sanity APIs said about one project."""

    blocked: bool = False
    webhooks: WebhookHealth = attrs.field(factory=WebhookHealth)
    docs_today: int = 0
    studio_url: str | None = None


def webhook_health(
    hooks: Sequence[Any], messages: Mapping[str, Sequence[Any]], dataset: str
) -> WebhookHealth:
    """Classify the hooks aimed at ``dataset``: an enabled hook whose latest delivery failed is failing, a hook
    disabled by Sanity or by a user is disabled; a hook with no delivery yet is fine. Deleted hooks and hooks
    of other datasets do not count.

    >>> hooks = [{"id": "a", "name": "Search", "dataset": "*"}, {"id": "b", "name": "CDN", "isDisabled": True}]
    >>> webhook_health(hooks, {"a": [{"status": "failure", "createdAt": "2025-01-01T00:00:00Z"}]}, "production")
    WebhookHealth(enabled=1, failing=('Search',), disabled=('CDN',))
    """
    ours = _hooks_for(hooks, dataset)
    enabled = [h for h in ours if not _disabled(h)]
    failing = tuple(_name(h) for h in enabled if _latest_status(messages.get(str(h["id"]), ())) == "failure")
    disabled = tuple(_name(h) for h in ours if _disabled(h))
    return WebhookHealth(enabled=len(enabled), failing=failing, disabled=disabled)


def _hooks_for(hooks: Sequence[Any], dataset: str) -> list[Mapping[str, Any]]:
    return [
        h
        for h in hooks
        if isinstance(h, Mapping)
        and h.get("id")
        and not h.get("deletedAt")
        and h.get("dataset") in ("*", dataset, None)
    ]


def _disabled(hook: Mapping[str, Any]) -> bool:
    return bool(hook.get("isDisabled") or hook.get("isDisabledByUser"))


def _name(hook: Mapping[str, Any]) -> str:
    name = hook.get("name")
    return name if isinstance(name, str) and name.strip() else str(hook["id"])


def _enabled_hooks(hooks: Sequence[Any], dataset: str) -> list[Mapping[str, Any]]:
    return [h for h in _hooks_for(hooks, dataset) if not _disabled(h)]


def _latest_status(items: Sequence[Any]) -> str | None:
    dated = [
        (parse_time(m.get("createdAt")) or datetime.min.replace(tzinfo=UTC), m)
        for m in items
        if isinstance(m, Mapping)
    ]
    if not dated:
        return None
    status = max(dated, key=lambda pair: pair[0])[1].get("status")
    return str(status) if status is not None else None


def _hooks_segment(names: tuple[str, ...], state: str) -> Segment:
    """ "2 hooks failing: Search, CDN" for viewers who may see project details, "2 hooks failing" otherwise."""
    head = f"{plural(len(names), 'hook')} {state}"
    return Segment(pieces=(f"{head}: ", Sensitive(kind="org", value=", ".join(names))), redacted=head)


def sanity_snapshot(facts: SanityFacts) -> ProviderSnapshot:
    """The status rule: error when the project is blocked or disabled; warning "Connected · Webhook inactive"
    when no hook delivers to the dataset, "Connected · Webhook issues" when any hook is failing or disabled
    (how many, and their names as ``Sensitive(kind="org")`` pieces); else connected.

    >>> sanity_snapshot(SanityFacts(docs_today=5)).status
    'connected'
    >>> sanity_snapshot(SanityFacts(webhooks=WebhookHealth(enabled=2, failing=("Search",)))).status
    'warning'
    """
    details: dict[str, Any] = {"docsUpdatedToday": facts.docs_today}
    if facts.studio_url:
        details["studioUrl"] = Sensitive(kind="url", value=facts.studio_url)
    hooks = facts.webhooks
    if facts.blocked:
        return ProviderSnapshot(
            provider=_PROVIDER,
            status="error",
            summary=(text("Project disabled"),),
            problem=Problem(code="unknown", hint="Project disabled in Sanity"),
            details=details,
        )
    if hooks.failing or hooks.disabled:
        details["webhookIssues"] = len(hooks.failing) + len(hooks.disabled)
        summary = [text("Connected"), text("Webhook issues")]
        if hooks.failing:
            summary.append(_hooks_segment(hooks.failing, "failing"))
        if hooks.disabled:
            summary.append(_hooks_segment(hooks.disabled, "disabled"))
        return ProviderSnapshot(provider=_PROVIDER, status="warning", summary=summary, details=details)
    if hooks.enabled == 0:
        return ProviderSnapshot(
            provider=_PROVIDER,
            status="warning",
            summary=(text("Connected"), text("Webhook inactive")),
            details=details,
        )
    return ProviderSnapshot(
        provider=_PROVIDER,
        status="connected",
        summary=(text(plural(facts.docs_today, "doc") + " updated today"), text("Live sync")),
        details=details,
    )


class SanityAdapter(Adapter):  # nominally an Adapter: a list of mixed adapters infers as list[Adapter]
    """The Sanity adapter. ``sync`` runs a host hook or re-reads the project's documents; ``open-studio``
    answers the Studio URL; ``connect`` answers a URL from a host hook."""

    provider: ProviderKey = _PROVIDER
    #: The connection settings this adapter reads; others are reported as a likely typo.
    settings_keys: frozenset[str] = frozenset({"project_id", "dataset", "studio_url"})

    def __init__(
        self,
        *,
        http: HttpClient,
        api_url: str = "https://api.sanity.io",
        query_url: str = "https://{projectId}.api.sanity.io",
        on_sync: ActionHandler | None = None,
        connect_url: UrlHook | None = None,
    ) -> None:
        self._http = http
        self._api = check_base_url(api_url, provider=_PROVIDER, name="api_url")
        self._query_url = check_base_url(query_url, provider=_PROVIDER, name="query_url")
        self._on_sync = on_sync
        self._connect_url = connect_url

    def __repr__(self) -> str:
        return f"SanityAdapter(api_url={self._api!r})"

    async def fetch(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
        """Read the project, its webhooks and today's document count; raise a ProviderError on failure."""
        return paced(self._http, connection, ctx, await self._read(connection, ctx))

    async def _read(self, connection: ProviderConnection, ctx: FetchContext) -> ProviderSnapshot:
        project_id = connection.settings.get("project_id", "").strip()
        if not project_id:
            return ProviderSnapshot(
                provider=_PROVIDER, status="disconnected", summary=(text("No project linked"),)
            )
        dataset = _dataset(connection)
        hooks_path = f"/v2025-08-04/hooks/projects/{quote(project_id)}"

        async def hooks_and_messages() -> tuple[list[Any], dict[str, Sequence[Any]]]:
            resp = await self._get(connection, hooks_path, ctx)
            if not isinstance(resp.body, list):
                raise ProviderUnavailable("sanity: unexpected response shape (hooks)", provider=_PROVIDER)
            checked = [str(h["id"]) for h in _enabled_hooks(resp.body, dataset)[:_MAX_HOOKS_CHECKED]]

            def log(hook_id: str) -> Callable[[], Awaitable[JsonResponse]]:
                return lambda: self._get(connection, f"{hooks_path}/{quote(hook_id)}/messages", ctx)

            logs = await gather(*(log(hook_id) for hook_id in checked))
            messages: dict[str, Sequence[Any]] = {
                h: r.body if isinstance(r.body, list) else () for h, r in zip(checked, logs, strict=True)
            }
            return resp.body, messages

        # The project, the hooks (then their delivery logs) and the count do not depend on each other.
        results = await settle(
            lambda: self._project(connection, project_id, ctx.remaining(), ctx.clock),
            hooks_and_messages,
            lambda: self._count_today(connection, project_id, dataset, ctx.remaining(), ctx.clock),
        )
        raise_first(results[:1])
        project: Mapping[str, Any] = results[0]
        studio = _studio_url(connection, project)
        if project.get("isBlocked") or project.get("isDisabled") or project.get("isDisabledByUser"):
            # What the other calls said does not matter (a blocked project's dataset may refuse queries).
            return sanity_snapshot(SanityFacts(blocked=True, studio_url=studio))
        raise_first(results)
        (hooks, messages), count = results[1], results[2]
        return sanity_snapshot(
            SanityFacts(
                webhooks=webhook_health(hooks, messages, dataset), docs_today=count, studio_url=studio
            )
        )

    async def _project(
        self, connection: ProviderConnection, project_id: str, budget: float, clock: Clock
    ) -> Mapping[str, Any]:
        resp = await self._http.request_json(
            _PROVIDER,
            "GET",
            f"{self._api}/v2021-06-07/projects/{quote(project_id)}",
            token=connection.token,
            timeout=budget,
            clock=clock,
            not_found_is_revoked=True,
        )
        if not isinstance(resp.body, Mapping) or "id" not in resp.body:
            raise ProviderUnavailable("sanity: unexpected response shape (project)", provider=_PROVIDER)
        return resp.body

    async def _get(self, connection: ProviderConnection, path: str, ctx: FetchContext) -> JsonResponse:
        return await self._http.request_json(
            _PROVIDER,
            "GET",
            f"{self._api}{path}",
            token=connection.token,
            timeout=ctx.remaining(),
            clock=ctx.clock,
        )

    async def _count_today(
        self, connection: ProviderConnection, project_id: str, dataset: str, budget: float, clock: Clock
    ) -> int:
        today = utcnow(clock).replace(hour=0, minute=0, second=0, microsecond=0)
        base = self._query_url.replace("{projectId}", quote(project_id))
        # GROQ parameters travel as $name=<JSON value> in the query string.
        params = {"query": UPDATED_SINCE_QUERY, "$since": _json.dumps(format_timestamp(today))}
        resp = await self._http.request_json(
            _PROVIDER,
            "GET",
            f"{base}/v2021-10-21/data/query/{quote(dataset)}",
            token=connection.token,
            params=params,
            timeout=budget,
            clock=clock,
            not_found_is_revoked=True,
        )
        result = resp.body.get("result") if isinstance(resp.body, Mapping) else None
        if not isinstance(result, int) or isinstance(result, bool):
            raise ProviderUnavailable("sanity: unexpected response shape (query)", provider=_PROVIDER)
        return result

    def action_handlers(self) -> Mapping[str, ActionHandler]:
        return {
            "sync": self._sync,
            "open-studio": self._open_studio,
            "connect": url_action(_PROVIDER, "connect", self._connect_url),
        }

    async def _sync(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        if self._on_sync is not None:
            return await self._on_sync(request, connection, ctx)
        project_id = connection.settings.get("project_id", "").strip()
        if not project_id:
            raise ProviderUnavailable("sanity: no project linked", provider=_PROVIDER)
        count = await self._count_today(connection, project_id, _dataset(connection), ctx.timeout, ctx.clock)
        return ActionOutcome(
            operation_id=ctx.operation_id, data={"docsUpdatedToday": count}, changes_state=True
        )

    async def _open_studio(
        self, request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        url = connection.settings.get("studio_url", "").strip() or None
        if url is None and ctx.snapshot is not None:
            known = ctx.snapshot.detail("studioUrl")
            url = known.value if isinstance(known, Sensitive) else None
        if url is None:
            project_id = connection.settings.get("project_id", "").strip()
            if not project_id:
                raise ProviderUnavailable("sanity: no project linked", provider=_PROVIDER)
            url = _studio_url(connection, await self._project(connection, project_id, ctx.timeout, ctx.clock))
        if url is None:
            raise ProviderUnavailable("sanity: the project has no deployed Studio", provider=_PROVIDER)
        return ActionOutcome(operation_id=ctx.operation_id, data={"url": url}, changes_state=False)


def _dataset(connection: ProviderConnection) -> str:
    return connection.settings.get("dataset", "").strip() or "production"


def _studio_url(connection: ProviderConnection, project: Mapping[str, Any]) -> str | None:
    configured = connection.settings.get("studio_url", "").strip()
    if configured:
        return configured
    host = project.get("studioHost")
    return f"https://{host}.sanity.studio" if isinstance(host, str) and host else None
