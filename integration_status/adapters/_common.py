"""Small pieces the four HTTP adapters share: host hooks, "not configured" errors, summary helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Final, TypeAlias

import anyio
import attrs

from integration_status.adapters.budget import WEBHOOK_STRETCH
from integration_status.adapters.http import HttpClient, JsonResponse
from integration_status.exceptions import ProviderError, ProviderUnavailable
from integration_status.models import ProviderKey
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    FetchContext,
    ProviderConnection,
)
from integration_status.snapshot import ActionState, ProviderSnapshot, Segment, Validators

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


#: The refresh interval assumed when the caller did not say (the cache's default TTL).
DEFAULT_TTL: Final = 15.0


def paced(
    http: HttpClient, connection: ProviderConnection, ctx: FetchContext, snap: ProviderSnapshot
) -> ProviderSnapshot:
    """``snap``, asking to stay fresh longer than the cache's TTL while the rate budget of the connection's token
    runs low (:func:`~integration_status.adapters.budget.refresh_interval`), or while the provider's signed
    webhooks keep arriving for the project (at least ``WEBHOOK_STRETCH`` times the TTL)."""
    base = ctx.ttl if ctx.ttl is not None else DEFAULT_TTL
    now = ctx.clock.time()
    interval = http.budgets.interval(snap.provider, connection.token, base=base, now=now)
    if ctx.webhooks_arriving:
        interval = max(interval, base * WEBHOOK_STRETCH)
    return attrs.evolve(snap, fresh_for=interval) if interval > base else snap


async def revalidate(
    name: str,
    previous: ProviderSnapshot | None,
    kept: dict[str, Validators],
    call: Callable[[Validators | None], Awaitable[JsonResponse]],
    read: Callable[[Any], Any],
) -> Any:
    """One conditional provider call: the facts ``read`` takes from its body, or, when the provider answers 304
    to the validators the ``previous`` snapshot kept under ``name``, the facts kept with them. The validators of
    this answer go into ``kept`` (for the new snapshot), so that the next check can ask again."""
    known = previous.validators_for(name) if previous is not None else None
    resp = await call(known)
    if resp.not_modified and known is not None:
        kept[name] = Validators(
            etag=resp.headers.get("etag") or known.etag,
            last_modified=resp.headers.get("last-modified") or known.last_modified,
            facts=known.facts,
        )
        return known.facts
    facts = read(resp.body)
    fresh = resp.validators(facts)
    if fresh.etag or fresh.last_modified:
        kept[name] = fresh
    return facts


async def settle(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run independent provider calls at once and wait for all of them: one result per call, in order, where a
    call that failed with a :class:`ProviderError` gives that error as its result (any other exception is raised).
    The calls share the fetch's budget, so the slowest one bounds the fetch instead of the sum of all."""
    results: list[Any] = [None] * len(calls)
    crashed: list[BaseException | None] = [None] * len(calls)

    async def one(index: int, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            results[index] = await call()
        except ProviderError as exc:
            results[index] = exc
        except Exception as exc:
            crashed[index] = exc

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(one, index, call)
    for exc in crashed:
        if exc is not None:
            raise exc
    return results


def raise_first(results: Sequence[Any]) -> None:
    """Raise the first error among :func:`settle` results, in call order (so the error does not depend on which
    call answered first)."""
    for result in results:
        if isinstance(result, ProviderError):
            raise result


async def gather(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """:func:`settle`, then :func:`raise_first`: all results, or the first failure in call order."""
    results = await settle(*calls)
    raise_first(results)
    return results


__all__ = [
    "DEFAULT_TTL",
    "UrlHook",
    "delegate",
    "gather",
    "not_configured",
    "paced",
    "parse_time",
    "plural",
    "raise_first",
    "refine",
    "revalidate",
    "settle",
    "text",
    "url_action",
]
