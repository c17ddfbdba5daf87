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
