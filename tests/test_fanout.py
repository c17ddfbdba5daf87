"""What event streams share: shared frames never cross viewers with different permissions, heartbeats
follow the service clock per stream from one timer, interrupted waits lose no event, and shutdown ends
every stream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration_status.backends.memory import MemoryEngine
from integration_status.core.clock import utcnow
from integration_status.core.events import redact_event
from integration_status.core.policy import ProviderView, view_item
from integration_status.core.sse import encode_event
from integration_status.core.wake import Waiter
from integration_status.exceptions import BackendUnavailable, ConfigurationError, SubscriberLagging
from integration_status.models import PROVIDERS, ProviderKey, StatusItem, StatusUpdate
from integration_status.protocols import StoredEvent, Viewer
from integration_status.service import StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.service.render import Renderer
from integration_status.service.settings import Settings
from integration_status.service.streams import HEARTBEAT, STORE_GONE, StreamHub
from integration_status.snapshot import ActionState, Ago, ProviderSnapshot, Segment, Sensitive, Visibility
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
    cache = Renderer(clock=FakeClock(), size=8)
    for n, branch, visibility, equal_copy in lookups:
        data = push(n, branch)
        stored = StoredEvent(id=f"{n}-0", data=dict(data) if equal_copy else data)
        expected = encode_event(data=redact_event(data, visibility) or {}, event="github:push", id=stored.id)
        assert cache.event_frame("p", stored, visibility) == expected


def test_a_member_never_gets_the_owners_frame() -> None:
    """The owner's frame of a push is cached first; a member asking for the same event gets blank branch."""
    cache = Renderer(clock=FakeClock())
    stored = StoredEvent(id="1-0", data=push(1, "release-x"))
    owner = cache.event_frame("p", stored, Visibility.full())
    member = cache.event_frame("p", stored, Visibility(urls=True))
    assert owner is not None
    assert b"release-x" in owner
    assert member is not None
    assert b"release-x" not in member
    assert b'"branch":""' in member
    assert cache.event_frame("p", stored, Visibility.full()) is owner  # shared by viewers alike
    assert cache.event_frame("q", stored, Visibility.full()) is not owner  # ids are per project


_ACTIONS = (ActionState(id="deploy", label="Deploy"), ActionState(id="reconnect", label="Reconnect"))
_AT = datetime(2026, 1, 1, tzinfo=UTC)


def _view(provider: ProviderKey, n: int) -> ProviderView:
    """Version ``n`` of a provider's view (its summary says when it last changed, relative to now)."""
    summary = (
        Segment(pieces=("Last ", Sensitive(kind="branch", value=f"b{n}"), " ", Ago(at=_AT)), redacted="Last"),
    )
    return ProviderView(
        provider=provider,
        snapshot=ProviderSnapshot(provider=provider, status="connected", summary=summary, actions=_ACTIONS),
        changed_at=_AT + timedelta(seconds=n),
    )


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # the provider whose view moves before this rendering
            st.booleans(),  # whether it moves at all
            st.integers(0, 2),  # seconds the clock moves
            st.sampled_from([frozenset({"deploy"}), frozenset({"deploy", "reconnect"}), frozenset()]),
            visibilities,
        ),
        min_size=1,
        max_size=25,
    )
)
def test_every_rendering_has_the_items_a_fresh_one_would_and_shares_the_unmoved_ones(
    steps: list[tuple[int, bool, int, frozenset[str], Visibility]],
) -> None:
    """Whatever moves between renderings (one provider's view, the clock, the viewer class), each item is what
    ``view_item`` makes of its view for that class now; an item whose view, class and second did not move is
    the very object of the rendering before (a webhook that refreshes one provider rebuilds one item)."""
    clock = FakeClock(start=(_AT + timedelta(minutes=5)).timestamp())
    renderer = Renderer(clock=clock, size=64)
    versions = [0, 0, 0, 0]
    views = [_view(p, 0) for p in PROVIDERS]
    before: tuple[StatusItem, ...] | None = None
    before_key: tuple[object, ...] | None = None
    for index, moves, seconds, allowed, visibility in steps:
        clock.advance(seconds)
        if moves:
            versions[index] += 1
            views[index] = _view(PROVIDERS[index], versions[index])
        grants = tuple((allowed, visibility) for _ in PROVIDERS)
        items = renderer.rendering("p", tuple(views), grants).items
        now = utcnow(clock)
        assert items == tuple(view_item(v, allowed=allowed, visibility=visibility, now=now) for v in views)
        key = (allowed, visibility, int(clock.time()))
        if before is not None and before_key == key:
            for i in range(len(PROVIDERS)):
                if not (moves and i == index):
                    assert items[i] is before[i]
        before, before_key = items, key


