"""FakeClock bookkeeping that tests rely on to know when a task is waiting on the clock."""

from __future__ import annotations

import anyio
import pytest

from integration_status.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_cancelled_sleep_is_not_counted_as_sleeping() -> None:
    """A sleep cancelled before its deadline no longer counts in ``sleepers``; a live one does until woken."""
    clock = FakeClock()
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 10)
        tg.start_soon(clock.sleep, 20)
        while clock.sleepers < 2:
            await anyio.lowlevel.checkpoint()
        with anyio.move_on_after(0):  # a timeout that cancels its own sleep
            await clock.sleep(5)
        assert clock.sleepers == 2
        clock.advance(10)
        while clock.sleepers > 1:
            await anyio.lowlevel.checkpoint()
        assert clock.sleepers == 1
        clock.advance(10)
    assert clock.sleepers == 0


async def test_next_sleep_is_set_by_the_first_sleep_begun_after_it_was_taken() -> None:
    """``next_sleep()`` ignores sleeps already running and ``sleep(0)``; the next real sleep sets it."""
    clock = FakeClock()
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 10)
        while clock.sleepers < 1:
            await anyio.lowlevel.checkpoint()
        started = clock.next_sleep()
        await clock.sleep(0)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        assert not started.is_set()
        tg.start_soon(clock.sleep, 5)
        with anyio.fail_after(1):
            await started.wait()
        assert clock.sleepers == 2
        clock.advance(10)


async def test_until_sleepers_wakes_when_the_count_is_reached_either_way() -> None:
    """``until_sleepers(n)`` returns at once when ``n`` tasks sleep, else when a sleep starts or ends and
    the count becomes ``n``; a count passed on the way does not end a wait for another."""
    clock = FakeClock()
    with anyio.fail_after(1):
        await clock.until_sleepers(0)  # nothing sleeps yet
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.sleep, 10)
            tg.start_soon(clock.sleep, 20)
            await clock.until_sleepers(2)
            assert clock.sleepers == 2
            one, three = anyio.Event(), anyio.Event()

            async def watch(count: int, reached: anyio.Event) -> None:
                await clock.until_sleepers(count)
                reached.set()

            tg.start_soon(watch, 1, one)
            tg.start_soon(watch, 3, three)
            while len(clock._watchers) < 2:
                await anyio.lowlevel.checkpoint()
            clock.advance(10)  # 2 -> 1: the first watch ends, the other goes on waiting
            await one.wait()
            assert not three.is_set()
            tg.start_soon(clock.sleep, 5)
            tg.start_soon(clock.sleep, 5)  # 1 -> 2 -> 3
            await three.wait()
            await clock.until_sleepers(2, at_least=True)  # 3 sleep: enough
            clock.advance(5)  # 3 -> 1
            await clock.until_sleepers(1)
            with anyio.move_on_after(0):
                await clock.until_sleepers(2, at_least=True)
            assert clock.sleepers == 1
            clock.advance(20)
        await clock.until_sleepers(0)


async def test_a_cancelled_until_sleepers_leaves_nothing_behind() -> None:
    """A wait given up (a timeout) is forgotten; a negative count is refused."""
    clock = FakeClock()
    with anyio.move_on_after(0):
        await clock.until_sleepers(1)
    assert clock._watchers == []
    with pytest.raises(ValueError, match="never negative"):
        await clock.until_sleepers(-1)
