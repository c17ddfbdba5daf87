"""The one HTTP client of the adapters, and the one place where HTTP failures become provider errors.

:class:`HttpClient` owns a pooled ``httpx.AsyncClient`` for the service's lifetime.
:meth:`HttpClient.request_json` spends one time budget per call: per-attempt timeouts come from what is left
of it, reads (GET) are retried on timeouts and 5xx only while the budget allows, and a 429 is retried only
when its ``retry-after`` fits. Bodies are streamed and capped. Every failure leaves as a provider error of
:mod:`integration_status.exceptions` whose message names the provider, the status and a short reason, never
the token, the URL or the body.

The mapping itself is :func:`classify_response`, a pure function over status, headers and parsed body.
"""

from __future__ import annotations

import contextlib
import json as _json
import logging
from collections.abc import AsyncGenerator, Mapping
from importlib import metadata as _metadata
from typing import Any, Final, cast

import anyio
import attrs
import httpx
import tenacity as _t

from integration_status._config import TOKEN_HINT, URL_HINT, token_problem
from integration_status._logging import get_logger
from integration_status.adapters.budget import RateBudgets
from integration_status.core.clock import Clock
from integration_status.exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from integration_status.protocols import Credential, RefreshableToken, Secret
from integration_status.snapshot import Validators

__all__ = ["HttpClient", "JsonResponse", "classify_response", "default_user_agent"]


class _SecretUrls(logging.Filter):
    """httpx logs every request line, URL included, at INFO through the standard ``httpx`` logger. A URL that
    is itself a credential (a Vercel deploy hook) is shown there as scheme and host only while it is in use.
    A filter on httpx's logger, not a logging configuration: hosts keep configuring logging as they like."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.urls and isinstance(record.args, tuple):
            record.args = tuple(self._hide(arg) for arg in record.args)
        return True

    def _hide(self, arg: object) -> object:
        if isinstance(arg, str | httpx.URL) and str(arg) in self.urls:
            url = httpx.URL(str(arg))
            return f"{url.scheme}://{url.host}/…"
        return arg


_SECRET_URLS = _SecretUrls()
logging.getLogger("httpx").addFilter(_SECRET_URLS)

_log = get_logger(__name__)

#: Providers whose ``x-ratelimit-reset`` is a UTC epoch (seconds); the others send seconds remaining.
_EPOCH_RESET: Final = frozenset({"github", "vercel"})
#: An attempt needs at least this much of the budget to be worth starting.
_MIN_ATTEMPT: Final = 0.05
_MAX_ATTEMPTS: Final = 3
#: GitHub asks to wait at least a minute after a secondary rate limit that names no Retry-After.
_SECONDARY_MIN_WAIT: Final = 60.0


def default_user_agent() -> str:
    """``integration-status/<installed version>`` (GitHub rejects requests without a User-Agent)."""
    try:
        version = _metadata.version("integration-status")
    except _metadata.PackageNotFoundError:
        version = "0.1.0"
    return f"integration-status/{version}"


@attrs.frozen(kw_only=True)
class JsonResponse:
    """A successful provider answer: status, lower-case headers, the parsed JSON body (None when empty) and
    the duration of the successful attempt in seconds (measured on the injected clock)."""

    status: int
    headers: Mapping[str, str] = attrs.field(hash=False)
    body: Any = attrs.field(hash=False)
    elapsed: float = 0.0

    @property
    def not_modified(self) -> bool:
        """A 304 to a conditional request: the body the validators came with is still current."""
        return self.status == 304

    def validators(self, facts: Any) -> Validators:
        """This answer's validators (``ETag``, ``Last-Modified``) with the ``facts`` the adapter read from it."""
        return Validators(
            etag=self.headers.get("etag"), last_modified=self.headers.get("last-modified"), facts=facts
        )


