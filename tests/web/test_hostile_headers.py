"""Oversized and repeated client values on every mount: bounded parsing, never a 5xx, one rule for repeats."""

from __future__ import annotations

import pytest

from integration_status.backends.memory import MemoryEngine
from integration_status.testing import FakeClock
from tests.web.mounts import (
    ACTIONS,
    STATUS,
    MountFactory,
    SSEReader,
    action,
    error_of,
    events_stream,
    make_service,
    viewer_headers,
)

pytestmark = pytest.mark.anyio

#: Over every bound the library sets, under the 64 KiB header line werkzeug's server accepts.
BIG = 60_000


async def test_oversized_if_none_match_is_a_plain_200(mount: MountFactory) -> None:
    """An If-None-Match over the length bound that lists the current ETag gets a normal 200, not a 304 or 4xx."""
    async with mount(make_service()) as m, m.client() as client:
        first = await client.get(STATUS, params={"projectId": "p"}, headers=viewer_headers())
        etag = first.headers["etag"]
        padded = f'{etag}, "{"x" * BIG}"'
        flooded = {**viewer_headers(), "If-None-Match": padded}
        r = await client.get(STATUS, params={"projectId": "p"}, headers=flooded)
        assert r.status_code == 200
        assert r.json()["hash"] == first.json()["hash"]
        revalidated = {**viewer_headers(), "If-None-Match": etag}
        again = await client.get(STATUS, params={"projectId": "p"}, headers=revalidated)
        assert again.status_code == 304


async def test_oversized_idempotency_key_is_a_400_error_object(mount: MountFactory) -> None:
    """An Idempotency-Key of 60 KB is refused with the error object; the action does not run."""
    service = make_service()
    async with mount(service) as m, m.client() as client:
        r = await client.post(ACTIONS, json=action(), headers=viewer_headers(key="k" * BIG))
        error_of(r, 400, "invalid_request")


async def test_oversized_last_event_id_starts_a_fresh_stream(mount: MountFactory) -> None:
    """A Last-Event-ID longer than any event id is ignored: the stream opens with a status:update snapshot."""
    service = make_service(clock=FakeClock(), engine=MemoryEngine(clock=FakeClock()))
    async with (
        mount(service) as m,
        m.client() as client,
        events_stream(client, **{"Last-Event-ID": "9" * BIG}) as response,
    ):
        assert response.status_code == 200
        frame = await SSEReader(response).event()
        assert frame.event == "status:update"


# --- one rule for repeated values ----------------------------------------------------------------------------


async def test_a_repeated_query_parameter_is_a_400_on_every_mount(mount: MountFactory) -> None:
    """?projectId=p&projectId=q is refused with the error object instead of either mount picking a copy."""
    async with mount(make_service()) as m, m.client() as client:
        r = await client.get(f"{STATUS}?projectId=p&projectId=q", headers=viewer_headers())
        assert r.status_code == 400
        body = r.json()
        assert body["error"]["code"] == "invalid_request"
        assert "projectId" in body["error"]["message"]
        events = await client.get(
            "/api/integrations/events?projectId=p&projectId=p", headers=viewer_headers()
        )
        assert events.status_code == 400
        assert events.json()["error"]["code"] == "invalid_request"


async def test_a_repeated_idempotency_key_line_is_a_400_on_every_mount(mount: MountFactory) -> None:
    """Two Idempotency-Key lines (joined by the server, or by the mount) are refused; the action does not run."""
    async with mount(make_service()) as m, m.client() as client:
        headers = [*viewer_headers().items(), ("Idempotency-Key", "k1"), ("Idempotency-Key", "k2")]
        r = await client.post(ACTIONS, json=action(), headers=headers)
        error_of(r, 400, "invalid_request")


async def test_a_repeated_last_event_id_line_is_a_400_on_every_mount(mount: MountFactory) -> None:
    """Two Last-Event-ID lines are refused before the stream opens."""
    async with mount(make_service()) as m, m.client() as client:
        headers = [*viewer_headers().items(), ("Last-Event-ID", "1-0"), ("Last-Event-ID", "2-0")]
        r = await client.get("/api/integrations/events", params={"projectId": "p"}, headers=headers)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_request"


async def test_repeated_if_none_match_lines_are_one_list_on_every_mount(mount: MountFactory) -> None:
    """If-None-Match is a list: a second line holding the current tag still gets the 304."""
    async with mount(make_service()) as m, m.client() as client:
        etag = (await client.get(STATUS, params={"projectId": "p"}, headers=viewer_headers())).headers["etag"]
        headers = [*viewer_headers().items(), ("If-None-Match", '"stale"'), ("If-None-Match", etag)]
        r = await client.get(STATUS, params={"projectId": "p"}, headers=headers)
        assert r.status_code == 304
