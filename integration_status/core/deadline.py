"""Time limits on the injected clock (so tests can move time instead of waiting for it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from integration_status.core.clock import Clock

T = TypeVar("T")


async def call_with_timeout(clock: Clock, seconds: float, fn: Callable[[], Awaitable[T]]) -> T:
    """Await ``fn()``; if ``seconds`` pass on ``clock`` first, cancel it and raise :class:`TimeoutError`.

    Unlike ``anyio.fail_after`` this follows the injected clock, so a ``FakeClock`` drives it in tests.
    """
    outcome: list[T] = []
    failure: list[Exception] = []
    timed_out = False

    async with anyio.create_task_group() as tg:

        async def timer() -> None:
            nonlocal timed_out
            await clock.sleep(seconds)
            timed_out = True
            tg.cancel_scope.cancel()

        tg.start_soon(timer)
        try:
            outcome.append(await fn())
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # re-raised below, outside the task group, unwrapped
            failure.append(exc)
        tg.cancel_scope.cancel()

    if failure:
        raise failure[0]
    if outcome:
        return outcome[0]
    # Only the timer can end the group without an outcome (an outside cancellation raises out of the block).
    raise TimeoutError(f"no answer within {seconds:g}s (timed out: {timed_out})")
