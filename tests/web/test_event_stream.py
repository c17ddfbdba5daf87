"""GET {prefix}/events on every mount, read by a real streaming client: headers, snapshot, ids, resume,
heartbeat, cleanup, connection caps, project scoping and per-viewer redaction."""

from __future__ import annotations

from typing import Any

import pytest

from integration_status.backends.memory import MemoryEngine
from integration_status.core.events import parse_event_id
from integration_status.service import Settings
from integration_status.snapshot import ProviderSnapshot, Segment, Sensitive
from integration_status.testing import FakeClock, ScriptedAdapter, snapshot
from tests.web.mounts import (
    EVENTS,
    MountFactory,
    SSEReader,
    events_stream,
    make_service,
    viewer_headers,
)

pytestmark = pytest.mark.anyio

GITHUB = ProviderSnapshot(
    provider="github",
    status="connected",
    summary=(Segment(pieces=("Linked to ", Sensitive(kind="branch", value="release-x")), redacted="Linked"),),
)


def push(project: str = "p", n: int = 1) -> dict[str, Any]:
    return {"type": "github:push", "projectId": project, "branch": "main", "sha": f"{n:040x}", "ts": n}


def github_service(**kwargs: Any) -> Any:
    adapters = [ScriptedAdapter("github", GITHUB)] + [
        ScriptedAdapter(p, snapshot(p)) for p in ("vercel", "sanity", "supabase")
    ]
    return make_service(adapters=adapters, **kwargs)


async def test_stream_headers(mount: MountFactory) -> None:
    """The stream is text/event-stream, no-store, unbuffered, with no Connection or Content-Length."""
    async with mount(make_service()) as m, m.client() as client, events_stream(client) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].split(";")[0] == "text/event-stream"
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-accel-buffering"] == "no"
        if m.kind != "flask":  # werkzeug's development server adds "Connection: close" itself
            assert "connection" not in r.headers
        assert "content-length" not in r.headers
        assert "content-encoding" not in r.headers


async def test_errors_before_the_stream(mount: MountFactory) -> None:
    """No viewer is 401, an unknown or hidden project 404, with the error object and no stream."""
    async with mount(make_service()) as m, m.client() as client:
        anonymous = await client.get(EVENTS, params={"projectId": "p"})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"
        unknown = await client.get(EVENTS, params={"projectId": "nope"}, headers=viewer_headers())
        hidden = await client.get(EVENTS, params={"projectId": "p"}, headers=viewer_headers("none"))
        assert unknown.status_code == hidden.status_code == 404
        assert unknown.json() == hidden.json()
        assert unknown.json()["error"]["code"] == "not_found"


async def test_connect_sends_this_viewers_snapshot(mount: MountFactory) -> None:
    """The first event is a status:update with the four items as this viewer may see them."""
    async with mount(github_service()) as m, m.client() as client:
        async with events_stream(client, role="owner") as owner_stream:
            owner = await SSEReader(owner_stream).event()
        async with events_stream(client, role="member", user="u2") as member_stream:
            member = await SSEReader(member_stream).event()
    for frame in (owner, member):
        assert frame.event == "status:update"
        assert frame.json()["type"] == "status:update"
        assert frame.json()["projectId"] == "p"
        assert [i["key"] for i in frame.json()["items"]] == ["sanity", "github", "vercel", "supabase"]
    assert "release-x" in owner.data  # type: ignore[operator]
    assert "release-x" not in member.data  # type: ignore[operator]


async def test_each_event_has_id_type_and_json_data(mount: MountFactory) -> None:
    """A published event arrives with its bus id, event: = its type and data: = its JSON; ids increase."""
    async with mount(make_service()) as m, m.client() as client, events_stream(client) as r:
        events = SSEReader(r)
        await events.event()
        ids = [await m.publish("p", push(n=n)) for n in (1, 2)]
        for n, expected_id in zip((1, 2), ids, strict=True):
            frame = await events.event()
            assert frame.id == expected_id
            assert frame.event == "github:push"
            assert frame.json() == push(n=n)
        parsed = [parse_event_id(i) for i in ids]
        assert None not in parsed
        assert parsed[0] < parsed[1]  # type: ignore[operator]


async def test_last_event_id_replays_every_later_buffered_event(mount: MountFactory) -> None:
    """With Last-Event-ID, every later event still buffered is replayed (no snapshot), then live ones."""
    async with mount(make_service()) as m, m.client() as client:
        ids = [await m.publish("p", push(n=n)) for n in (1, 2, 3)]
        async with events_stream(client, **{"Last-Event-ID": ids[0]}) as r:
            events = SSEReader(r)
            replayed = [await events.event(), await events.event()]
            assert [f.id for f in replayed] == ids[1:]
            assert [f.json()["ts"] for f in replayed] == [2, 3]
            live = await m.publish("p", push(n=4))
            frame = await events.event()
            assert (frame.id, frame.json()["ts"]) == (live, 4)


async def test_snapshot_carries_the_resume_point(mount: MountFactory) -> None:
    """The connect snapshot's id is the newest event before it: reconnecting with it misses nothing after."""
    async with mount(make_service()) as m, m.client() as client:
        async with events_stream(client) as r:
            first = await SSEReader(r).event()
            assert first.event == "status:update"
            assert first.id is None  # nothing published yet: nothing to resume from
        before = await m.publish("p", push(n=1))
        async with events_stream(client) as r:
            snapshot = await SSEReader(r).event()
            assert (snapshot.event, snapshot.id) == ("status:update", before)
        missed = await m.publish("p", push(n=2))
        async with events_stream(client, **{"Last-Event-ID": snapshot.id}) as r:
            replayed = await SSEReader(r).event()
            assert (replayed.id, replayed.json()["ts"]) == (missed, 2)


