"""The one error tree of integration-status.

::

    IntegrationStatusError
    ├── InvalidModel (also ValueError)          a value or JSON document breaks the contract
    ├── ConfigurationError                      the host wired something wrong (raised at start-up)
    ├── BackendUnavailable                      Redis / the store is unreachable; actions fail closed
    ├── SubscriberLagging                       an event subscriber fell too far behind and was dropped
    ├── ProviderError                           a provider call failed; carries provider, status_code, retry_after
    │   ├── ProviderAuthError                   -> problem.code "oauth_revoked"
    │   ├── ProviderRateLimited                 -> problem.code "rate_limited"
    │   ├── ProviderTimeout                     -> problem.code "timeout"
    │   └── ProviderUnavailable                 -> problem.code "unknown" (5xx, malformed, unexpected shape)
    │       └── OutcomeUnknown                  an action's worker stopped mid-call: whether it ran is unknown
    └── RequestError                            a request to our endpoints is refused; carries http_status, code
        ├── InvalidRequest          400 invalid_request
        ├── Unauthorized            401 unauthorized
        ├── Forbidden               403 forbidden
        ├── NotFound                404 not_found
        ├── IdempotencyConflict     409 idempotency_conflict
        ├── IdempotencyMismatch     422 idempotency_mismatch
        └── RateLimitExceeded       429 rate_limited (retry_after)

Provider errors are produced in exactly one place per transport (``adapters/_http.py`` for HTTP, the Supabase
probe for PostgreSQL). Messages never contain tokens, DSN passwords or response bodies verbatim.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BackendUnavailable",
    "ConfigurationError",
    "Forbidden",
    "IdempotencyConflict",
    "IdempotencyMismatch",
    "IntegrationStatusError",
    "InvalidModel",
    "InvalidRequest",
    "NotFound",
    "OutcomeUnknown",
    "ProviderAuthError",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimitExceeded",
    "RequestError",
    "SubscriberLagging",
    "Unauthorized",
]


class IntegrationStatusError(Exception):
    """Base of every error this library raises on purpose."""


class InvalidModel(IntegrationStatusError, ValueError):
    """A value or a JSON document does not fit the contract; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigurationError(IntegrationStatusError):
    """The host configured the library wrongly (missing seam, bad setting, unreachable backend at start-up)."""


class BackendUnavailable(IntegrationStatusError):
    """The shared store (e.g. Redis) could not be reached; state-changing operations fail closed."""


class SubscriberLagging(IntegrationStatusError):
    """An event subscriber fell ``queue_size`` events behind and was dropped so it could not slow the others;
    the client reconnects with the last id it received and resumes from there."""


class ProviderError(IntegrationStatusError):
    """A provider call failed. ``problem_code`` is one of the four normalized codes."""

    problem_code: ClassVar[str] = "unknown"
    default_hint: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code
        self.retry_after = retry_after
        self.hint = hint if hint is not None else self.default_hint

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self)!r}, provider={self.provider!r}, "
            f"status_code={self.status_code!r}, retry_after={self.retry_after!r})"
        )


class ProviderAuthError(ProviderError):
    """Token revoked/expired, or access to a resource the token used to reach was lost."""

    problem_code = "oauth_revoked"
    default_hint = "Click to reconnect"


class ProviderRateLimited(ProviderError):
    """The provider rate-limited us; ``retry_after`` is in seconds when the provider said so."""

    problem_code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        if hint is None:
            hint = f"Retry in {max(1, round(retry_after))}s" if retry_after is not None else "Retry later"
        super().__init__(
            message, provider=provider, status_code=status_code, retry_after=retry_after, hint=hint
        )


class ProviderTimeout(ProviderError):
    """The provider did not answer in time, or the connection failed (refused, reset, DNS)."""

    problem_code = "timeout"
    default_hint = "Try again"


class ProviderUnavailable(ProviderError):
    """Anything else: 5xx, malformed or truncated JSON, an unexpected shape, an oversized body."""

    problem_code = "unknown"
    default_hint = "Provider error"


class OutcomeUnknown(ProviderUnavailable):
    """The worker running an action stopped after the action may have reached the provider, and the provider
    cannot be asked whether it did: a retry with the same key gets this answer instead of a second run."""


class RequestError(IntegrationStatusError):
    """A request to one of our endpoints is refused; maps 1:1 to an HTTP status and an ``error.code``."""

    http_status: ClassVar[int] = 400
    code: ClassVar[str] = "invalid_request"

    def __init__(self, message: str, *, hint: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.retry_after = retry_after

    def to_json(self) -> dict[str, object]:
        """The ``error`` object every endpoint answers with (``code``, ``message``, ``hint``, ``retryAfter``)."""
        out: dict[str, object] = {"code": self.code, "message": self.message}
        if self.hint is not None:
            out["hint"] = self.hint
        if self.retry_after is not None:
            out["retryAfter"] = self.retry_after
        return out


class InvalidRequest(RequestError):
    """400 ``invalid_request``: a malformed request (missing projectId, bad body, bad Idempotency-Key)."""

    http_status = 400
    code = "invalid_request"


class Unauthorized(RequestError):
    """401 ``unauthorized``: no viewer could be authenticated."""

    http_status = 401
    code = "unauthorized"


class Forbidden(RequestError):
    """403 ``forbidden``: the viewer's role may not run this action."""

    http_status = 403
    code = "forbidden"


class NotFound(RequestError):
    """404 ``not_found``: no such project, or the viewer may not see it (the same answer on purpose)."""

    http_status = 404
    code = "not_found"


class IdempotencyConflict(RequestError):
    """409 ``idempotency_conflict``: a request with this Idempotency-Key is still running."""

    http_status = 409
    code = "idempotency_conflict"


class IdempotencyMismatch(RequestError):
    """422 ``idempotency_mismatch``: this Idempotency-Key was used for a different request."""

    http_status = 422
    code = "idempotency_mismatch"


class RateLimitExceeded(RequestError):
    """429 ``rate_limited``: too many actions; ``retry_after`` says when to try again."""

    http_status = 429
    code = "rate_limited"
