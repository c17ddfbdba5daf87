"""Benchmark 7: GitHub rate budget. Twenty projects share one GitHub token (an organisation's installation); three
tabs per project poll the status every 10 s for one simulated hour (FakeClock), and every project gets a push
every ~30 minutes. The real GitHub adapter, the snapshot cache and the aggregator run in process against a fake
GitHub on loopback that implements ETags, 304 Not Modified and the primary limit (5,000 requests an hour per
token; a 304 does not count; past the limit it answers 429).

Printed: requests that count against the limit per hour, with conditional requests and without them (the same
client with ``If-None-Match`` / ``If-Modified-Since`` stripped, as if GitHub offered none), the 429 answers, and
pushes not shown by the first refresh after them. Bars (with conditional requests): <= 1,000 counted requests an
hour, 0 answers 429, every push visible in the next poll after its refresh. Without conditional requests the
budget pacing alone must keep the token off the wall (0 answers 429, under 5,000 an hour).
"""

from __future__ import annotations

import bisect
import hashlib
import http.server
import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
import attrs
import httpx

from bench._common import Outcome, report
from integration_status.adapters.github import GitHubAdapter
from integration_status.adapters.http import HttpClient
from integration_status.backends.memory import MemoryCacheStore
from integration_status.core.aggregator import Aggregator, cache_key
from integration_status.core.cache import SnapshotCache
from integration_status.models import format_timestamp
from integration_status.protocols import ProjectConnections, ProviderConnection
from integration_status.snapshot import Sensitive
from integration_status.testing import FakeClock

LIMIT = 5000
WINDOW = 3600.0
POLL = 10.0
TABS = 3
PUSH_EVERY = 1800.0
BAR_COUNTED = 1000
TOKEN = "ghs_benchINSTALLATION"


@attrs.define
class _Repo:
    pushes: list[float]  # push times, sorted
    shas: list[str]


class FakeGitHub:
    """The two resources the adapter reads, per repository ``org/repo-N``, with GitHub's validators and its
    primary limit on ``clock``'s time. Thread-safe: it answers from the server's threads."""

    def __init__(self, clock: FakeClock, repos: dict[str, _Repo]) -> None:
        self.clock = clock
        self.repos = repos
        self.counted = 0
        self.not_modified = 0
        self.refused = 0
        self._reset_at: float | None = None
        self._used = 0
        self._lock = threading.Lock()

    def _latest(self, repo: _Repo, now: float) -> int:
        return bisect.bisect_right(repo.pushes, now) - 1

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        now = self.clock.time()
        parts = urlsplit(path).path.strip("/").split("/")
        name = "/".join(parts[1:3])
        repo = self.repos.get(name)
        if parts[0] != "repos" or repo is None or not headers.get("authorization", "").startswith("Bearer "):
            return 404, {}, {"message": "Not Found"}
        at = self._latest(repo, now)
        pushed = format_timestamp_s(repo.pushes[at]) if at >= 0 else None
        if len(parts) == 3:
            body: Any = {"full_name": name, "default_branch": "main", "pushed_at": pushed, "archived": False}
        elif parts[3] == "activity":
            body = [] if at < 0 else [{"timestamp": pushed, "after": repo.shas[at], "ref": "refs/heads/main"}]
        else:
            return 404, {}, {"message": "Not Found"}
        etag = 'W/"' + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20] + '"'
        with self._lock:
            if self._reset_at is None or now >= self._reset_at:
                self._reset_at, self._used = now + WINDOW, 0
            if headers.get("if-none-match") == etag:
                self.not_modified += 1
                return 304, {"etag": etag, **self._limits()}, None
            if self._used >= LIMIT:
                self.refused += 1
                return 429, self._limits(), {"message": "API rate limit exceeded"}
            self._used += 1
            self.counted += 1
            return 200, {"etag": etag, **self._limits()}, body

    def _limits(self) -> dict[str, str]:
        assert self._reset_at is not None
        return {
            "x-ratelimit-limit": str(LIMIT),
            "x-ratelimit-remaining": str(LIMIT - self._used),
            "x-ratelimit-used": str(self._used),
            "x-ratelimit-reset": str(int(self._reset_at)),
            "x-ratelimit-resource": "core",
        }


def format_timestamp_s(at: float) -> str:
    return format_timestamp(datetime.fromtimestamp(int(at), tz=UTC))