def github_service(clock: FakeClock, write_interval: float = 0.0, heartbeat: float = 15.0) -> StatusService:
    """A service over scripted adapters on ``clock``. Its streams write every event at once unless the test
    gives a write interval (a FakeClock stands still until the test moves it)."""
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
        settings=Settings(sse_write_interval=write_interval, heartbeat=heartbeat),
    )


async def _github_turns_warning(service: StatusService) -> None:
    """GitHub answers ``warning`` from now on, and a refresh fetches it and announces it with a marker."""
    github = service.adapters["github"]
    assert isinstance(github, ScriptedAdapter)
    github.then(snapshot("github", status="warning"))
    await service.refresh_provider("p", "github")


async def test_status_frames_are_shared_per_permissions_and_match_the_event() -> None:
    """Two owners share one status frame; a viewer-role frame differs and hides the branch; each frame is the
    encoded StatusUpdate of that viewer's items."""
    clock = FakeClock()
    async with github_service(clock) as service:
        connections = await service.project("p", OWNER)
        views = await service.views(connections)

        def frame(viewer: Viewer) -> tuple[bytes, Any]:
            return service.renderer.status_frame(
                "p", views, service.grants(viewer, "p"), event_id="5-0", ts=7
            )

        first, items = frame(OWNER)
        second, _ = frame(Viewer(user_id="o2", roles={"owner"}))
        restricted, restricted_items = frame(VIEWER)
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


async def test_event_frame_is_the_event_redacted_for_the_viewers_visibility() -> None:
    """A provider event's frame carries exactly the event as that viewer's visibility redacts it."""
    clock = FakeClock()
    async with github_service(clock) as service:
        stored = StoredEvent(id="1-0", data=push(1, "release-x"))
        for viewer in (OWNER, MEMBER, VIEWER):
            visibility = service.visibility(viewer, "p", "github")
            event = redact_event(stored.data, visibility)
            assert event is not None
            frame = service.renderer.event_frame("p", stored, visibility)
            assert frame == encode_event(data=event, event="github:push", id="1-0")


class _Writes:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def __call__(self, frame: bytes) -> None:
        self.frames.append(frame)


async def _until(predicate: Any) -> None:
    with anyio.fail_after(2):
        while not predicate():
            await anyio.lowlevel.checkpoint()


async def _open_streams(
    service: StatusService, tg: Any, connections: Any, viewers: list[Viewer]
) -> list[_Writes]:
    """A stream per viewer, each past its connected comment and snapshot, with the cold start's own markers
    delivered (they change nothing): what every stream writes from here on is the test's doing."""
    writes = [_Writes() for _ in viewers]
    for viewer, write in zip(viewers, writes, strict=True):
        tg.start_soon(service.open_stream(viewer, connections), write)
    await _until(lambda: all(len(w.frames) >= 2 for w in writes))  # connected + snapshot
    for _ in range(50):
        await anyio.lowlevel.checkpoint()
    return writes


async def _open_streams_one_leaving(
    service: StatusService, tg: Any, connections: Any, viewers: list[Viewer], leaving: int
) -> tuple[list[_Writes], anyio.CancelScope]:
    """As :func:`_open_streams`, the stream of ``viewers[leaving]`` in a cancel scope of its own: cancelling
    it is that client going away."""
    writes = [_Writes() for _ in viewers]
    scope = anyio.CancelScope()

    async def stream(i: int) -> None:
        with scope if i == leaving else anyio.CancelScope():
            await service.open_stream(viewers[i], connections)(writes[i])

    for i in range(len(viewers)):
        tg.start_soon(stream, i)
    await _until(lambda: all(len(w.frames) >= 2 for w in writes))
    await _settle()
    return writes, scope


def _gate_views(service: StatusService) -> anyio.Event:
    """Make collecting the provider views wait (a store round trip that takes a while) until the returned
    event is set."""
    gate = anyio.Event()
    real_views = service.views

    async def slow(conns: Any) -> Any:
        await gate.wait()
        return await real_views(conns)

    service.views = slow  # type: ignore[method-assign]
    return gate


def _two_classes(n: int) -> list[Viewer]:
    return [Viewer(user_id=f"u{i}", roles={"owner" if i % 2 else "viewer"}) for i in range(n)]


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


