"""Replay protection's admission of a verified delivery, with a log asked in one step or id by id."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status.backends import MemoryDeliveryLog
from integration_status.core.replay import admit_delivery
from integration_status.testing import FakeClock

pytestmark = pytest.mark.anyio


class OneByOne:
    """A delivery log that offers only ``first_seen`` and ``forget``: admission asks it id by id."""

    def __init__(self, log: MemoryDeliveryLog) -> None:
        self._log = log

    async def first_seen(self, delivery_id: str, ttl: float) -> bool:
        return await self._log.first_seen(delivery_id, ttl)

    async def forget(self, delivery_id: str) -> None:
        await self._log.forget(delivery_id)


def _keys(log: MemoryDeliveryLog) -> set[str]:
    return set(log._seen)


deliveries = st.lists(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=3, unique=True), max_size=12)


@given(deliveries=deliveries)
async def test_one_step_and_id_by_id_admit_alike(deliveries: list[list[str]]) -> None:
    """Whatever the deliveries (content keys and ids shared between them at random), a log asked in one step
    admits the same ones, answers the same keys and ends holding the same ids as a log asked id by id."""
    clock = FakeClock()
    whole, single = MemoryDeliveryLog(clock=clock), MemoryDeliveryLog(clock=clock)
    logs: tuple[Any, Any] = (whole, OneByOne(single))
    for keys in deliveries:
        answers = [await admit_delivery(log, keys, ttl=3600, now=clock.time(), tolerance=300) for log in logs]
        assert answers[0] == answers[1]
        assert answers[0] in (None, tuple(keys))
        assert _keys(whole) == _keys(single)


async def test_admission_stops_at_the_first_known_key() -> None:
    """A replay (its content known) writes nothing; new content under a known id keeps its content key and
    writes nothing after the known id."""
    log = MemoryDeliveryLog(clock=FakeClock())
    admit = {"ttl": 3600, "now": 0.0, "tolerance": 300}
    assert await admit_delivery(log, ["content-1", "id-1"], **admit) == ("content-1", "id-1")
    assert await admit_delivery(log, ["content-1", "id-2"], **admit) is None
    assert "id-2" not in _keys(log)
    assert await admit_delivery(log, ["content-2", "id-1", "id-3"], **admit) is None
    assert _keys(log) == {"content-1", "id-1", "content-2"}
    assert await log.first_seen_all(["content-9", "content-1", "id-9"], 60) == 1
    assert "id-9" not in _keys(log)