async def test_evicted_last_event_id_gets_a_fresh_snapshot(mount: MountFactory) -> None:
    """A Last-Event-ID that fell out of the buffer gets a fresh snapshot instead of a partial replay."""
    clock = FakeClock()
    service = make_service(clock=clock, engine=MemoryEngine(clock=clock, event_buffer=3))
    async with mount(service) as m, m.client() as client:
        ids = [await m.publish("p", push(n=n)) for n in range(1, 6)]
        async with events_stream(client, **{"Last-Event-ID": ids[0]}) as r:
            events = SSEReader(r)
            first = await events.event()
            assert first.event == "status:update"
            assert len(first.json()["items"]) == 4
            live = await m.publish("p", push(n=6))
            frame = await events.event()
            assert (frame.id, frame.event) == (live, "github:push")  # nothing of 2..5 was replayed


async def test_heartbeat_comment_after_the_interval(mount: MountFactory) -> None:
    """A comment line is sent every Settings.heartbeat seconds of the service clock."""
    clock = FakeClock()
    async with (
        mount(make_service(clock=clock, settings=Settings(heartbeat=5))) as m,
        m.client() as client,
        events_stream(client) as r,
    ):
        events = SSEReader(r)
        assert (await events.event()).event == "status:update"
        await m.until(clock.until_sleepers, 1)  # the heartbeat, and nothing else
        await m.advance(5)
        beat = await events.frame()
        assert beat.data is None
        assert beat.event is None
        assert beat.comments == ("",)
        await m.until(clock.until_sleepers, 1)
        await m.advance(5)
        assert (await events.frame()).comments == ("",)


async def test_disconnect_cleans_up(mount: MountFactory) -> None:
    """After the client goes away, the connection slot and the bus subscriptions are released: the stream's
    own and, with the project's last stream, the one that collects the project's markers as they arrive."""
    service = make_service()
    async with mount(service) as m, m.client() as client:
        async with events_stream(client) as r:
            await SSEReader(r).event()
            assert service.sse_connections.count == 1
            # The collector subscribed in its first step, before the snapshot reached the client.
            assert service.engine.events.subscriber_count() == 2
            # On Starlette the disconnect watch is the service's one plain task (Flask watches otherwise).
            assert len(service._plain) == (1 if m.kind == "starlette" else 0)
        await m.wait_released()
        assert service.sse_connections.count == 0
        assert service.engine.events.subscriber_count() == 0
        assert not service._plain  # the watch ended with the stream


async def test_over_the_cap_gets_a_retry_hint_and_is_closed(mount: MountFactory) -> None:
    """Over the per-viewer cap a stream gets a retry: hint and ends at once; other viewers are unaffected, and
    the slot comes back when the first stream closes."""
    service = make_service(settings=Settings(sse_per_viewer=1))
    async with mount(service) as m, m.client() as client:
        async with events_stream(client) as first:
            await SSEReader(first).event()
            async with events_stream(client) as second:
                refused = SSEReader(second)
                hint = await refused.event()
                assert hint.retry is not None
                assert hint.retry > 0
                assert await refused.ended()
            async with events_stream(client, user="u2") as other:
                assert (await SSEReader(other).event()).event == "status:update"
        await m.wait_released()
        assert service.sse_connections.count == 0
        async with events_stream(client) as again:
            assert (await SSEReader(again).event()).event == "status:update"


async def test_events_are_scoped_to_their_project(mount: MountFactory) -> None:
    """An event published to another project never reaches this project's stream."""
    async with mount(make_service()) as m, m.client() as client, events_stream(client, "p") as r:
        events = SSEReader(r)
        await events.event()
        await m.publish("q", push("q", n=1))
        marker = await m.publish("p", push("p", n=2))
        frame = await events.event()
        assert (frame.id, frame.json()["projectId"]) == (marker, "p")


async def test_events_are_redacted_per_viewer(mount: MountFactory) -> None:
    """Owner sees all; a member gets blank branch/sha but the url; the viewer role loses the url too."""
    finished = {
        "type": "deploy:finished",
        "projectId": "p",
        "success": True,
        "url": "https://x.vercel.app",
        "ts": 1,
    }
    async with (
        mount(make_service()) as m,
        m.client() as client,
        events_stream(client, role="owner", user="o") as owner_r,
        events_stream(client, role="member", user="m") as member_r,
        events_stream(client, role="viewer", user="v") as viewer_r,
    ):
        readers = {
            name: SSEReader(r) for name, r in (("owner", owner_r), ("member", member_r), ("viewer", viewer_r))
        }
        for reader in readers.values():
            await reader.event()
        await m.publish("p", push(n=7))
        await m.publish("p", finished)
        got = {name: [(await r.event()).json(), (await r.event()).json()] for name, r in readers.items()}
    assert got["owner"] == [push(n=7), finished]
    blanked = {**push(n=7), "branch": "", "sha": ""}
    assert got["member"] == [blanked, finished]
    assert got["viewer"] == [blanked, {k: v for k, v in finished.items() if k != "url"}]