async def test_a_marker_is_collected_once_however_many_streams_are_open() -> None:
    """Fifty streams of one project (two viewer classes) and one status:update marker: the provider views
    are collected once for all of them, each class is rendered once, and every stream gets its class's frame."""
    clock = FakeClock()
    service = github_service(clock)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        viewers = _two_classes(50)
        writes = await _open_streams(service, tg, connections, viewers)
        before = service.streams.markers_collected
        sent = [len(w.frames) for w in writes]
        calls: list[str] = []
        real_views = service.views

        async def counted(conns: Any) -> Any:
            calls.append(conns.project_id)
            return await real_views(conns)

        service.views = counted  # type: ignore[method-assign]  # the streams ask the service for views
        await _github_turns_warning(service)  # fetched again and announced with a marker
        await _until(lambda: all(len(w.frames) == n + 1 for w, n in zip(writes, sent, strict=True)))
        for _ in range(50):  # any further marker of this change reaches every stream too
            await anyio.lowlevel.checkpoint()
        collected = service.streams.markers_collected - before
        assert 1 <= collected <= 2  # one collection per announcement (a change and a refresh), not per stream
        assert len(calls) == collected
        new = [w.frames[-1] for w in writes]
        owner_frames = {id(f) for f, v in zip(new, viewers, strict=True) if "owner" in v.roles}
        viewer_frames = {id(f) for f, v in zip(new, viewers, strict=True) if "viewer" in v.roles}
        assert len(owner_frames) == 1  # one rendering and one encoding per class, the same bytes object
        assert len(viewer_frames) == 1
        assert owner_frames != viewer_frames
        assert all(b"event: status:update\n" in f and b"warning" in f for f in new)
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


async def test_a_stream_whose_writes_stall_is_dropped_and_frees_its_slot() -> None:
    """A client that stops reading (its writes never return) is ended after its heartbeats stop going out,
    counted as dropped, and its slot is free again; a reading stream beside it carries on."""
    clock = FakeClock()
    service = github_service(clock)
    stuck = anyio.Event()

    async def stalled(frame: bytes) -> None:
        if frame == HEARTBEAT:  # the socket buffer fills up once the stream is established
            stuck.set()
            await anyio.sleep_forever()

    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        reader = _Writes()
        tg.start_soon(service.open_stream(Viewer(user_id="slow", roles={"owner"}), connections), stalled)
        tg.start_soon(service.open_stream(OWNER, connections), reader)
        await _until(lambda: len(service.streams.hub) == 2 and len(reader.frames) == 2)
        interval = service.settings.heartbeat
        for beats in range(1, 4):  # the slow one never returns from its first heartbeat
            await _until(lambda: clock.sleepers >= 1)
            clock.advance(interval)
            await _until(lambda beats=beats: reader.frames.count(HEARTBEAT) == beats)
        assert stuck.is_set()
        await _until(lambda: service.sse_connections.count_for("slow") == 0)
        assert service.sse_connections.count == 1  # the reading stream is still open
        service.streams.shutdown()
        await _until(lambda: service.sse_connections.count == 0)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("changes", [True, False])
async def test_a_refresh_announces_once_whether_or_not_the_content_changed(changes: bool) -> None:
    """refresh_provider publishes exactly one status:update: the cache's own when the content changed, else
    its own (each marker wakes every open stream, so a second one is pure cost)."""
    clock = FakeClock()
    service = github_service(clock)
    async with service:
        await service.views(await service.project("p", OWNER))
        github = service.adapters["github"]
        assert isinstance(github, ScriptedAdapter)
        if changes:
            github.then(snapshot("github", status="warning"))
        async with service.subscribe("p", last_event_id=None) as subscription:
            await service.refresh_provider("p", "github")
            await service.publish("p", push(1))  # a sentinel: everything before it has been published
            kinds = []
            async for stored in subscription:
                kinds.append(stored.data["type"])
                if stored.data["type"] == "github:push":
                    break
        assert kinds == ["status:update", "github:push"]


