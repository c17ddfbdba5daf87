"""A bounded poll, for the one kind of wait that has no event to wait on: what other processes do on their own
timers and announce to nobody, namely a Redis Cluster's nodes forming the cluster or failing over (gossip and
elections on the nodes' clocks), and the multi-worker end-to-end recovery after a store fault. Everything this
process does is awaited by its own event instead (``FakeClock.until_sleepers``, a task's end, a handler's call,
the Redis cache store's ``wait_changed``), and a node that only has to answer is simply asked again (each try
waits on the node); time on the service's clock is always moved by hand."""

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
