"""Wake: one wake-up awaited by many tasks, where cancelling one waiter ends that waiter's wait only; and
Waiter: one wake-up that one task awaits again and again."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from integration_status.core.wake import Waiter, Wake, set_all

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["await", "bare"])
def style(request: pytest.FixtureRequest) -> str:
    """How a waiter waits: ``await wake``, or the loop around :meth:`Wake.bare` that the hottest waits use
    instead (the two must behave alike)."""
    return str(request.param)


async def _wait(wake: Wake, style: str) -> None:
    if style == "await":
        await wake
        return
    while not wake.is_set():
        try:
            await wake.bare()
        except asyncio.CancelledError:
            if not wake.woken_by_other():
                raise


async def _waiter(wake: Wake, log: list[str], name: str, style: str = "await") -> None:
    try:
        await _wait(wake, style)
    except asyncio.CancelledError:
        log.append(f"{name} cancelled")
        raise
    log.append(f"{name} woke")


async def _steps(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_cancelling_one_waiter_leaves_the_others_waiting_for_the_set(style: str) -> None:
    wake = Wake()
    log: list[str] = []
    tasks = [asyncio.create_task(_waiter(wake, log, name, style)) for name in "abc"]
    await _steps()
    tasks[0].cancel()
    await _steps()
    assert log == ["a cancelled"]
    assert not tasks[1].done()
    assert not tasks[2].done()
    wake.set()
    await asyncio.gather(*tasks[1:])
    assert sorted(log) == ["a cancelled", "b woke", "c woke"]
    assert wake.is_set()


async def test_a_set_right_after_another_waiters_cancellation_is_not_lost(style: str) -> None:
    """The set lands while the other waiters are still to learn of the cancelled future: they return."""
    wake = Wake()
    log: list[str] = []
    tasks = [asyncio.create_task(_waiter(wake, log, name, style)) for name in "ab"]
    await _steps()
    tasks[0].cancel()
    wake.set()
    with anyio.fail_after(1):
        await tasks[1]
    assert log == ["a cancelled", "b woke"]


async def test_an_anyio_cancel_scope_ends_only_its_own_wait(style: str) -> None:
    wake = Wake()
    log: list[str] = []
    scope = anyio.CancelScope()

    async def scoped() -> None:
        with scope:
            await _waiter(wake, log, "scoped", style)

    async with anyio.create_task_group() as tg:
        tg.start_soon(scoped)
        tg.start_soon(_waiter, wake, log, "other", style)
        await _steps()
        scope.cancel()
        await _steps()
        assert log == ["scoped cancelled"]
        wake.set()
    assert log == ["scoped cancelled", "other woke"]


async def test_the_cancelled_waiter_itself_still_gets_its_cancellation(style: str) -> None:
    wake = Wake()
    task = asyncio.create_task(_wait(wake, style))
    await _steps()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not wake.is_set()


async def test_a_wake_set_before_anyone_waits_returns_at_once() -> None:
    wake = Wake()
    wake.set()
    wake.set()  # twice is harmless
    with anyio.fail_after(1):
        await wake
        await wake.wait()
        await wake.bare()


async def test_a_lone_waiters_bare_wait_is_the_future_itself_and_a_cancellation_is_its_own() -> None:
    """A wake with one waiter (a subscription's own) is awaited bare: nothing but the loop's future, and a
    cancellation there is never taken for another waiter's."""
    wake = Wake()
    assert isinstance(wake.bare(), asyncio.Future)

    async def lone() -> None:
        await wake.bare()

    task = asyncio.create_task(lone())
    await _steps()
    task.cancel()
    await _steps()
    assert task.cancelled()
    fresh = wake.bare()  # the cancelled future is replaced, and a set still reaches the new one
    assert not fresh.done()  # type: ignore[attr-defined]
    wake.set()
    with anyio.fail_after(1):
        await fresh


# --- Waiter: one reusable wake-up for one task ---------------------------------------------------------------


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    """The waiter is a future-like object of its own, so it runs on the plain loop and on uvloop (the demo's)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


def _run(loop_kind: str, main: Any) -> None:
    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def test_a_waiter_is_awaited_again_and_again_and_set_before_its_wait_returns_at_once(loop_kind: str) -> None:
    async def main() -> None:
        waiter = Waiter()
        for _ in range(3):
            waiter.arm()
            task = asyncio.create_task(_await(waiter))
            await _steps()
            assert not task.done()
            waiter.set()
            waiter.set()  # twice is harmless
            await _steps()
            assert task.done()
            assert task.result() is None
        waiter.arm()
        waiter.set()
        with anyio.fail_after(1):
            await waiter  # already set: no suspension
        assert waiter.is_set()

    _run(loop_kind, main)


def test_a_cancel_scope_ends_a_waiters_wait_and_leaves_its_task_uncancelled(loop_kind: str) -> None:
    """anyio delivers a scope's cancellation again and again while the task awaits something that is not an
    ``asyncio.Future``: the task must still leave the scope with no cancellation pending, and wait again."""

    async def main() -> None:
        waiter = Waiter()
        scope = anyio.CancelScope()
        left: list[str] = []

        async def holder() -> None:
            with scope:
                waiter.arm()
                await waiter
            left.append("scope")
            task = asyncio.current_task()
            assert task is not None
            assert task.cancelling() == 0
            waiter.arm()
            await waiter  # a later wait is a normal one
            left.append("woke")

        task = asyncio.create_task(holder())
        await _steps()
        scope.cancel()
        await _steps(20)
        assert left == ["scope"]
        assert not task.done()
        waiter.set()
        await _steps()
        assert left == ["scope", "woke"]
        assert task.done()
        assert task.exception() is None

    _run(loop_kind, main)


def test_cancelling_a_waiters_task_raises_its_cancellation_and_keeps_no_callback(loop_kind: str) -> None:
    async def main() -> None:
        waiter = Waiter()
        waiter.arm()
        task = asyncio.create_task(_await(waiter))
        await _steps()
        assert waiter._callback is not None  # the task's wake-up, while it waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert waiter.cancelled()
        assert not waiter.is_set()
        assert waiter._callback is None
        assert waiter._context is None
        waiter.set()  # a release that comes later is harmless

    _run(loop_kind, main)


def test_set_all_wakes_the_waiters_armed_with_its_token_from_one_loop_callback(loop_kind: str) -> None:
    """A released group wakes its streams from one callback; a waiter that left the group (woken otherwise
    and armed again for a later group) is not ended by the earlier group's release."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        later: list[Waiter] = []
        first, tasks = _held(50)
        waiters = list(first)
        await _steps()
        moved = waiters[0]
        moved.set()  # woken otherwise (the heartbeat's case), then held again in a later group
        await _steps()
        moved.arm(later)
        later.append(moved)
        mover = asyncio.create_task(_await(moved))
        await _steps()
        calls: list[object] = []
        call_soon = loop.call_soon

        def counting(*args: Any, **kwargs: Any) -> Any:
            calls.append(args[0])
            return call_soon(*args, **kwargs)

        loop.call_soon = counting  # type: ignore[method-assign]
        try:
            set_all(first, first)
        finally:
            loop.call_soon = call_soon  # type: ignore[method-assign]
        await _steps()
        assert len(calls) == 1
        assert all(t.done() for t in tasks)
        assert not mover.done()  # the earlier group's release is not its own
        set_all(later, first)  # nor is a release under another token
        await _steps()
        assert not mover.done()
        set_all(later, later)
        await _steps()
        assert mover.done()

    _run(loop_kind, main)


async def _await(waiter: Waiter) -> None:
    await waiter


def _held(count: int) -> tuple[list[Waiter], list[asyncio.Task[None]]]:
    """``count`` waiters armed as one group (the group is their token, as the hub's holds are), each awaited
    by a task of its own."""
    group: list[Waiter] = []
    for _ in range(count):
        waiter = Waiter()
        waiter.arm(group)
        group.append(waiter)
    return group, [asyncio.create_task(_await(w)) for w in group]


def test_a_task_cancelled_between_a_release_and_its_wake_up_ends_cancelled(loop_kind: str) -> None:
    """set_all leaves each waiter its task's wake-up until the one callback runs; a cancellation that comes
    in between still ends that task with CancelledError, and the other waiters of the group are woken."""

    async def main() -> None:
        group, tasks = _held(3)
        waiters = list(group)
        await _steps()
        set_all(group, group)
        tasks[1].cancel()  # before the release's callback has run
        await _steps()
        for woken in (tasks[0], tasks[2]):
            assert woken.done()
            assert woken.exception() is None
        assert tasks[1].cancelled()
        assert all(w._callback is None and w._context is None for w in waiters)

    _run(loop_kind, main)