async def test_events_waiting_when_a_stream_wakes_go_out_in_one_write_in_order() -> None:
    """Three pushes published before the stream runs again reach it as ONE write holding the three frames in
    publish order (a stream that fell behind catches up in one step); a push alone is a write of its own."""
    clock = FakeClock()
    service = github_service(clock)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        (writes,) = await _open_streams(service, tg, connections, [OWNER])
        before = len(writes.frames)
        ids = [await service.publish("p", push(n)) for n in (1, 2, 3)]  # no checkpoint in between
        await _until(lambda: len(writes.frames) > before)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert len(writes.frames) == before + 1
        batch = writes.frames[-1]
        positions = [batch.index(f"id: {event_id}\n".encode()) for event_id in ids]
        assert positions == sorted(positions)
        assert batch.count(b"event: github:push\n") == 3
        lone = await service.publish("p", push(4))
        await _until(lambda: len(writes.frames) == before + 2)
        assert writes.frames[-1].count(b"event: github:push\n") == 1
        assert f"id: {lone}\n".encode() in writes.frames[-1]
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


async def test_an_event_is_worked_out_once_per_viewer_class_however_many_streams() -> None:
    """Forty streams in two viewer classes and one push: the push is redacted once per class (the policy is
    asked once per class, not per stream), and every stream of a class gets the same bytes object."""
    clock = FakeClock()
    service = github_service(clock)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        viewers = _two_classes(40)
        writes = await _open_streams(service, tg, connections, viewers)
        sent = [len(w.frames) for w in writes]
        asked: list[str] = []
        real_visibility = service.visibility

        def counted(viewer: Viewer, project_id: str, provider: Any) -> Visibility:
            asked.append(viewer.user_id)
            return real_visibility(viewer, project_id, provider)

        service.visibility = counted  # type: ignore[method-assign]  # what the streams ask per provider event
        await service.publish("p", push(9, "release-x"))
        await _until(lambda: all(len(w.frames) == n + 1 for w, n in zip(writes, sent, strict=True)))
        assert len(asked) == 2
        owner = {id(w.frames[-1]) for w, v in zip(writes, viewers, strict=True) if "owner" in v.roles}
        viewer = {id(w.frames[-1]) for w, v in zip(writes, viewers, strict=True) if "viewer" in v.roles}
        assert len(owner) == 1
        assert len(viewer) == 1
        assert owner != viewer
        assert all(
            b"release-x" not in w.frames[-1]
            for w, v in zip(writes, viewers, strict=True)
            if "viewer" in v.roles
        )
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


async def test_a_batch_is_what_was_queued_so_heartbeats_go_out_while_events_keep_coming() -> None:
    """Events keep arriving while each one's rendering waits once (a marker's views being collected): the
    stream still writes between batches, every heartbeat goes out, and it is never taken for a stalled one."""
    clock = FakeClock()
    engine = MemoryEngine(clock=clock)
    writes = _Writes()
    outcome: list[str] = []

    async def render(stored: StoredEvent) -> bytes:
        await anyio.lowlevel.checkpoint()
        return f"data: {stored.id}\n\n".encode()

    async with anyio.create_task_group() as tg:
        hub = StreamHub(clock=clock, interval=5, spawn=tg.start_soon)

        async def stream() -> None:
            async with engine.events.subscribe("p") as sub:
                beat = hub.open()
                try:
                    await beat.pump(aiter(sub), render, writes, sub.poll)
                    outcome.append("ended")
                except SubscriberLagging:
                    outcome.append("stalled")
                finally:
                    hub.close_stream(beat)

        tg.start_soon(stream)
        await _until(lambda: len(hub) == 1)
        for n in range(3000):  # one event per loop turn
            await engine.events.publish("p", push(n))
            await anyio.lowlevel.checkpoint()
            if n in (1000, 2000):
                clock.advance(5)
        for _ in range(200):
            await anyio.lowlevel.checkpoint()
        assert outcome == []
        assert writes.frames.count(HEARTBEAT) == 2
        assert sum(f.count(b"data: ") for f in writes.frames if f != HEARTBEAT) == 3000
        hub.shutdown()
        tg.cancel_scope.cancel()


