"""HttpClient: the error mapping table, retries within the budget, body caps, and secrecy."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from adapter_support import AutoClock, Router, respond
from hypothesis import given
from hypothesis import strategies as st

from integration_status._logging import capture_logs
from integration_status.adapters.http import HttpClient, classify_response
from integration_status.core.clock import SYSTEM_CLOCK
from integration_status.exceptions import (
    ProviderAuthError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from integration_status.protocols import Secret

TOKEN = Secret("ghp_SUPERSECRETTOKEN123")
URL = "https://api.example.test/thing"


async def _get(http: HttpClient, clock: Any, provider: str = "github", **kw: Any) -> Any:
    return await http.request_json(
        provider, "GET", URL, token=TOKEN, timeout=kw.pop("timeout", 2.5), clock=clock, **kw
    )


@pytest.mark.anyio
async def test_success_parses_json_and_sends_bearer_and_user_agent(
    http: HttpClient, router: Router, clock: Any
) -> None:
    """A 200 JSON answer comes back parsed; the token travels only in the Authorization header."""
    router.add("GET", "/thing", httpx.Response(200, json={"ok": True}))
    resp = await _get(http, clock)
    assert resp.status == 200
    assert resp.body == {"ok": True}
    sent = router.calls[0]
    assert sent.headers["authorization"] == "Bearer ghp_SUPERSECRETTOKEN123"
    assert sent.headers["user-agent"].startswith("integration-status/")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "name", "expected"),
    [
        ("github", "github/error_401_bad_credentials", ProviderAuthError),
        ("github", "github/error_403_resource_not_accessible", ProviderAuthError),
        ("github", "github/error_403_primary_rate_limit", ProviderRateLimited),
        ("github", "github/error_403_secondary_rate_limit", ProviderRateLimited),
        ("vercel", "vercel/error_403_invalid_token", ProviderAuthError),
        ("vercel", "vercel/error_403_forbidden", ProviderAuthError),
        ("vercel", "vercel/error_429_rate_limited", ProviderRateLimited),
        ("vercel", "vercel/error_500_internal", ProviderUnavailable),
        ("supabase", "supabase/error_401_unauthorized", ProviderAuthError),
        ("supabase", "supabase/error_403_insufficient_privileges", ProviderAuthError),
        ("supabase", "supabase/error_429_rate_limited", ProviderRateLimited),
        ("sanity", "sanity/error_401_session_not_found", ProviderAuthError),
        ("sanity", "sanity/error_401_session_expired", ProviderAuthError),
        ("sanity", "sanity/error_403_forbidden", ProviderAuthError),
        ("sanity", "sanity/error_429_rate_limited", ProviderRateLimited),
        ("sanity", "sanity/error_400_query_parse", ProviderUnavailable),
    ],
)
async def test_recorded_error_payloads_map_to_the_error_tree(
    http: HttpClient,
    router: Router,
    auto_clock: AutoClock,
    payload: Any,
    provider: str,
    name: str,
    expected: type,
) -> None:
    """Each recorded provider error becomes the documented ProviderError subclass."""
    router.add("GET", "/thing", payload(name))
    with pytest.raises(expected) as info:
        await _get(http, auto_clock, provider, timeout=0.5)
    assert info.value.provider == provider
    assert "SUPERSECRET" not in str(info.value)
    assert "SUPERSECRET" not in repr(info.value)


def test_github_primary_limit_waits_until_epoch_reset() -> None:
    """GitHub's x-ratelimit-reset is an epoch: retry_after is the time left until it."""
    err = classify_response(
        "github", 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1000"}, {}, now=940
    )
    assert isinstance(err, ProviderRateLimited)
    assert err.retry_after == 60


def test_github_secondary_limit_without_retry_after_waits_a_minute() -> None:
    """A secondary rate limit with no Retry-After asks for at least 60 s, whatever the primary reset says."""
    body = {"message": "You have exceeded a secondary rate limit. Please wait."}
    err = classify_response(
        "github", 403, {"x-ratelimit-remaining": "4000", "x-ratelimit-reset": "5"}, body, now=0
    )
    assert isinstance(err, ProviderRateLimited)
    assert err.retry_after == 60


def test_retry_after_header_wins_and_supabase_reset_is_seconds() -> None:
    """retry-after wins; Supabase's reset is seconds remaining; Sanity uses ratelimit-reset."""
    assert classify_response("vercel", 429, {"retry-after": "30"}, None, now=0).retry_after == 30  # type: ignore[union-attr]
    supa = classify_response(
        "supabase", 429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "37"}, None, now=9e9
    )
    assert supa is not None
    assert supa.retry_after == 37
    sanity = classify_response(
        "sanity", 429, {"ratelimit-remaining": "0", "ratelimit-reset": "4"}, None, now=0
    )
    assert sanity is not None
    assert sanity.retry_after == 4


def test_not_found_is_revoked_only_when_asked() -> None:
    """404 on a configured resource means lost access; elsewhere it is just an error answer."""
    assert isinstance(
        classify_response("github", 404, {}, None, now=0, not_found_is_revoked=True), ProviderAuthError
    )
    assert isinstance(classify_response("github", 404, {}, None, now=0), ProviderUnavailable)


