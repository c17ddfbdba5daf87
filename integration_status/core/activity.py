"""When each (provider, project) last received an authentic webhook delivery, so that polling can slow down
while a provider's webhooks keep the status fresh. The service owns one; the aggregator tells each fetch."""

from __future__ import annotations

from typing import Final

from cachetools import LRUCache

__all__ = ["WEBHOOK_WINDOW", "WebhookActivity"]

#: Seconds after the last authentic delivery during which a provider counts as sending webhooks.
WEBHOOK_WINDOW: Final = 3600.0


class WebhookActivity:
    """When each (provider, project) last received an authentic webhook delivery, in process memory (one per service).

    >>> activity = WebhookActivity()
    >>> activity.note("github", "p1", now=0)
    >>> [activity.live(p, "p1", now=t) for p, t in (("github", 3000), ("github", 4000), ("vercel", 0))]
    [True, False, False]
    """

    def __init__(self, *, window: float = WEBHOOK_WINDOW, size: int = 10_000) -> None:
        self.window = window
        self._last: LRUCache[tuple[str, str], float] = LRUCache(maxsize=max(1, size))

    def note(self, provider: str, project_id: str, *, now: float) -> None:
        self._last[(provider, project_id)] = now

    def live(self, provider: str, project_id: str, *, now: float) -> bool:
        last = self._last.get((provider, project_id))
        return last is not None and now - last <= self.window


#: This process's record of authentic webhook deliveries: the webhook endpoint notes them, adapters pace by them.