async def test_class_tables_stay_bounded_and_go_with_their_streams() -> None:
    """With a policy that answers every viewer with a new grants object (a RolePolicy subclass), each stream
    has a table of its own, bounded however many events pass; the tables go when their streams close."""
    from integration_status.core.policy import RolePolicy
    from integration_status.service.streams import RENDERED_PER_CLASS

    class Asking(RolePolicy):
        pass

    clock = FakeClock()
    service = github_service(clock)
    service.policy = Asking()
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        scopes = [anyio.CancelScope() for _ in range(5)]
        writes = [_Writes() for _ in scopes]

        async def run(scope: anyio.CancelScope, write: _Writes, n: int) -> None:
            with scope:
                await service.open_stream(Viewer(user_id=f"u{n}", roles={"owner"}), connections)(write)

        for n, (scope, write) in enumerate(zip(scopes, writes, strict=True)):
            tg.start_soon(run, scope, write, n)
        await _until(lambda: all(len(w.frames) >= 2 for w in writes))
        for n in range(3 * RENDERED_PER_CLASS):
            await service.publish("p", push(n))
            await _until(lambda n=n: all(f"{n:040x}".encode() in w.frames[-1] for w in writes))
        tables = service.streams._rendered["p"]
        assert len(tables) == 5
        assert all(len(t.events) <= RENDERED_PER_CLASS for t in tables.values())
        for scope in scopes[:3]:
            scope.cancel()
        await _until(lambda: len(service.streams) == 2)
        assert len(service.streams._rendered["p"]) == 2
        for scope in scopes[3:]:
            scope.cancel()
        await _until(lambda: len(service.streams) == 0)
        assert "p" not in service.streams._rendered
        tg.cancel_scope.cancel()


async def _settle() -> None:
    for _ in range(50):
        await anyio.lowlevel.checkpoint()


async def test_a_stream_holds_after_a_write_and_sends_what_arrived_meanwhile_in_one_write() -> None:
    """With a write interval, the first push goes out at once; two pushes within the interval wait (however
    long the loop runs) and go out together, in order, once it has passed; after a quiet spell a push goes out
    at once again."""
    clock = FakeClock()
    service = github_service(clock, write_interval=0.5)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        (writes,) = await _open_streams(service, tg, connections, [OWNER])
        before = len(writes.frames)
        first = await service.publish("p", push(1))
        await _until(lambda: len(writes.frames) == before + 1)
        assert f"id: {first}\n".encode() in writes.frames[-1]
        ids = [await service.publish("p", push(n)) for n in (2, 3)]
        await _settle()
        assert len(writes.frames) == before + 1  # held: the interval has not passed
        clock.advance(0.3)
        await _settle()
        assert len(writes.frames) == before + 1
        clock.advance(0.2)
        await _until(lambda: len(writes.frames) == before + 2)
        batch = writes.frames[-1]
        assert batch.count(b"event: github:push\n") == 2
        assert batch.index(f"id: {ids[0]}\n".encode()) < batch.index(f"id: {ids[1]}\n".encode())
        clock.advance(5)  # quiet: the hold after that write has ended too
        await _settle()
        lone = await service.publish("p", push(4))
        await _until(lambda: len(writes.frames) == before + 3)
        assert f"id: {lone}\n".encode() in writes.frames[-1]
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


async def test_many_held_streams_are_released_together_by_one_timer() -> None:
    """Thirty streams that wrote at slightly different moments are released by one sleep of the hub's timer
    (holds that end within a tenth of the interval go together), each with the push that came meanwhile."""
    clock = FakeClock()
    service = github_service(clock, write_interval=1.0)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        viewers = [Viewer(user_id=f"u{n}", roles={"owner"}) for n in range(30)]
        writes = await _open_streams(service, tg, connections, viewers)
        sent = [len(w.frames) for w in writes]
        await service.publish("p", push(1))
        await _until(lambda: all(len(w.frames) == n + 1 for w, n in zip(writes, sent, strict=True)))
        await service.publish("p", push(2))
        await _settle()
        assert all(len(w.frames) == n + 1 for w, n in zip(writes, sent, strict=True))
        assert clock.sleepers <= 2  # the heartbeat timer and the release timer: none per stream
        assert len(service.streams.hub._held) == 1  # one group, one wake-up for the thirty
        clock.advance(0.95)  # within a tenth of the interval: all are released at once
        await _until(lambda: all(len(w.frames) == n + 2 for w, n in zip(writes, sent, strict=True)))
        assert all(f"{2:040x}".encode() in w.frames[-1] for w in writes)
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