@attrs.frozen(kw_only=True, eq=False)
class _Call:
    """One provider request as an adapter asked for it: everything but the token and the time budget."""

    provider: str
    method: str
    url: str | Secret
    headers: Mapping[str, str] | None = None
    params: Mapping[str, str] | list[tuple[str, str]] | None = None
    json: Any = None
    not_found_is_revoked: bool = False
    validators: Validators | None = None
    #: Whose rate budget the call spends (the connection's credential, refreshable or not).
    spend: Credential | None = None


class _Retryable(Exception):
    """Internal: an attempt failed in a way worth another try. Carries the error to raise if none is left."""

    def __init__(self, error: ProviderError, wait: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _message(body: Any) -> str:
    """The provider's own error message, lower-cased, only for matching (never echoed)."""
    if isinstance(body, Mapping):
        for key in ("message", "error_description"):
            if isinstance(body.get(key), str):
                return str(body[key]).lower()
        inner = body.get("error")
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"]).lower()
    return ""


def _retry_after(provider: str, headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait, from ``retry-after`` or else the provider's reset header."""
    seconds = _number(headers.get("retry-after"))
    if seconds is not None:
        return seconds
    if provider == "sanity":
        return _number(headers.get("ratelimit-reset"))
    reset = _number(headers.get("x-ratelimit-reset"))
    if reset is None:
        return None
    if provider in _EPOCH_RESET or reset > 1_000_000_000:
        return max(0.0, reset - now)
    return reset


def _remaining_is_zero(headers: Mapping[str, str]) -> bool:
    return any(
        headers.get(name, "").strip() == "0"
        for name in ("x-ratelimit-remaining", "ratelimit-remaining", "x-ratelimit-remaining-second")
    )


def classify_response(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: Any,
    *,
    now: float,
    not_found_is_revoked: bool = False,
) -> ProviderError | None:
    """Map a finished HTTP answer to a provider error, or None when it is a success.

    ``headers`` have lower-case names; ``now`` is wall-clock epoch seconds (for epoch reset headers).

    >>> classify_response("github", 401, {}, {"message": "Bad credentials"}, now=0).problem_code
    'oauth_revoked'
    >>> headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "37"}
    >>> e = classify_response("supabase", 429, headers, None, now=0)
    >>> (e.problem_code, e.retry_after)
    ('rate_limited', 37.0)
    """
    if 200 <= status < 300:
        return None
    text = _message(body)
    if status == 401:
        return ProviderAuthError(f"{provider}: HTTP 401 (token rejected)", provider=provider, status_code=401)
    if status in (403, 429):
        secondary = provider == "github" and "secondary rate limit" in text
        if status == 429 or secondary or _remaining_is_zero(headers) or "retry-after" in headers:
            if secondary:
                # The primary reset header says nothing about a secondary limit.
                wait = _number(headers.get("retry-after"))
                wait = _SECONDARY_MIN_WAIT if wait is None else wait
            else:
                wait = _retry_after(provider, headers, now)
            return ProviderRateLimited(
                f"{provider}: HTTP {status} (rate limited)",
                provider=provider,
                status_code=status,
                retry_after=wait,
            )
        # A token that lost a permission, a revoked token (Vercel answers 403 with invalidToken), or GitHub's
        # "Resource not accessible by ...": the fix is always to reconnect with enough access.
        reason = "token invalid" if isinstance(body, Mapping) and _invalid_token(body) else "access denied"
        return ProviderAuthError(f"{provider}: HTTP 403 ({reason})", provider=provider, status_code=403)
    if status == 404 and "json" not in headers.get("content-type", "json"):
        # Every provider API answers a 404 in JSON; an HTML (or text) page comes from some other server.
        return ProviderUnavailable(
            f"{provider}: HTTP 404 that is not an API answer (is the base URL the API root?)",
            provider=provider, status_code=404, hint=URL_HINT,
        )  # fmt: skip
    if status == 404 and not_found_is_revoked:
        return ProviderAuthError(
            f"{provider}: HTTP 404 (not found or access revoked)", provider=provider, status_code=404
        )
    if status >= 500:
        return ProviderUnavailable(
            f"{provider}: HTTP {status} (server error)", provider=provider, status_code=status
        )
    return ProviderUnavailable(
        f"{provider}: HTTP {status} (request refused)", provider=provider, status_code=status
    )


def _token_rejected(error: ProviderAuthError) -> bool:
    """Whether the provider refused the token itself (expired or revoked), as opposed to its access."""
    return error.status_code == 401 or "(token invalid)" in str(error)


async def _use(provider: str, token: Credential | None, rejected: Secret | None) -> Secret | None:
    """The secret to send: a fixed one, or a refreshable token's current one (a fresh one after ``rejected``).
    A host minting function that fails leaves as ``oauth_revoked``, without its exception (which may hold
    credentials)."""
    if not isinstance(token, RefreshableToken):
        return token
    with contextlib.suppress(Exception):
        return await (token.refresh(rejected) if rejected is not None else token.current())
    raise ProviderAuthError(f"{provider}: no fresh token (refresh failed)", provider=provider)


def _invalid_token(body: Mapping[str, Any]) -> bool:
    inner = body.get("error")
    return isinstance(inner, Mapping) and inner.get("invalidToken") is True


def _parse(provider: str, status: int, raw: bytes, content_type: str, *, strict: bool) -> Any:
    """Parse a body. ``strict`` (success answers) turns anything but JSON into ProviderUnavailable; error
    answers parse leniently because their body only refines the mapping."""
    if not raw.strip():
        return None
    looks_json = "json" in content_type.lower() or not content_type
    if strict and not looks_json:
        raise ProviderUnavailable(
            f"{provider}: HTTP {status} (not JSON: is the base URL the API root?)",
            provider=provider, status_code=status, hint=URL_HINT,
        )  # fmt: skip
    try:
        return _json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        if not strict:
            return None
    raise ProviderUnavailable(
        f"{provider}: HTTP {status} (malformed JSON)", provider=provider, status_code=status
    )


class HttpClient:
    """A pooled HTTP client shared by all adapters; open it with the service and close it with ``aclose()``.

    >>> client = HttpClient(max_body=1024)
    >>> client.max_body
    1024
    """

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_body: int = 1_000_000,
        user_agent: str | None = None,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
    ) -> None:
        self.max_body = max_body
        self.user_agent = user_agent or default_user_agent()
        #: What each token's rate-limit headers said, shared by every adapter on this client.
        self.budgets = RateBudgets()
        self._client = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_keepalive_connections
            ),
            headers={"User-Agent": self.user_agent},
            trust_env=transport is None,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"HttpClient(user_agent={self.user_agent!r}, max_body={self.max_body!r})"

    async def request_json(
        self,
        provider: str,
        method: str,
        url: str | Secret,
        *,
        token: Credential | None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        json: Any = None,
        timeout: float,  # noqa: ASYNC109 - the whole budget, spent across attempts; not a cancel scope
        retry_reads: bool = True,
        clock: Clock,
        not_found_is_revoked: bool = False,
        validators: Validators | None = None,
    ) -> JsonResponse:
        """One provider call within ``timeout`` seconds in total (retries included).

        ``validators`` (of an earlier answer to the same call) make it conditional: ``If-None-Match`` /
        ``If-Modified-Since`` are sent, and a 304 comes back as a :class:`JsonResponse` with ``not_modified``
        and no body.

        With a :class:`~integration_status.protocols.RefreshableToken`, a rejected token (401, or Vercel's 403
        ``invalidToken``) is refreshed once and the call retried once, within the same budget.

        Raises :class:`~integration_status.exceptions.ProviderError` subclasses only.
        """
        if (problem := token_problem(token)) is not None:  # httpx could not even encode the header
            raise ProviderUnavailable(f"{provider}: the token {problem}", provider=provider, hint=TOKEN_HINT)
        wait = self.budgets.refused_for(provider, token, clock.time())
        if wait is not None:
            # The provider refused this token until its reset: asking again before then only spends more.
            raise ProviderRateLimited(
                f"{provider}: rate limited (until the provider's reset)", provider=provider, retry_after=wait
            )
        deadline = clock.monotonic() + timeout
        secret = await _use(provider, token, None)
        call = _Call(
            provider=provider, method=method, url=url, headers=headers, params=params, json=json,
            not_found_is_revoked=not_found_is_revoked, validators=validators, spend=token,
        )  # fmt: skip
        retry = retry_reads and method.upper() in ("GET", "HEAD")
        try:
            return await self._request(call, secret, timeout, retry=retry, clock=clock)
        except ProviderAuthError as exc:
            if not isinstance(token, RefreshableToken) or not _token_rejected(exc):
                raise
        fresh = await _use(provider, token, secret)
        _log.info("integration_status.http.token_refreshed", provider=provider)
        return await self._request(
            call, fresh, max(0.0, deadline - clock.monotonic()), retry=retry, clock=clock
        )

    async def _request(
        self, call: _Call, token: Secret | None, budget: float, *, retry: bool, clock: Clock
    ) -> JsonResponse:
        """``call`` with ``token`` within ``budget`` seconds, reads retried (``retry``) while the budget allows."""
        deadline = clock.monotonic() + budget

        def left() -> float:
            return deadline - clock.monotonic()

        async def attempt() -> JsonResponse:
            return await self._attempt(call, token, left(), clock)

        def wait(state: _t.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Retryable) and exc.wait is not None:
                return float(exc.wait)
            return min(0.1 * 2.0 ** (state.attempt_number - 1), 1.0)

        def stop(state: _t.RetryCallState) -> bool:
            return state.attempt_number >= _MAX_ATTEMPTS or left() - state.upcoming_sleep < _MIN_ATTEMPT

        def log_retry(state: _t.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            _log.info(
                "integration_status.http.retry",
                provider=call.provider,
                method=call.method,
                attempt=state.attempt_number,
                status=getattr(getattr(exc, "error", None), "status_code", None),
                wait=state.upcoming_sleep,
            )

        retrying = _t.AsyncRetrying(
            retry=_t.retry_if_exception_type(_Retryable),
            stop=stop,
            wait=wait,
            sleep=clock.sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            if not retry:
                return await attempt()
            return await retrying(attempt)
        except _Retryable as exc:
            error = exc.error
        raise error

    async def _attempt(self, call: _Call, token: Secret | None, budget: float, clock: Clock) -> JsonResponse:
        provider, validators, spend = call.provider, call.validators, call.spend
        if budget < _MIN_ATTEMPT:
            raise ProviderTimeout(f"{provider}: no time left for the request", provider=provider)
        sent: dict[str, str] = {"Accept": "application/json"}
        sent.update(call.headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token.reveal()}"
        if validators is not None and validators.etag:
            sent["If-None-Match"] = validators.etag
        if validators is not None and validators.last_modified:
            sent["If-Modified-Since"] = validators.last_modified
        conditional = "If-None-Match" in sent or "If-Modified-Since" in sent
        started = clock.monotonic()
        error: ProviderError | None = None
        retry_wait: float | None = None
        retryable = False
        result: JsonResponse | None = None
        # Read timeouts in httpx are per chunk; the outer scope caps the whole attempt, slow drips included.
        with anyio.move_on_after(budget) as scope:
            try:
                status, resp_headers, raw = await self._send(
                    provider, call.method, call.url, sent, call.params, call.json, httpx.Timeout(budget)
                )
            except ProviderError as exc:
                error, retryable = exc, isinstance(exc, ProviderTimeout)
            else:
                self.budgets.observe(provider, spend, resp_headers, clock.time())
                if status == 304 and conditional:
                    return JsonResponse(
                        status=304, headers=resp_headers, body=None, elapsed=clock.monotonic() - started
                    )
                body = _parse(provider, status, raw, resp_headers.get("content-type", ""), strict=False)
                error = classify_response(
                    provider,
                    status,
                    resp_headers,
                    body,
                    now=clock.time(),
                    not_found_is_revoked=call.not_found_is_revoked,
                )
                if error is None:
                    strict = _parse(provider, status, raw, resp_headers.get("content-type", ""), strict=True)
                    result = JsonResponse(
                        status=status, headers=resp_headers, body=strict, elapsed=clock.monotonic() - started
                    )
                elif isinstance(error, ProviderRateLimited) and error.retry_after is not None:
                    self.budgets.refuse(provider, spend, clock.time() + error.retry_after)
                    if status == 429:
                        retryable, retry_wait = True, error.retry_after
                elif status >= 500:
                    retryable = True
        if scope.cancelled_caught:
            error, retryable = ProviderTimeout(f"{provider}: no answer in time", provider=provider), True
        if result is not None:
            return result
        assert error is not None
        if retryable:
            raise _Retryable(error, retry_wait)
        raise error

    async def _send(
        self,
        provider: str,
        method: str,
        url: str | Secret,
        headers: Mapping[str, str],
        params: Mapping[str, str] | list[tuple[str, str]] | None,
        json: Any,
        limits: httpx.Timeout,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send, then stream the body up to ``max_body``. Transport failures become provider errors here; the
        mapped error is raised outside the ``except`` so it carries no httpx context (whose request holds the
        Authorization header)."""
        mapped: ProviderError | None = None
        got_headers = False
        hidden: str | None = None
        try:
            target = url.reveal() if isinstance(url, Secret) else url
            request = self._client.build_request(
                method, target, headers=headers, params=cast(Any, params), json=json, timeout=limits
            )
            if isinstance(url, Secret):  # a URL that is a credential: keep it out of httpx's log line
                hidden = str(request.url)
                _SECRET_URLS.urls.add(hidden)
            response = await self._client.send(request, stream=True, follow_redirects=method.upper() == "GET")
            got_headers = True
            try:
                resp_headers = {k.lower(): v for k, v in response.headers.items()}
                declared = _number(resp_headers.get("content-length"))
                if declared is not None and declared > self.max_body:
                    mapped = self._too_big(provider, response.status_code)
                else:
                    chunks: list[bytes] = []
                    size = 0
                    # aclosing: leaving the loop early must close the stream's generator here, not in a
                    # finalizer task the event loop runs later.
                    async with contextlib.aclosing(
                        cast(AsyncGenerator[bytes, None], response.aiter_bytes())
                    ) as body:
                        async for chunk in body:
                            size += len(chunk)
                            if size > self.max_body:
                                mapped = self._too_big(provider, response.status_code)
                                break
                            chunks.append(chunk)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            mapped = ProviderTimeout(f"{provider}: timed out ({type(exc).__name__})", provider=provider)
        except httpx.RemoteProtocolError:
            # Dropped before any answer is a connection failure; dropped mid-body is a truncated answer.
            mapped = (
                ProviderUnavailable(f"{provider}: truncated response", provider=provider)
                if got_headers
                else ProviderTimeout(f"{provider}: connection closed without an answer", provider=provider)
            )
        except httpx.TransportError as exc:
            mapped = ProviderTimeout(
                f"{provider}: connection failed ({type(exc).__name__})", provider=provider
            )
        except httpx.InvalidURL:
            mapped = ProviderUnavailable(f"{provider}: invalid URL", provider=provider)
        except (httpx.RequestError, httpx.TooManyRedirects, httpx.StreamError) as exc:
            # e.g. a body that does not decode as its Content-Encoding says, or a redirect loop
            mapped = ProviderUnavailable(
                f"{provider}: bad response ({type(exc).__name__})", provider=provider
            )
        finally:
            if hidden is not None:
                _SECRET_URLS.urls.discard(hidden)
        if mapped is not None:
            raise mapped
        return response.status_code, resp_headers, b"".join(chunks)

    def _too_big(self, provider: str, status: int) -> ProviderError:
        return ProviderUnavailable(
            f"{provider}: HTTP {status} (response larger than {self.max_body} bytes)",
            provider=provider,
            status_code=status,
        )