@given(status=st.integers(min_value=200, max_value=599), remaining=st.sampled_from(["0", "10", None]))
def test_every_status_maps_to_one_documented_code(status: int, remaining: str | None) -> None:
    """Any status is either a success or exactly one of the four problem codes."""
    headers = {} if remaining is None else {"x-ratelimit-remaining": remaining}
    err = classify_response("vercel", status, headers, None, now=0)
    if 200 <= status < 300:
        assert err is None
    else:
        assert err is not None
        assert err.problem_code in ("oauth_revoked", "rate_limited", "timeout", "unknown")
        assert err.status_code == status


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (
            httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html>oops</html>"),
            "not JSON",
        ),
        (
            httpx.Response(200, headers={"content-type": "application/json"}, content=b'{"a": [1, 2'),
            "malformed",
        ),
        (
            httpx.Response(502, headers={"content-type": "text/html"}, content=b"<html>Bad gateway</html>"),
            "502",
        ),
    ],
)
async def test_html_and_malformed_bodies_are_unavailable(
    http: HttpClient, router: Router, auto_clock: AutoClock, response: httpx.Response, reason: str
) -> None:
    """HTML error pages and truncated JSON become ProviderUnavailable, never a crash or the body itself."""
    router.add("GET", "/thing", response)
    with pytest.raises(ProviderUnavailable) as info:
        await _get(http, auto_clock, timeout=0.3)
    assert reason in str(info.value)
    assert "<html>" not in str(info.value)


@pytest.mark.anyio
async def test_oversized_body_is_capped(router: Router, clock: Any) -> None:
    """A body over max_body (streamed, no content-length) is refused after reading just past the cap."""
    read = 0

    async def stream() -> Any:
        nonlocal read
        for _ in range(1000):
            read += 1024
            yield b" " * 1024

    router.add("GET", "/thing", lambda r: httpx.Response(200, content=stream()))
    async with HttpClient(transport=httpx.MockTransport(router), max_body=4096) as http:
        with pytest.raises(ProviderUnavailable, match="larger than 4096"):
            await _get(http, clock)
    assert read < 10 * 1024


@pytest.mark.anyio
async def test_declared_oversized_body_is_refused(router: Router, clock: Any) -> None:
    """A content-length over the cap is refused before reading."""
    router.add("GET", "/thing", httpx.Response(200, headers={"content-length": "99999999"}, content=b"{}"))
    async with HttpClient(transport=httpx.MockTransport(router), max_body=1000) as http:
        with pytest.raises(ProviderUnavailable):
            await _get(http, clock)


@pytest.mark.anyio
async def test_reads_retry_5xx_within_budget(http: HttpClient, router: Router, auto_clock: AutoClock) -> None:
    """A GET that meets a 503 is tried again and succeeds; the wait is on the injected clock."""
    router.add("GET", "/thing", httpx.Response(503, json={}), httpx.Response(200, json={"ok": 1}))
    resp = await _get(http, auto_clock)
    assert resp.body == {"ok": 1}
    assert router.count("GET", "/thing") == 2
    assert auto_clock.slept
    assert auto_clock.slept[0] > 0


@pytest.mark.anyio
async def test_retries_stop_at_three_attempts(
    http: HttpClient, router: Router, auto_clock: AutoClock
) -> None:
    """Persistent 500s are tried at most three times, then reported as unavailable."""
    router.add("GET", "/thing", httpx.Response(500, json={}))
    with pytest.raises(ProviderUnavailable, match="500"):
        await _get(http, auto_clock, timeout=30)
    assert router.count("GET", "/thing") == 3


@pytest.mark.anyio
async def test_no_retry_when_budget_is_spent(http: HttpClient, router: Router, auto_clock: AutoClock) -> None:
    """With a budget too small for another attempt after the backoff, a 500 is final after one call."""
    router.add("GET", "/thing", httpx.Response(500, json={}))
    with pytest.raises(ProviderUnavailable):
        await _get(http, auto_clock, timeout=0.12)
    assert router.count("GET", "/thing") == 1


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_never_retries_4xx(
    http: HttpClient, router: Router, auto_clock: AutoClock, status: int
) -> None:
    """Client errors are answered at once, exactly one call."""
    router.add("GET", "/thing", httpx.Response(status, json={"message": "no"}))
    with pytest.raises((ProviderAuthError, ProviderUnavailable)):
        await _get(http, auto_clock, timeout=30)
    assert router.count("GET", "/thing") == 1