async def test_a_heartbeat_ends_a_hold_which_is_never_a_stall_and_shutdown_ends_a_held_stream() -> None:
    """A write interval longer than the heartbeat: the heartbeat goes out during a hold and ends it (it is a
    write itself), the held push follows, and the stream is not taken for stalled (a hold is a wait). A push
    after heartbeats only goes out at once; shutdown ends a held stream at once, without its held push."""
    clock = FakeClock()
    service = github_service(clock, write_interval=5.0, heartbeat=1.0)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        (writes,) = await _open_streams(service, tg, connections, [OWNER])
        before = len(writes.frames)
        await service.publish("p", push(1))
        await _until(lambda: len(writes.frames) == before + 1)
        await service.publish("p", push(2))
        await _settle()
        assert len(writes.frames) == before + 1  # held
        clock.advance(1.0)
        await _until(lambda: any(f"{2:040x}".encode() in f for f in writes.frames))
        assert writes.frames[before + 1] == HEARTBEAT
        for beat in (2, 3):  # held again after that write: beats, never dropped as stalled
            clock.advance(1.0)
            await _until(lambda beat=beat: writes.frames.count(HEARTBEAT) == beat)
        assert service.health.stats().sse.dropped == 0
        await service.publish("p", push(3))  # after beats only: at once
        await _until(lambda: any(f"{3:040x}".encode() in f for f in writes.frames))
        await service.publish("p", push(4))
        await _settle()
        service.streams.shutdown()  # while held
        await _until(lambda: len(service.streams) == 0)
        assert not any(f"{4:040x}".encode() in f for f in writes.frames)
        assert b"server stopping" in writes.frames[-1]
        assert service.health.stats().sse.dropped == 0
        tg.cancel_scope.cancel()


async def test_a_heartbeat_due_during_a_short_hold_goes_out_when_the_hold_ends() -> None:
    """A hold much shorter than the heartbeat interval is not interrupted: the heartbeat that falls due
    meanwhile goes out as the hold ends, before the held push, and the stream is not taken for stalled."""
    clock = FakeClock()
    service = github_service(clock, write_interval=0.5, heartbeat=10.0)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        (writes,) = await _open_streams(service, tg, connections, [OWNER])
        before = len(writes.frames)
        clock.advance(9.8)
        await _settle()
        await service.publish("p", push(1))  # written at once; held until 10.3
        await _until(lambda: len(writes.frames) == before + 1)
        await service.publish("p", push(2))
        clock.advance(0.3)  # the heartbeat falls due (10.0) while the stream holds
        await _settle()
        assert len(writes.frames) == before + 1
        clock.advance(0.25)
        await _until(lambda: any(f"{2:040x}".encode() in f for f in writes.frames))
        assert writes.frames[before + 1] == HEARTBEAT
        assert service.health.stats().sse.dropped == 0
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


async def test_a_stream_going_while_held_leaves_its_group_held_and_released_together() -> None:
    """Streams held in one group share a wake-up; one of them goes away meanwhile. The others stay held, and
    are released together with the push that came in the meantime."""
    clock = FakeClock()
    service = github_service(clock, write_interval=1.0)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        viewers = [Viewer(user_id=f"u{n}", roles={"owner"}) for n in range(10)]
        writes, leaving = await _open_streams_one_leaving(service, tg, connections, viewers, 3)
        sent = [len(w.frames) for w in writes]
        await service.publish("p", push(1))
        await _until(lambda: all(len(w.frames) == n + 1 for w, n in zip(writes, sent, strict=True)))
        await service.publish("p", push(2))
        await _settle()
        leaving.cancel()
        await _settle()
        assert len(service.streams) == len(viewers) - 1
        stayed = [(w, n) for i, (w, n) in enumerate(zip(writes, sent, strict=True)) if i != 3]
        assert all(len(w.frames) == n + 1 for w, n in stayed)  # still held
        clock.advance(1.0)
        await _until(lambda: all(len(w.frames) == n + 2 for w, n in stayed))
        assert all(f"{2:040x}".encode() in w.frames[-1] for w, _ in stayed)
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


async def test_a_gone_stream_waiting_for_its_next_heartbeat_deadline_keeps_no_scope_or_task_alive() -> None:
    """The heartbeat queue drops a closed stream's deadline only when it is reached (up to an interval later);
    until then it holds the bare registration, not the stream's cancel scope and, through it, its task."""
    clock = FakeClock()
    service = github_service(clock)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        viewers = [Viewer(user_id=f"u{n}", roles={"owner"}) for n in range(3)]
        _, leaving = await _open_streams_one_leaving(service, tg, connections, viewers, 1)
        assert all(beat._scope is not None for _, beat in service.streams.hub._due)
        leaving.cancel()
        await _until(lambda: len(service.streams) == len(viewers) - 1)
        gone = [beat for _, beat in service.streams.hub._due if not beat.open]
        assert len(gone) == 1
        assert gone[0]._scope is None
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


