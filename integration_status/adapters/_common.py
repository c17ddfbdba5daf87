"""Small pieces the four HTTP adapters share: host hooks, "not configured" errors, summary helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, TypeAlias

from integration_status.exceptions import ProviderUnavailable
from integration_status.models import ProviderKey
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    ProviderConnection,
)
from integration_status.snapshot import ActionState, Segment

#: A host hook that returns a URL for the browser to open (an OAuth start page, a provider settings page).
UrlHook: TypeAlias = Callable[[ActionRequest], Awaitable[str]]


def not_configured(provider: ProviderKey, action: str) -> ProviderUnavailable:
    """The error an action raises when the host gave it no implementation (the web layer maps it)."""
    return ProviderUnavailable(f"{action} is not configured for this host", provider=provider)


def url_action(provider: ProviderKey, action: str, hook: UrlHook | None) -> ActionHandler:
    """An action that answers ``{"url": ...}`` from a host hook, or fails as not configured."""

    async def run(
        request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        if hook is None:
            raise not_configured(provider, action)
        url = await hook(request)
        return ActionOutcome(operation_id=ctx.operation_id, data={"url": url}, changes_state=False)

    return run


def delegate(provider: ProviderKey, action: str, hook: ActionHandler | None) -> ActionHandler:
    """An action that a host implements entirely (e.g. GitHub push): absent -> not configured."""

    async def run(
        request: ActionRequest, connection: ProviderConnection, ctx: ActionContext
    ) -> ActionOutcome:
        if hook is None:
            raise not_configured(provider, action)
        return await hook(request, connection, ctx)

    return run


def text(value: str) -> Segment:
    """A plain summary segment."""
    return Segment(pieces=(value,))


def plural(count: int, word: str) -> str:
    """A count and a noun in agreement.

    >>> plural(1, "deployment"), plural(3, "deployment")
    ('1 deployment', '3 deployments')
    """
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def refine(
    actions: Iterable[ActionState], changes: dict[str, str | None], *, only_if_available: bool = True
) -> tuple[ActionState, ...]:
    """Mark actions unavailable with a reason (``None`` keeps them as they are)."""
    out: list[ActionState] = []
    for a in actions:
        reason = changes.get(a.id)
        if reason is not None and (a.available or not only_if_available):
            a = ActionState(id=a.id, label=a.label, available=False, reason=reason)
        out.append(a)
    return tuple(out)


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 provider timestamp, or None when absent or unreadable (the rest stays usable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


__all__ = [
    "UrlHook",
    "delegate",
    "not_configured",
    "parse_time",
    "plural",
    "refine",
    "text",
    "url_action",
]
