"""A one-shot wake-up, as cheap as the event loop allows.

Thousands of event streams each wait for their next event, and every event wakes each of them: an
``anyio.Event`` per wait (which asks which async library runs, builds an ``asyncio.Event`` and its waiter
future) costs several times the wake-up itself. On asyncio a :class:`Wake` is one bare future of the running
loop; on any other loop it falls back to ``anyio.Event``. Cancelling the waiting task (an anyio cancel scope
included) cancels the wait as usual.

Several tasks may wait on one :class:`Wake` (every stream of a class waits for the class's rendering). asyncio
cancels a task by cancelling the future it waits on, which would wake every other waiter of that future with a
``CancelledError`` that is not theirs. A waiter that gets one while its own task is not being cancelled waits
again, on a fresh future of the same :class:`Wake`: only the cancelled task's wait ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any

import anyio

__all__ = ["AsyncioCancelled", "Wake"]

#: What a wait of :meth:`Wake.bare` raises on asyncio when it is cancelled (its own task's cancellation, or
#: another waiter's; :meth:`Wake.woken_by_other` tells which). Other loops raise their own, never this.
AsyncioCancelled = asyncio.CancelledError


class Wake:
    """Set once, awaited by any number of tasks of one loop. Make one per wait, in that loop."""

    __slots__ = ("_event", "_future", "_set")

    def __init__(self) -> None:
        self._set = False
        try:
            self._future: asyncio.Future[None] | None = asyncio.get_running_loop().create_future()
            self._event: anyio.Event | None = None
        except RuntimeError:  # not on asyncio
            self._future = None
            self._event = anyio.Event()

    def set(self) -> None:
        """Wake the waiters (now, or as soon as they wait). Setting twice is harmless."""
        self._set = True
        future = self._future
        if future is None:
            assert self._event is not None
            self._event.set()
        elif not future.done():
            future.set_result(None)

    def is_set(self) -> bool:
        return self._set

    def __await__(self) -> Generator[Any, None, None]:
        """``await wake`` is :meth:`wait` without a coroutine of its own: one object less per wait, which counts
        when thousands of streams wait at once (each live object of a wait is work for the garbage
        collector's young generation)."""
        if self._future is None:
            assert self._event is not None
            return self._event.wait().__await__()
        return self._wait_future()

    def _wait_future(self) -> Generator[Any, None, None]:
        while not self._set:
            try:
                yield from self.bare().__await__()
            except asyncio.CancelledError:
                if not self.woken_by_other():
                    raise  # this task is being cancelled

    def bare(self) -> Awaitable[Any]:
        """The one thing to await for this wake, with nothing of its own around it: on asyncio the shared
        future itself. For the hottest waits (thousands of streams holding at once, where even the generator
        of ``await wake`` shows in the collector's work); the caller then does what ``await wake`` does::

            while not wake.is_set():
                try:
                    await wake.bare()
                except asyncio.CancelledError:
                    if not wake.woken_by_other():
                        raise
        """
        future = self._future
        if future is None:
            assert self._event is not None
            return self._event.wait()
        if future.cancelled():  # cancelled by another waiter's cancellation (see the module docstring)
            future = self._future = future.get_loop().create_future()
            if self._set:
                future.set_result(None)
        return future

    def woken_by_other(self) -> bool:
        """After a ``CancelledError`` out of :meth:`bare`: True when it was not this task's (another waiter's
        cancellation cancelled the shared future), so the caller waits again; False when this task is being
        cancelled."""
        if self._future is None:  # not on asyncio: a cancellation there is the waiter's own
            return False
        task = asyncio.current_task()
        return task is not None and not task.cancelling()

    async def wait(self) -> None:
        """Return once :meth:`set` was called."""
        await self
