"""Benchmark 4: ETag hit rate. Frontends (owner, member, viewer) poll every 10 s with If-None-Match over
simulated hours of provider activity (pushes, deploys, edits, latency spikes, outages, rate limits), on a
FakeClock in process. The bar applies to a realistic, active team (``Activity.realistic()``: a push every ~30
minutes, a CMS edit every ~20, an incident every ~3 hours); the demo's deliberately lively world (something
every few minutes) is printed alongside for information. Bar: >= 95% of polls answered 304."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel

from bench._common import Outcome, report
from integration_status.demo.server import build_service
from integration_status.demo.simulated import Activity
from integration_status.protocols import Viewer
from integration_status.testing import FakeClock

BAR = 0.95
POLL = 10.0
FRONTENDS = (
    Viewer(user_id="owner", project_roles={"demo": {"owner"}}),
    Viewer(user_id="member", project_roles={"demo": {"member"}}),
    Viewer(user_id="viewer", project_roles={"demo": {"viewer"}}),
)


async def _settle(clock: FakeClock, call: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``call`` to completion, moving the fake clock in 50 ms steps while it waits."""
    box: list[Any] = []

    async def runner() -> None:
        box.append(await call())

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        while not box:
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            if not box:
                clock.advance(0.05)
    return box[0]


async def _simulate(hours: float, activity: Activity) -> tuple[int, int]:
    clock = FakeClock()
    service, _world = build_service(clock=clock, activity=activity)
    etags: dict[str, str | None] = {v.user_id: None for v in FRONTENDS}
    polls = hits = 0
    async with service:
        end = clock.time() + hours * 3600
        while clock.time() < end:
            started = clock.time()
            for viewer in FRONTENDS:
                ask = functools.partial(service.status, "demo", viewer, if_none_match=etags[viewer.user_id])
                result = await _settle(clock, ask)
                if etags[viewer.user_id] is not None:
                    polls += 1
                    hits += result.not_modified
                etags[viewer.user_id] = result.etag
            clock.advance(max(0.0, POLL - (clock.time() - started)))
            for _ in range(10):  # let background refreshes that just woke up finish
                await anyio.lowlevel.checkpoint()
    return polls, hits


def run(smoke: bool = False) -> list[Outcome]:
    hours = 0.5 if smoke else 6.0
    rates: dict[str, float] = {}
    for name, activity in (("realistic", Activity.realistic()), ("lively demo", Activity.lively())):
        polls, hits = anyio.run(_simulate, hours, activity)
        rates[name] = hits / polls
        print(
            f"[etag] {name} activity, {len(FRONTENDS)} frontends, {hours:g} simulated hours, every {POLL:g}s: "
            f"{hits}/{polls} polls were 304 ({rates[name]:.3f})"
        )
    rate = rates["realistic"]
    return [report("etag_hit_rate", rate, f">= {BAR}", rate >= BAR, fmt="{:.3f}")]


if __name__ == "__main__":
    run()