@pytest.mark.anyio
async def test_429_retried_only_when_retry_after_fits(
    http: HttpClient, router: Router, auto_clock: AutoClock
) -> None:
    """A 429 with a short retry-after is waited out and retried; a long one is reported at once."""
    router.add(
        "GET", "/thing", httpx.Response(429, headers={"retry-after": "1"}), httpx.Response(200, json=[])
    )
    assert (await _get(http, auto_clock, timeout=2.5)).body == []
    assert auto_clock.slept == [1.0]
    router.calls.clear()
    router.add("GET", "/thing", httpx.Response(429, headers={"retry-after": "30"}, json={}))
    with pytest.raises(ProviderRateLimited) as info:
        await _get(http, auto_clock, timeout=2.5)
    assert info.value.retry_after == 30
    assert router.count("GET", "/thing") == 1


@pytest.mark.anyio
async def test_posts_are_never_retried(http: HttpClient, router: Router, auto_clock: AutoClock) -> None:
    """A non-idempotent POST meets a 503 once and reports it."""
    router.add("POST", "/thing", httpx.Response(503, json={}))
    with pytest.raises(ProviderUnavailable):
        await http.request_json("vercel", "POST", URL, token=TOKEN, json={}, timeout=30, clock=auto_clock)
    assert router.count("POST", "/thing") == 1


@pytest.mark.anyio
async def test_connect_errors_are_timeouts_and_retried(
    http: HttpClient, router: Router, auto_clock: AutoClock
) -> None:
    """A refused connection is a ProviderTimeout, retried for reads."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    router.add("GET", "/thing", refuse)
    with pytest.raises(ProviderTimeout) as info:
        await _get(http, auto_clock, timeout=30)
    assert router.count("GET", "/thing") == 3
    assert info.value.__context__ is None  # the httpx error (whose request holds the token) is not attached


@pytest.mark.anyio
async def test_token_never_in_errors_or_logs(http: HttpClient, router: Router, auto_clock: AutoClock) -> None:
    """Neither the token nor the body appear in exception text, reprs or log events."""
    router.add("GET", "/thing", httpx.Response(500, json={"message": "token ghp_SUPERSECRETTOKEN123 is bad"}))
    with capture_logs() as logs, pytest.raises(ProviderUnavailable) as info:
        await _get(http, auto_clock, timeout=30)
    assert logs, "retries are logged"
    dumped = json.dumps(logs, default=str) + str(info.value) + repr(info.value) + repr(http) + repr(TOKEN)
    assert "SUPERSECRET" not in dumped
    assert all(entry["event"].startswith("integration_status.") for entry in logs)


@pytest.mark.anyio
async def test_loopback_read_timeout_respects_budget(hanging_server: str) -> None:
    """A server that accepts and never answers is given up on within the budget, as a timeout."""
    async with HttpClient() as http:
        start = SYSTEM_CLOCK.monotonic()
        with pytest.raises(ProviderTimeout):
            await http.request_json(
                "github", "GET", hanging_server + "/x", token=TOKEN, timeout=0.3, clock=SYSTEM_CLOCK
            )
        assert SYSTEM_CLOCK.monotonic() - start < 1.0


@pytest.mark.anyio
async def test_loopback_connection_reset_is_timeout(resetting_server: str) -> None:
    """A connection reset by the peer maps to ProviderTimeout."""
    async with HttpClient() as http:
        with pytest.raises(ProviderTimeout):
            await http.request_json(
                "github", "GET", resetting_server + "/x", token=TOKEN, timeout=0.3, clock=SYSTEM_CLOCK
            )


def test_respond_helper_round_trips(payload: Any) -> None:
    """The payload loader builds responses with the recorded status and headers."""
    resp = respond(payload("supabase/error_429_rate_limited"))
    assert resp.status_code == 429
    assert resp.headers["x-ratelimit-reset"] == "37"


@pytest.mark.anyio
async def test_undecodable_body_is_unavailable_and_keeps_no_request() -> None:
    """A body that is not what its Content-Encoding says maps to unknown, carrying no httpx context (and so no
    request with its Authorization header) in __cause__ or __context__."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-encoding": "gzip"}, content=b"not gzip at all")

    async with HttpClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(ProviderUnavailable) as caught:
            await http.request_json(
                "github",
                "POST",
                "https://api.github.com/x",
                token=Secret("ghp_SECRET"),
                timeout=2,
                clock=SYSTEM_CLOCK,
            )
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    assert "ghp_SECRET" not in repr(caught.value)


@pytest.mark.anyio
async def test_a_secret_url_stays_out_of_httpx_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs each request line at INFO; a URL passed as a Secret (a deploy hook) shows as host only."""
    hook = "https://api.vercel.com/v1/integrations/deploy/prj_1/HOOKSECRET"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"job": {"id": "j"}})

    caplog.set_level("INFO", logger="httpx")
    async with HttpClient(transport=httpx.MockTransport(handler)) as http:
        await http.request_json("vercel", "POST", Secret(hook), token=None, timeout=2, clock=SYSTEM_CLOCK)
        await http.request_json(
            "vercel", "GET", "https://api.vercel.com/v2/user", token=None, timeout=2, clock=SYSTEM_CLOCK
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("https://api.vercel.com/…" in line for line in lines)
    assert any("/v2/user" in line for line in lines)  # ordinary URLs are logged as they are
    assert not any("HOOKSECRET" in line for line in lines)
