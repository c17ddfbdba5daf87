"""A bounded poll, for the one kind of wait that has no event to wait on: an effect that another process brings
about and announces to nobody in this one, such as a cluster forming, a stopped node answering again after it
resumes or fails over, or another worker's output. Everything this process does is awaited by its own event
instead (``FakeClock.until_sleepers``, a task's end, a handler's call, the Redis cache store's
``wait_changed``); time on the service's clock is always moved by hand."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

#: The default bound: an effect of another server on loopback.
WITHIN = 2.0


async def wait_until(
    predicate: Callable[[], bool],
    *,
    within: float = WITHIN,
    step: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Poll ``predicate`` for an effect of another server, bounded by ``within`` seconds; ``step`` runs before
    each look (e.g. a read that makes the store notice). Nothing here waits for time to pass, only for
    another party to act."""
    with anyio.fail_after(within):
        while not predicate():
            if step is not None:
                await step()
            await anyio.sleep(0.01)
