"""Rate limiting of quick actions: a sliding-window log, decided by a pure function.

The contract every :class:`~integration_status.protocols.RateLimiter` engine (memory, Redis) implements for
``hit(key, limit=N, window=W)`` at time ``now``:

- times are whole milliseconds (inputs are rounded to the nearest one);
- the hits that count are those at ``t`` with ``t > now - W``: a hit at ``t`` frees its slot at exactly
  ``t + W`` (a rolling window, not fixed minute buckets);
- fewer than ``N`` counted hits -> allowed, and ``now`` is recorded as a hit; ``remaining`` = ``N`` minus the
  counted hits including this one; ``retry_after`` = 0;
- otherwise refused, and nothing is recorded (a refused request does not extend the wait); ``remaining`` = 0;
  ``retry_after`` = ``oldest counted hit + W - now`` (> 0);
- ``reset`` = seconds until every counted hit (including this one when allowed) has left the window, i.e. when
  the full quota is back;
- concurrent hits on one key are exact: of M simultaneous hits on an empty key, exactly ``min(M, N)`` are
  allowed.

The web layer sends ``Retry-After`` and ``error.retryAfter`` as :func:`retry_after_seconds` (whole seconds,
rounded up, at least 1) so a client that waits that long is admitted.

>>> decision, hits = decide((), 100.0, limit=2, window=60)
>>> decision.allowed, decision.remaining, hits
(True, 1, (100.0,))
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Final

from integration_status.core.canonical import canonical_json
from integration_status.protocols import RateDecision

__all__ = [
    "ACTION_WINDOW",
    "decide",
    "rate_key",
    "rate_limit_headers",
    "reset_seconds",
    "retry_after_seconds",
]

#: The default window of the actions limit (5 per rolling minute per user and project), in seconds.
ACTION_WINDOW: Final = 60.0


def decide(
    hits: Sequence[float], now: float, *, limit: int, window: float
) -> tuple[RateDecision, tuple[float, ...]]:
    """The decision for one more hit at ``now``, and the hit log to keep (expired hits pruned, sorted).

    Times are compared in whole milliseconds so the arithmetic is exact: with float seconds,
    ``oldest + W - now`` can round just below a whole number of seconds, and a client that waited
    ``Retry-After`` would be refused.

    >>> d, hits = decide((10.0, 20.0), 30.0, limit=2, window=60)
    >>> d.allowed, d.retry_after, hits
    (False, 40.0, (10.0, 20.0))
    >>> decide((10.0, 20.0), 70.0, limit=2, window=60)[0].allowed  # the hit at 10 freed its slot at 70
    True
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    window_ms = _ms(window)
    if window_ms < 1:
        raise ValueError("window must be positive (at least 1 ms)")
    now_ms = _ms(now)
    counted = sorted(t for t in map(_ms, hits) if t + window_ms > now_ms)
    if len(counted) < limit:
        kept = (*counted, now_ms)
        decision = RateDecision(
            allowed=True,
            limit=limit,
            remaining=limit - len(kept),
            retry_after=0.0,
            reset=(max(kept) + window_ms - now_ms) / 1000,
        )
        return decision, tuple(t / 1000 for t in kept)
    decision = RateDecision(
        allowed=False,
        limit=limit,
        remaining=0,
        retry_after=(counted[0] + window_ms - now_ms) / 1000,
        reset=(counted[-1] + window_ms - now_ms) / 1000,
    )
    return decision, tuple(t / 1000 for t in counted)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def retry_after_seconds(decision: RateDecision) -> int:
    """``Retry-After`` / ``error.retryAfter``: whole seconds until a slot frees, rounded up, at least 1."""
    return max(1, math.ceil(decision.retry_after))


def reset_seconds(decision: RateDecision) -> int:
    """Whole seconds (rounded up) until the full quota is back; the ``reset`` of the ``RateLimit`` header."""
    return max(0, math.ceil(decision.reset))


def rate_limit_headers(decision: RateDecision, *, window: float = ACTION_WINDOW) -> dict[str, str]:
    """Response headers for a decision.

    The header syntax is that of draft-ietf-httpapi-ratelimit-headers-07 (2023-10), where ``RateLimit`` is
    a Dictionary (``limit``, ``remaining``, ``reset``) and ``RateLimit-Policy`` a List of
    ``<limit>;w=<window>``. Later drafts renamed the parameters; we keep -07 as the widely deployed form.
    ``Retry-After`` is added only to a refusal and always equals ``retry_after_seconds(decision)``.

    >>> from integration_status.protocols import RateDecision
    >>> rate_limit_headers(RateDecision(allowed=False, limit=5, remaining=0, retry_after=12.2, reset=50))
    {'RateLimit-Policy': '5;w=60', 'RateLimit': 'limit=5, remaining=0, reset=50', 'Retry-After': '13'}
    """
    headers = {
        "RateLimit-Policy": f"{decision.limit};w={math.ceil(window)}",
        "RateLimit": (
            f"limit={decision.limit}, remaining={decision.remaining}, reset={reset_seconds(decision)}"
        ),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(retry_after_seconds(decision))
    return headers


def rate_key(user_id: str, project_id: str) -> str:
    """The limiter key of one (user, project): sha256 hex, collision-free for any user-controlled strings."""
    text = canonical_json(["ratelimit", user_id, project_id])
    return hashlib.sha256(text).hexdigest()
