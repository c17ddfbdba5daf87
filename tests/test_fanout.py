"""What event streams share: shared frames never cross viewers with different permissions, heartbeats
follow the service clock per stream from one timer, interrupted waits lose no event, and shutdown ends
every stream."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration_status.backends.memory import MemoryEngine
from integration_status.core.events import redact_event
from integration_status.core.sse import encode_event
from integration_status.models import StatusUpdate
from integration_status.protocols import StoredEvent, Viewer
from integration_status.service import StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.service.streams import HEARTBEAT, FrameCache, StreamHub
from integration_status.snapshot import ProviderSnapshot, Segment, Sensitive, Visibility
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections, snapshot

pytestmark = pytest.mark.anyio

OWNER = Viewer(user_id="o", roles={"owner"})
MEMBER = Viewer(user_id="m", roles={"member"})
VIEWER = Viewer(user_id="v", roles={"viewer"})


def push(n: int, branch: str = "main") -> dict[str, Any]:
    return {"type": "github:push", "projectId": "p", "branch": branch, "sha": f"{n:040x}", "ts": n}


visibilities = st.builds(Visibility, repo=st.booleans(), org=st.booleans(), urls=st.booleans())


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["main", "release-x"]), visibilities, st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_cached_frames_equal_a_fresh_rendering_for_every_visibility(
    lookups: list[tuple[int, str, Visibility, bool]],
) -> None:
    """Whatever order viewers ask in, each gets exactly the frame its own visibility renders (the cache never
    hands one visibility's bytes to another, nor an old event's bytes to a new event with a reused id)."""
    cache = FrameCache(size=8)
    for n, branch, visibility, equal_copy in lookups:
        data = push(n, branch)
        stored = StoredEvent(id=f"{n}-0", data=dict(data) if equal_copy else data)
        expected = encode_event(data=redact_event(data, visibility) or {}, event="github:push", id=stored.id)
        assert cache.frame("p", stored, visibility) == expected


def test_a_member_never_gets_the_owners_frame() -> None:
    """The owner's frame of a push is cached first; a member asking for the same event gets blank branch."""
    cache = FrameCache()
    stored = StoredEvent(id="1-0", data=push(1, "release-x"))
    owner = cache.frame("p", stored, Visibility.full())
    member = cache.frame("p", stored, Visibility(urls=True))
    assert owner is not None
    assert b"release-x" in owner
    assert member is not None
    assert b"release-x" not in member
    assert b'"branch":""' in member
    assert cache.frame("p", stored, Visibility.full()) is owner  # shared by viewers alike
    assert cache.frame("q", stored, Visibility.full()) is not owner  # ids are per project


def github_service(clock: FakeClock) -> StatusService:
    github = ProviderSnapshot(
        provider="github",
        status="connected",
        summary=(
            Segment(pieces=("Linked to ", Sensitive(kind="branch", value="release-x")), redacted="Linked"),
        ),
    )
    adapters = [ScriptedAdapter("github", github)] + [
        ScriptedAdapter(p, snapshot(p)) for p in ("vercel", "sanity", "supabase")
    ]
    return StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections.linked("p", "github", "vercel", "sanity", "supabase"),
        adapters=adapters,
        clock=clock,
    )


async def test_status_frames_are_shared_per_permissions_and_match_the_event() -> None:
    """Two owners share one status frame; a viewer-role frame differs and hides the branch; each frame is the
    encoded StatusUpdate of that viewer's items."""
    clock = FakeClock()
    async with github_service(clock) as service:
        connections = await service.project("p", OWNER)
        first, items = await service.snapshot_frame(connections, OWNER, event_id="5-0", ts=7)
        other_owner = Viewer(user_id="o2", roles={"owner"})
        second, _ = await service.snapshot_frame(connections, other_owner, event_id="5-0", ts=7)
        restricted, restricted_items = await service.snapshot_frame(connections, VIEWER, event_id="5-0", ts=7)
        assert second is first
        assert first == encode_event(
            data=StatusUpdate(project_id="p", items=items, ts=7).to_json(), event="status:update", id="5-0"
        )
        assert restricted == encode_event(
            data=StatusUpdate(project_id="p", items=restricted_items, ts=7).to_json(),
            event="status:update",
            id="5-0",
        )
        assert b"release-x" in first
        assert b"release-x" not in restricted
        assert restricted_items == await service.items(connections, VIEWER)