async def test_a_worker_whose_releases_run_late_holds_longer_until_it_has_caught_up() -> None:
    """Releases that run late (the loop is behind) stretch the holds that follow, so a busy worker writes less
    often, each write carrying more; on-time releases shrink the stretch again. It never exceeds twice the
    write interval."""
    clock = FakeClock()
    service = github_service(clock, write_interval=1.0)
    hub = service.streams.hub
    early = 0.05  # how early the releasing task lets a group go (a twentieth of the interval)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        (writes,) = await _open_streams(service, tg, connections, [OWNER])
        before = len(writes.frames)
        assert hub.stretch == 0
        await service.publish("p", push(1))
        await _until(lambda: len(writes.frames) == before + 1)
        await service.publish("p", push(2))
        await _settle()
        clock.advance(3.0)  # the release was due at 1.0: it runs 2 s late
        await _until(lambda: len(writes.frames) == before + 2)
        stretched = hub.stretch
        assert 0.5 < stretched <= 2.0
        await service.publish("p", push(3))
        clock.advance(1.2)  # a plain hold would be over
        await _settle()
        assert len(writes.frames) == before + 2
        clock.advance(stretched - 0.2 - early + 1e-6)  # when the stretched hold is released
        await _until(lambda: len(writes.frames) == before + 3)
        assert hub.stretch < stretched  # released on time: the stretch falls
        for n in range(4, 40):  # a flow of events, each release on time
            await service.publish("p", push(n))
            clock.advance(1.0 + hub.stretch - early + 1e-6)
            await _until(lambda n=n: any(f"{n:040x}".encode() in f for f in writes.frames))
        assert hub.stretch < stretched / 5
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


def test_the_write_interval_is_bounded() -> None:
    assert Settings().sse_write_interval == 0.1
    assert Settings(sse_write_interval=0).sse_write_interval == 0
    for bad in (-0.1, 5.5):
        with pytest.raises(ValueError, match="sse_write_interval"):
            Settings(sse_write_interval=bad)
    assert Settings.from_env({"INTEGRATION_STATUS_SSE_WRITE_INTERVAL": "0.25"}).sse_write_interval == 0.25


async def test_a_marker_behind_a_slow_store_is_worked_out_once_per_class_while_the_others_wait() -> None:
    """The provider views behind a marker take a while (a store round trip): the class's other streams reach
    the marker meanwhile and wait for the first one's work instead of each working it out again; then every
    stream gets its class's one frame."""
    clock = FakeClock()
    service = github_service(clock)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        viewers = _two_classes(40)
        writes = await _open_streams(service, tg, connections, viewers)
        sent = [len(w.frames) for w in writes]
        gate = _gate_views(service)

        worked: list[str] = []
        real_render = service.streams._render

        async def counted(stored: StoredEvent, viewer: Viewer, *args: Any) -> Any:
            worked.append("owner" if "owner" in viewer.roles else "viewer")
            return await real_render(stored, viewer, *args)

        service.streams._render = counted  # type: ignore[method-assign]
        await _github_turns_warning(service)
        await _settle()
        assert sorted(set(worked)) == ["owner", "viewer"]
        assert len(worked) == 2  # the first stream of each class works; the 38 others wait for it
        gate.set()
        await _until(lambda: all(len(w.frames) == n + 1 for w, n in zip(writes, sent, strict=True)))
        owner = {id(w.frames[-1]) for w, v in zip(writes, viewers, strict=True) if "owner" in v.roles}
        assert len(owner) == 1
        assert worked.count("owner") <= 2  # at most a change and a refresh
        assert worked.count("viewer") <= 2
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


async def test_a_stream_going_while_its_class_waits_for_a_rendering_takes_no_other_stream_along() -> None:
    """The class's streams wait on one shared wake-up for the first stream's work; one of them goes away
    (its client disconnects) meanwhile. Only that stream ends: the others still get the frame once it is
    worked out. (asyncio cancels a task by cancelling the future it waits on, the one they all share.)"""
    clock = FakeClock()
    service = github_service(clock)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        viewers = _two_classes(40)
        # The last "viewer" stream goes: never the first of its class to work an event out.
        writes, leaving = await _open_streams_one_leaving(service, tg, connections, viewers, len(viewers) - 2)
        sent = [len(w.frames) for w in writes]
        gate = _gate_views(service)

        await _github_turns_warning(service)
        await _settle()
        leaving.cancel()
        await _settle()
        assert len(service.streams) == len(viewers) - 1
        gate.set()
        stayed = [(w, n) for i, (w, n) in enumerate(zip(writes, sent, strict=True)) if i != len(viewers) - 2]
        await _until(lambda: all(len(w.frames) == n + 1 for w, n in stayed))
        assert len(service.streams) == len(viewers) - 1
        service.streams.shutdown()
        await _until(lambda: len(service.streams) == 0)
        tg.cancel_scope.cancel()


