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
import contextvars
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any

import anyio

__all__ = ["AsyncioCancelled", "Waiter", "Wake", "set_all"]

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


class Waiter:
    """A wake-up that one task awaits again and again: one object for the life of an event stream, where a
    :class:`Wake` is a future (and, awaited, its iterator and a callback entry) per wait.

    Under load thousands of streams hold at any moment, and each object of a wait that is alive when the
    collector's middle generation runs moves to the old generation, which brings the next full collection (a
    pause of the whole worker) closer. On asyncio a waiter is its own future-like object (a task may await
    anything with ``_asyncio_future_blocking``): a wait costs only the task's wake-up callback. On any other
    loop each wait is an ``anyio.Event``.

    Use: :meth:`arm`, hand the waiter to whoever will :meth:`set` it (or :func:`set_all` for many), then
    ``await waiter``. Cancelling the waiting task (an anyio cancel scope included) ends the wait with the
    task's ``CancelledError``; a waiter has one task, so a cancellation is always its own.
    """

    __slots__ = (
        "_asyncio_future_blocking",
        "_callback",
        "_cancelled",
        "_context",
        "_done",
        "_event",
        "_loop",
        "_message",
        "_token",
    )

    def __init__(self) -> None:
        self._done = True  # nothing armed yet
        self._cancelled = False
        self._callback: Callable[[Any], object] | None = None
        self._context: contextvars.Context | None = None
        self._asyncio_future_blocking = False
        self._event: anyio.Event | None = None
        self._token: object = None
        self._message: Any = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not on asyncio
            self._loop = None

    def arm(self, token: object = None) -> None:
        """Start a new wait (what an earlier one left, a set or a cancellation, is forgotten). ``token`` says
        which :func:`set_all` ends it: a registration left from an earlier wait does not end this one."""
        self._done = self._cancelled = False
        self._token = token
        self._message = None
        if self._loop is None:
            self._event = anyio.Event()

    def set(self) -> None:
        """End the armed wait (now, or at once when it is awaited later). Harmless when there is none."""
        if self._done:
            return
        self._done = True
        if self._event is not None:
            self._event.set()
            return
        callback, self._callback = self._callback, None
        if callback is not None:
            assert self._loop is not None
            self._loop.call_soon(callback, self, context=self._context)
        self._context = None

    def is_set(self) -> bool:
        return self._done and not self._cancelled

    def __await__(self) -> Generator[Any, None, None]:
        if self._event is not None and self._loop is None:
            return self._event.wait().__await__()
        return self  # type: ignore[return-value]  # its own iterator, as an asyncio future is

    # --- what an asyncio task asks of the future-like object it awaits --------------------------------------

    def __iter__(self) -> Waiter:
        return self

    def __next__(self) -> Waiter:
        if not self._done:
            self._asyncio_future_blocking = True
            return self  # the task registers its wake-up callback and suspends
        if self._cancelled:
            raise self._cancellation()
        raise StopIteration

    def get_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def add_done_callback(self, callback: Callable[[Any], object], *, context: Any = None) -> None:
        if self._done:
            assert self._loop is not None
            self._loop.call_soon(callback, self, context=context)
            return
        self._callback, self._context = callback, context

    def remove_done_callback(self, callback: Callable[[Any], object]) -> int:
        if self._callback is not None and self._callback == callback:
            self._callback = self._context = None
            return 1
        return 0

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return self._cancelled

    def _cancellation(self) -> asyncio.CancelledError:
        # With the task's message, as a future's: anyio tells its own scopes' cancellations by it.
        return asyncio.CancelledError() if self._message is None else asyncio.CancelledError(self._message)

    def result(self) -> None:
        if self._cancelled:
            raise self._cancellation()
        if not self._done:
            raise asyncio.InvalidStateError("the wait is not over")

    def exception(self) -> BaseException | None:
        self.result()
        return None

    def cancel(self, msg: Any = None) -> bool:
        """What the task does to the object it awaits when the task is cancelled: end the wait, which then
        raises ``CancelledError`` in the task."""
        if self._done:
            return False
        self._cancelled = True
        self._message = msg
        self.set()
        return True


def set_all(waiters: Iterable[Waiter], token: object = None) -> None:
    """Set every waiter of ``waiters`` armed with ``token``, waking their tasks from one loop callback instead
    of one each (a group of held streams released together). Each waiter keeps its task's wake-up until that
    callback runs it: the list of waiters is the only object a release makes (a tuple per waiter would be
    thousands more, alive until the callback runs)."""
    ready: list[Waiter] | None = None
    for waiter in waiters:
        if waiter._done or waiter._token is not token:
            continue
        if waiter._loop is None or waiter._callback is None:
            waiter.set()
            continue
        waiter._done = True
        if ready is None:
            ready = []
        ready.append(waiter)
    if ready:
        loop = ready[0]._loop
        assert loop is not None
        loop.call_soon(_wake_each, ready)


def _wake_each(ready: list[Waiter]) -> None:
    for waiter in ready:
        callback, context = waiter._callback, waiter._context
        waiter._callback = waiter._context = None
        if callback is None:  # removed meanwhile
            continue
        if context is None:
            callback(waiter)
        else:
            context.run(callback, waiter)
