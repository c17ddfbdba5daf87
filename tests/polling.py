"""A bounded poll, for the one kind of wait that has no event to wait on: an effect that another server (Redis,
in the backend and multi-worker suites) brings about and announces to nobody in this process, such as a
pub/sub message reaching a store's reader or a cluster node taking over. Everything the code under test does in
this process is awaited by its own event instead (``FakeClock.until_sleepers``, task ends, a handler's call);
time on the service's clock is always moved by hand."""

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
