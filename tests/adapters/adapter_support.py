"""Helpers for adapter tests (imported by name: the tests directory is not a package)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from integration_status.protocols import FetchContext
from integration_status.testing import FakeClock


def respond(envelope: dict[str, Any]) -> httpx.Response:
    """An httpx response from a payload envelope."""
    headers = dict(envelope.get("headers", {}))
    return httpx.Response(envelope["status"], headers=headers, content=json.dumps(envelope["body"]).encode())


Handler = Callable[[httpx.Request], httpx.Response]


class Router:
    """Routes requests by (method, path) to responses or callables, in order, and records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[httpx.Response | Handler]] = {}
        self.calls: list[httpx.Request] = []

    def add(self, method: str, path: str, *answers: httpx.Response | Handler | dict[str, Any]) -> Router:
        """Answers are used in order; the last one repeats."""
        self.routes[(method, path)] = [respond(a) if isinstance(a, dict) else a for a in answers]
        return self

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.calls if r.method == method and r.url.path == path)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return httpx.Response(418, json={"message": f"unrouted {request.method} {request.url.path}"})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(request) if callable(answer) else answer


def fetch_ctx(clock: Any, timeout: float = 2.5) -> FetchContext:
    return FetchContext(clock=clock, timeout=timeout, started=clock.monotonic())


def _serve(behaviour: str) -> Iterator[str]:
    """A loopback TCP server in a thread. ``hang``: accept and never answer; ``reset``: accept and reset."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            if behaviour == "reset":
                conn.recv(65536)
                # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        server.close()


class AutoClock(FakeClock):
    """A FakeClock whose sleep() moves time forward itself: retries and polls run instantly, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))
        await super().sleep(0)


Answer = tuple[int, dict[str, str], Any]


class LoopbackJson:
    """A threaded HTTP server on 127.0.0.1 that answers ``answer(method, path, headers)`` -> (status, headers,
    JSON body), each after ``delay`` seconds spent in the server (never in the test). It records every request
    and the largest number of requests it was answering at once (``peak``)."""

    def __init__(self, answer: Callable[[str, str, dict[str, str]], Answer], *, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.requests: list[tuple[str, str]] = []
        self.peak = 0
        self._busy = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                with outer._lock:
                    outer.requests.append((self.command, self.path))
                    outer._busy += 1
                    outer.peak = max(outer.peak, outer._busy)
                try:
                    time.sleep(outer.delay)  # the provider is slow: the server waits, on its own thread
                    status, headers, body = outer.answer(
                        self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
                    )
                finally:
                    with outer._lock:
                        outer._busy -= 1
                raw = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    def __enter__(self) -> LoopbackJson:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)
