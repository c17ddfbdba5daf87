"""Wake: one wake-up awaited by many tasks, where cancelling one waiter ends that waiter's wait only."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from integration_status.core.wake import Wake

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