@contextmanager
def _serve(github: FakeGitHub) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = (
            True  # headers and body go out as two writes: do not wait for an ACK between
        )

        def do_GET(self) -> None:
            status, headers, body = github.answer(self.path, {k.lower(): v for k, v in self.headers.items()})
            raw = b"" if body is None or status == 304 else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("content-length", str(len(raw)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _Unconditional(httpx.AsyncBaseTransport):
    """The same requests without their validators: a GitHub that never answers 304."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for name in ("if-none-match", "if-modified-since"):
            if name in request.headers:
                del request.headers[name]
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.frozen
class Result:
    counted_per_hour: float
    refused: int
    not_modified: int
    missed_pushes: int
    pushes: int
    polls: int
    requests: int


def _schedule(projects: int, hours: float, start: float, rng: random.Random) -> dict[str, _Repo]:
    repos: dict[str, _Repo] = {}
    for p in range(projects):
        pushes, shas = [start - 86_400.0], [f"{p:02d}{0:038d}"]  # an old push before the hour starts
        at = start + rng.expovariate(1 / PUSH_EVERY)
        while at < start + hours * 3600:
            pushes.append(at)
            shas.append(hashlib.sha1(f"{p}:{at}".encode()).hexdigest())
            at += rng.expovariate(1 / PUSH_EVERY)
        repos[f"org/repo-{p}"] = _Repo(pushes=pushes, shas=shas)
    return repos


async def _simulate(projects: int, hours: float, *, conditional: bool, seed: int = 7) -> Result:
    clock = FakeClock()
    rng = random.Random(seed)
    start = clock.time()
    repos = _schedule(projects, hours, start, rng)
    github = FakeGitHub(clock, repos)
    polls = [
        (start + rng.uniform(0, POLL) + POLL * k, f"p{p}")
        for p in range(projects)
        for _ in range(TABS)
        for k in range(int(hours * 3600 / POLL))
    ]
    polls.sort()
    connections = {
        f"p{p}": ProjectConnections(
            project_id=f"p{p}",
            providers={
                "github": ProviderConnection(
                    provider="github", settings={"repository": f"org/repo-{p}"}, token=TOKEN
                )
            },
        )
        for p in range(projects)
    }
    missed = 0
    with _serve(github) as url:
        transport = None if conditional else _Unconditional()
        async with HttpClient(transport=transport) as http, anyio.create_task_group() as tg:
            cache = SnapshotCache(MemoryCacheStore(clock=clock), clock=clock, ttl=15.0, rng=rng)
            cache.start(tg.start_soon)
            aggregator = Aggregator(
                adapters={"github": GitHubAdapter(http=http, base_url=url)}, cache=cache, clock=clock
            )
            for at, project in polls:
                if at > clock.time():
                    clock.advance(at - clock.time())
                views = await aggregator.collect(project, connections[project])
                entry = await cache.peek(cache_key(project, "github"))  # the entry this poll was served from
                await (
                    cache.settled()
                )  # a refresh the poll started in the background ends before the next poll
                shown = next(v for v in views if v.provider == "github").snapshot.detail("sha")
                if entry is None or not isinstance(shown, Sensitive):
                    missed += 1
                    continue
                # The snapshot was fetched at checked_at: it must show the newest push made by then.
                repo = repos[f"org/repo-{project[1:]}"]
                expected = repo.shas[bisect.bisect_right(repo.pushes, entry.checked_at) - 1]
                missed += shown.value != expected
            tg.cancel_scope.cancel()
    pushes = sum(len(r.pushes) - 1 for r in repos.values())
    return Result(
        counted_per_hour=github.counted / hours,
        refused=github.refused,
        not_modified=github.not_modified,
        missed_pushes=missed,
        pushes=pushes,
        polls=len(polls),
        requests=github.counted + github.not_modified + github.refused,
    )


def run(*, smoke: bool = False) -> list[Outcome]:
    projects, hours = (3, 0.2) if smoke else (20, 1.0)
    with_etags = anyio.run(lambda: _simulate(projects, hours, conditional=True))
    without = anyio.run(lambda: _simulate(projects, hours, conditional=False))
    # The bar is for twenty projects in an hour; a smoke pass scales it to its size.
    bar = BAR_COUNTED * projects / 20
    refused = with_etags.refused + without.refused
    for label, r in (("with conditional requests", with_etags), ("without", without)):
        print(
            f"github_budget {label}: {projects} projects x {TABS} tabs, {r.polls} polls, {r.pushes} pushes: "
            f"{r.requests} requests, {r.counted_per_hour:.0f} counted/hour, {r.not_modified} answered 304, "
            f"{r.refused} answered 429, {r.missed_pushes} polls missing a push",
            flush=True,
        )
    return [
        report(
            "github_budget_counted_per_hour",
            with_etags.counted_per_hour,
            f"<= {bar:.0f}",
            with_etags.counted_per_hour <= bar,
            fmt="{:.0f}",
        ),
        report("github_budget_429", refused, "== 0", refused == 0, fmt="{:.0f}"),
        report(
            "github_budget_missed_pushes",
            with_etags.missed_pushes,
            "== 0",
            with_etags.missed_pushes == 0,
            fmt="{:.0f}",
        ),
        report(
            "github_budget_unconditional_per_hour",
            without.counted_per_hour,
            f"< {LIMIT}",
            without.counted_per_hour < LIMIT,
            fmt="{:.0f}",
        ),
    ]
