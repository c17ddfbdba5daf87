"""A one-shot wake-up, as cheap as the event loop allows.

Thousands of event streams each wait for their next event, and every event wakes each of them: an
``anyio.Event`` per wait (which asks which async library runs, builds an ``asyncio.Event`` and its waiter
future) costs several times the wake-up itself. On asyncio a :class:`Wake` is one bare future of the running
loop; on any other loop it falls back to ``anyio.Event``. Cancelling the waiting task (an anyio cancel scope
included) cancels the wait as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import anyio

__all__ = ["Wake"]


class Wake:
    """Set once, awaited by any number of tasks of one loop. Make one per wait, in that loop."""

    __slots__ = ("_event", "_future")

    def __init__(self) -> None:
        try:
            self._future: asyncio.Future[None] | None = asyncio.get_running_loop().create_future()
            self._event: anyio.Event | None = None
        except RuntimeError:  # not on asyncio
            self._future = None
            self._event = anyio.Event()

    def set(self) -> None:
        """Wake the waiter (now, or as soon as it waits). Setting twice is harmless."""
        future = self._future
        if future is None:
            assert self._event is not None
            self._event.set()
        elif not future.done():
            future.set_result(None)

    def is_set(self) -> bool:
        if self._future is None:
            assert self._event is not None
            return self._event.is_set()
        future = self._future
        return future.done() and not future.cancelled()

    def __await__(self) -> Generator[Any, None, None]:
        """``await wake`` is :meth:`wait` without a coroutine of its own: one object less per wait, which counts
        when thousands of streams wait at once (each live object of a wait is work for the garbage
        collector's young generation)."""
        if self._future is None:
            assert self._event is not None
            return self._event.wait().__await__()
        return self._future.__await__()

    async def wait(self) -> None:
        """Return once :meth:`set` was called."""
        if self._future is None:
            assert self._event is not None
            await self._event.wait()
        else:
            await self._future