async def test_a_markers_views_are_collected_as_it_arrives_even_while_every_stream_is_held() -> None:
    """Every stream is held (it has just written) when a marker arrives: its views are collected at once, by
    the project's collector, so the streams find them ready once released; the collector goes with the
    project's last stream."""
    clock = FakeClock()
    service = github_service(clock, write_interval=1.0)
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        writes = await _open_streams(service, tg, connections, _two_classes(10))
        sent = [len(w.frames) for w in writes]
        await service.publish("p", push(1))
        await _until(lambda: all(len(w.frames) == n + 1 for w, n in zip(writes, sent, strict=True)))
        before = service.streams.markers_collected
        await _github_turns_warning(service)  # announced with a marker while every stream is held
        await _until(lambda: service.streams.markers_collected > before)
        await _settle()
        assert all(len(w.frames) == n + 1 for w, n in zip(writes, sent, strict=True))  # still held
        clock.advance(1.0)
        await _until(lambda: all(len(w.frames) == n + 2 for w, n in zip(writes, sent, strict=True)))
        assert all(b"event: status:update" in w.frames[-1] for w in writes)
        assert service.engine.events.subscriber_count("p") == len(writes) + 1  # the streams and the collector
        service.streams.shutdown()
        await _until(lambda: service.engine.events.subscriber_count("p") == 0)
        tg.cancel_scope.cancel()


async def test_a_hold_asked_while_the_hub_stops_or_cannot_start_its_timer_ends_at_once() -> None:
    """After shutdown, or when the service can no longer start the releasing task, a hold is already over:
    the stream goes on to its end instead of waiting for a release that never comes."""

    def stopped(task: Any) -> None:
        raise ConfigurationError("the service is not running")

    hub = StreamHub(clock=FakeClock(), interval=15.0, spawn=stopped, write_interval=0.1)
    waiter = Waiter()
    hub.hold(waiter)
    assert waiter.is_set()
    started: list[Any] = []
    running = StreamHub(clock=FakeClock(), interval=15.0, spawn=started.append, write_interval=0.1)
    held = Waiter()
    running.hold(held)
    assert not held.is_set()
    assert len(started) == 1
    running.shutdown()
    assert held.is_set()
    late = Waiter()
    running.hold(late)
    assert late.is_set()


class _BusThatGoesAway:
    """The memory bus, whose subscriptions raise BackendUnavailable instead of yielding the next event once
    ``away`` is set: a shared store that stopped answering under open streams."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.away = False

    async def publish(self, project_id: str, event: Any) -> str:
        return str(await self._inner.publish(project_id, event))

    @contextlib.asynccontextmanager
    async def subscribe(self, project_id: str, *, last_event_id: str | None = None) -> AsyncIterator[Any]:
        async with self._inner.subscribe(project_id, last_event_id=last_event_id) as subscription:
            yield _GoingAway(self, subscription)


class _GoingAway:
    def __init__(self, bus: _BusThatGoesAway, inner: Any) -> None:
        self._bus, self._inner = bus, inner
        self.gap, self.resume_id = inner.gap, inner.resume_id

    def __aiter__(self) -> _GoingAway:
        return self

    async def __anext__(self) -> StoredEvent:
        event: StoredEvent = await self._inner.__anext__()
        if self._bus.away:
            raise BackendUnavailable("Redis at 127.0.0.1:6379 is unreachable while reading events")
        return event


async def test_a_stream_whose_store_goes_away_ends_with_a_hint_to_come_back_later() -> None:
    """The bus loses its store under an open stream: the stream is counted as dropped and ends with a comment and
    a ``retry: 5000`` hint (no named event: ``error`` is EventSource's own), never an exception in the body."""
    clock = FakeClock()
    service = github_service(clock)
    bus = service.engine.events = _BusThatGoesAway(service.engine.events)  # type: ignore[misc]
    async with service, anyio.create_task_group() as tg:
        connections = await service.project("p", OWNER)
        [writes] = await _open_streams(service, tg, connections, [OWNER])
        bus.away = True
        await service.publish("p", push(1))
        await _until(lambda: service.sse_connections.count == 0)
        assert writes.frames[-1] == STORE_GONE
        assert b"retry: 5000\n" in STORE_GONE
        assert b"event:" not in STORE_GONE
        assert service.health.stats().sse.dropped == 1
        tg.cancel_scope.cancel()
