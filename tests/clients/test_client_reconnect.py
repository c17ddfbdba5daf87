"""What a browser does when an event stream cannot be reopened (the shared store is down, a proxy answers 502):
a plain EventSource gives up for good on an answer that is not a 200 stream, the bundled client opens a new one.
The client runs under node with a scripted EventSource and a recorded setTimeout, so no time passes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "typescript" / "integration-status.js"
DOCS = ROOT / "docs"

#: One stream's life: it opens and gets an event, ends (the browser reconnects), the reconnect is answered
#: 503 (CLOSED), then every new stream fails the same way six times, and one opens and fails again.
SCRIPT = """
const { IntegrationStatusClient } = await import(process.argv[1]);
const sources = [];
class ScriptedSource {
  constructor(url) { this.url = url; this.readyState = 0; this.listeners = {}; sources.push(this); }
  addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
  close() { this.readyState = 2; }
  emit(type, data, id) { for (const fn of this.listeners[type] ?? []) fn({ data, lastEventId: id }); }
}
const timers = [];
globalThis.setTimeout = (fn, ms) => { timers.push({ fn, ms }); return timers.length; };
globalThis.clearTimeout = () => {};
const statuses = [];
const client = new IntegrationStatusClient({ fetch: async () => { throw new Error("no fetch here"); } });
const stream = client.events("p1", { EventSourceImpl: ScriptedSource, onStatus: (s) => statuses.push(s) });
const first = sources[0];
first.readyState = 1; first.onopen();
first.emit("status:update", JSON.stringify({ type: "status:update" }), "17-0");
first.readyState = 0; first.onerror();             // the stream ended: the browser reconnects by itself
const beforeClosed = timers.length;
first.readyState = 2; first.onerror();             // its reconnect was answered 503: CLOSED for good
const delays = [];
const fail = () => {
  const source = sources.at(-1);
  source.readyState = 2; source.onerror();
  delays.push(timers.at(-1).ms);
};
delays.push(timers.at(-1).ms);
timers.at(-1).fn();
for (let i = 0; i < 6; i++) { fail(); timers.at(-1).fn(); }
const opened = sources.at(-1);
opened.readyState = 1; opened.onopen();
fail();
stream.close();
console.log(JSON.stringify({ urls: sources.map((s) => s.url), delays, statuses, beforeClosed,
                              reconnects: stream.reconnects }));
"""


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    out = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, CLIENT.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_the_client_reopens_a_closed_stream_from_the_last_event(run: dict[str, Any]) -> None:
    """While the browser reconnects by itself the client only reports it; once the EventSource is CLOSED
    (readyState 2) it opens a new one, with ?lastEventId= of the last event it received."""
    assert run["beforeClosed"] == 0
    assert run["statuses"][:3] == ["open", "reconnecting", "closed"]
    assert "lastEventId" not in run["urls"][0]
    assert all("lastEventId=17-0" in url and "projectId=p1" in url for url in run["urls"][1:])
    assert run["reconnects"] == len(run["urls"]) - 1 == 7


def test_the_client_backs_off_from_one_to_thirty_seconds(run: dict[str, Any]) -> None:
    """1 s, doubling on each further failure up to 30 s, and back to 1 s once a stream has opened."""
    assert run["delays"] == [1000, 2000, 4000, 8000, 16000, 30000, 30000, 1000]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    rest = text[start + len(heading) :]
    end = re.search(r"^#{2,3} ", rest, re.M)
    return rest if end is None else rest[: end.start()]


def test_the_docs_say_a_plain_eventsource_stops_after_a_503() -> None:
    """The outage sections say what a browser really does with the 503 of a stream opened during the outage,
    and what a host with its own EventSource must do, instead of promising that it comes back by itself."""
    operations = _section((DOCS / "operations.md").read_text(), "### When Redis goes away or restarts")
    events = _section((DOCS / "http-api.md").read_text(), "### GET /events")
    for text in (operations, events):
        flat = " ".join(text.split())
        assert "503" in flat
        assert "CLOSED" in flat
        assert "lastEventId=" in flat
        assert "integration-status.js" in flat
    flat = " ".join(operations.split())
    assert "EventSource does so by itself) and are served once" not in flat
    assert "readyState === EventSource.CLOSED" in flat
    assert "after 1 s, doubling the wait on each further failure up to 30 s" in flat