async def test_event_frame_matches_event_for() -> None:
    """A provider event's frame carries exactly what event_for gives that viewer; unknown types send none."""
    clock = FakeClock()
    async with github_service(clock) as service:
        connections = await service.project("p", OWNER)
        stored = StoredEvent(id="1-0", data=push(1, "release-x"))
        for viewer in (OWNER, MEMBER, VIEWER):
            frame, items = await service.event_frame(stored, connections, viewer)
            event = await service.event_for(stored, connections, viewer)
            assert event is not None
            assert (frame, items) == (encode_event(data=event, event="github:push", id="1-0"), None)
        assert await service.event_frame(StoredEvent(id="2-0", data={"type": "x"}), connections, OWNER) == (
            None,
            None,
        )


class _Writes:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def __call__(self, frame: bytes) -> None:
        self.frames.append(frame)


async def _until(predicate: Any) -> None:
    with anyio.fail_after(2):
        while not predicate():
            await anyio.lowlevel.checkpoint()


async def test_each_stream_beats_on_its_own_schedule_from_one_timer() -> None:
    """Streams opened 2 s apart each get a heartbeat every 5 s of the clock after they opened; one timer
    sleeps for all of them, and none once they are gone."""
    clock = FakeClock()
    engine = MemoryEngine(clock=clock)
    async with anyio.create_task_group() as tg:
        hub = StreamHub(clock=clock, interval=5, spawn=tg.start_soon)
        writes = {"a": _Writes(), "b": _Writes()}
        async with engine.events.subscribe("p") as sub_a, engine.events.subscribe("p") as sub_b:
            beat_a = hub.open()
            tg.start_soon(beat_a.pump, aiter(sub_a), writes["a"], writes["a"])
            await _until(lambda: clock.sleepers == 1)
            clock.advance(2)
            beat_b = hub.open()
            tg.start_soon(beat_b.pump, aiter(sub_b), writes["b"], writes["b"])
            await _until(lambda: clock.sleepers == 1)
            clock.advance(3)  # t=5: a's first
            await _until(lambda: writes["a"].frames == [HEARTBEAT])
            assert writes["b"].frames == []
            clock.advance(2)  # t=7: b's first
            await _until(lambda: writes["b"].frames == [HEARTBEAT])
            assert writes["a"].frames == [HEARTBEAT]
            await _until(lambda: clock.sleepers == 1)
            assert len(hub) == 2
            hub.close_stream(beat_a)
            hub.close_stream(beat_b)
            engine.events.close()  # the subscriptions end; the pumps return
            clock.advance(10)
            await _until(lambda: clock.sleepers == 0)  # nothing open: the timer waits without the clock
        tg.cancel_scope.cancel()


async def test_a_heartbeat_interrupting_the_wait_loses_no_event() -> None:
    """Events published right as heartbeats fall due all arrive, in order, between the heartbeats."""
    clock = FakeClock()
    engine = MemoryEngine(clock=clock)
    got: list[StoredEvent] = []
    writes = _Writes()

    async def send(stored: StoredEvent) -> None:
        got.append(stored)

    async with anyio.create_task_group() as tg, engine.events.subscribe("p") as sub:
        hub = StreamHub(clock=clock, interval=1, spawn=tg.start_soon)
        beat = hub.open()
        tg.start_soon(beat.pump, aiter(sub), send, writes)
        ids = []
        for n in range(20):
            await _until(lambda: clock.sleepers == 1)
            ids.append(await engine.events.publish("p", push(n)))
            clock.advance(1)  # the heartbeat falls due in the same step
            await _until(lambda n=n: len(writes.frames) == n + 1 and len(got) == n + 1)
        assert [e.id for e in got] == ids
        hub.shutdown()
        await _until(lambda: len(hub) == 0)
        tg.cancel_scope.cancel()


async def test_shutdown_ends_every_stream_and_later_ones_at_once() -> None:
    """After shutdown every pump returns, even one blocked in a write; a stream opened later ends at once."""
    clock = FakeClock()
    engine = MemoryEngine(clock=clock)
    ended: list[str] = []
    stuck = anyio.Event()

    async def blocked_write(frame: bytes) -> None:
        stuck.set()
        await anyio.sleep_forever()

    async def run(name: str, beat: Any, sub: Any, send: Any) -> None:
        await beat.pump(aiter(sub), send, blocked_write)
        ended.append(name)

    async with (
        anyio.create_task_group() as tg,
        engine.events.subscribe("p") as idle,
        engine.events.subscribe("p") as busy,
    ):
        hub = StreamHub(clock=clock, interval=5, spawn=tg.start_soon)
        tg.start_soon(run, "idle", hub.open(), idle, _Writes())
        tg.start_soon(run, "busy", hub.open(), busy, blocked_write)
        await engine.events.publish("p", push(1))
        await stuck.wait()
        hub.shutdown()
        await _until(lambda: sorted(ended) == ["busy", "idle"])
        async with engine.events.subscribe("p") as late:
            await run("late", hub.open(), late, _Writes())
        assert ended[-1] == "late"
        tg.cancel_scope.cancel()
