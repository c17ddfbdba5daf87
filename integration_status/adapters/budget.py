"""Per-token rate budgets: what the providers' rate-limit headers say, and how long polling waits because of it.

Every answer's rate-limit headers are read (:func:`read_rate_headers`) and kept per provider and token, in process
memory (:class:`RateBudgets`, owned by the :class:`~integration_status.adapters.http.HttpClient`). Tokens are
kept only as keyed hashes (an HMAC with a key drawn per process), never as values.

Signed webhooks slow polling down too: every authentic delivery invalidates the project's cached status (so
changes show at the next read), which makes polling a safety net. While a provider's webhooks keep arriving for
a project (the last one within :data:`WEBHOOK_WINDOW`, an hour), its refresh interval is at least
:data:`WEBHOOK_STRETCH` (8) times the TTL: 2 minutes instead of 15 s. The webhook endpoint notes each delivery
in :data:`WEBHOOKS`, in the memory of the worker that received it (other workers keep polling at the TTL).

Two things follow from a budget:

- **pacing**: :func:`refresh_interval` stretches the refresh interval of every connection using a token as its
  remaining budget falls. The curve, with ``f = remaining / limit``:

  ========================  ==============================================================
  ``f >= 0.5``              the cache's TTL (``base``)
  ``0.1 < f < 0.5``         ``base * (0.5 - 0.1) / (f - 0.1)``: x2 at 30 %, x4 at 20 %, x8 at 15 %
  ``f <= 0.1``              until the window resets: polling alone never spends the last 10 %
  ========================  ==============================================================

  and never longer than until the window resets (a new window is a full budget again). The last 10 % stay for
  what users do (actions, a reconnect) and for other clients of the same token.
- **refusals**: when the provider actually refused (429, or 403 with a rate-limit signal), calls with that token
  are refused here until the provider's reset time, without being sent, as ``rate_limited`` with that time.
  Only a refusal by the provider produces ``rate_limited``; pacing never does (it serves the cached value longer).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import weakref
from collections.abc import Mapping
from typing import Final

import attrs
from cachetools import LRUCache

from integration_status.protocols import Credential, RefreshableToken

__all__ = [
    "CALM",
    "RESERVE",
    "WEBHOOK_STRETCH",
    "RateBudgets",
    "RateWindow",
    "read_rate_headers",
    "refresh_interval",
]

#: Above this fraction of the budget left, polling runs at the cache's TTL.
CALM: Final = 0.5
#: At or below this fraction left, polling waits for the window to reset.
RESERVE: Final = 0.1

#: A provider's signed webhooks count as arriving for a project while the last one is at most this old (seconds).
#: While they arrive, polling that project's provider runs at least this many times the TTL apart.
WEBHOOK_STRETCH: Final = 8.0

#: Providers whose ``x-ratelimit-reset`` is a UTC epoch (seconds); Supabase sends seconds remaining.
_EPOCH_RESET: Final = frozenset({"github", "vercel"})


@attrs.frozen(kw_only=True)
class RateWindow:
    """One rate-limit window as the provider last described it: ``remaining`` of ``limit`` requests until
    ``reset_at`` (wall-clock epoch seconds)."""

    limit: int
    remaining: int
    reset_at: float


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(float(value.strip()))
    except ValueError:
        return None
    return number if number >= 0 else None


def read_rate_headers(provider: str, headers: Mapping[str, str], now: float) -> RateWindow | None:
    """The window an answer's headers describe (lower-case names), or None when they describe none.

    GitHub and Vercel send ``x-ratelimit-limit`` / ``-remaining`` / ``-reset`` (a UTC epoch), Supabase the same
    names with ``-reset`` in seconds, Sanity ``ratelimit-limit`` / ``-remaining`` / ``-reset`` (seconds).

    >>> read_rate_headers("github", {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999",
    ...                              "x-ratelimit-reset": "1000"}, now=400)
    RateWindow(limit=5000, remaining=4999, reset_at=1000.0)
    """
    prefix = "ratelimit-" if provider == "sanity" else "x-ratelimit-"
    limit = _int(headers.get(f"{prefix}limit"))
    remaining = _int(headers.get(f"{prefix}remaining"))
    reset = _int(headers.get(f"{prefix}reset"))
    if limit is None or remaining is None or reset is None or limit == 0:
        return None
    epoch = provider in _EPOCH_RESET or reset > 1_000_000_000
    return RateWindow(
        limit=limit, remaining=min(remaining, limit), reset_at=float(reset if epoch else now + reset)
    )


def refresh_interval(
    base: float, window: RateWindow | None, now: float, *, calm: float = CALM, reserve: float = RESERVE
) -> float:
    """Seconds until the next refresh of a connection whose token has ``window`` left (the curve of the module
    docstring). Never shorter than ``base``; never longer than until the window resets (when that is later
    than ``base``); ``base`` when nothing is known or the window has already reset.

    >>> w = lambda remaining: RateWindow(limit=5000, remaining=remaining, reset_at=3600)
    >>> [round(refresh_interval(15, w(r), now=0)) for r in (5000, 2500, 1500, 1000, 750, 500, 0)]
    [15, 15, 30, 60, 120, 3600, 3600]
    """
    if window is None or window.reset_at <= now:
        return base
    until_reset = max(base, window.reset_at - now)
    left = window.remaining / window.limit
    if left >= calm:
        return base
    if left <= reserve:
        return until_reset
    return min(until_reset, base * (calm - reserve) / (left - reserve))


#: Drawn once per process: token hashes mean nothing outside it.
_KEY: Final = secrets.token_bytes(32)
_REFRESHABLE: weakref.WeakKeyDictionary[RefreshableToken, str] = weakref.WeakKeyDictionary()


def _token_key(provider: str, token: Credential | None) -> str:
    """Which budget a call spends: one per provider and token. A RefreshableToken is one budget whatever token
    it minted last (a GitHub App installation's limit belongs to the installation)."""
    if isinstance(token, RefreshableToken):
        name = _REFRESHABLE.get(token)
        if name is None:
            name = _REFRESHABLE[token] = "r:" + secrets.token_hex(8)
        return f"{provider}:{name}"
    if token is None:
        return f"{provider}:anonymous"
    digest = hmac.new(_KEY, token.reveal().encode(), hashlib.sha256).hexdigest()[:32]
    return f"{provider}:{digest}"


@attrs.frozen(kw_only=True)
class _Budget:
    window: RateWindow | None = None
    refused_until: float = 0.0


class RateBudgets:
    """The last known rate-limit window and refusal of each (provider, token), in process memory.

    >>> from integration_status.protocols import Secret
    >>> budgets = RateBudgets()
    >>> budgets.observe("github", Secret("t"), {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "1000",
    ...                                         "x-ratelimit-reset": "3600"}, now=0)
    >>> round(budgets.interval("github", Secret("t"), base=15, now=0))
    60
    """

    def __init__(self, *, size: int = 10_000) -> None:
        self._budgets: LRUCache[str, _Budget] = LRUCache(maxsize=max(1, size))

    def _get(self, provider: str, token: Credential | None) -> tuple[str, _Budget]:
        key = _token_key(provider, token)
        return key, self._budgets.get(key) or _Budget()

    def observe(
        self, provider: str, token: Credential | None, headers: Mapping[str, str], now: float
    ) -> None:
        """Note the window an answer describes. Answers to concurrent calls arrive in any order: within one
        window the lowest ``remaining`` wins; a later reset starts a new window."""
        seen = read_rate_headers(provider, headers, now)
        if seen is None:
            return
        key, budget = self._get(provider, token)
        known = budget.window
        if known is not None and known.reset_at + 1 >= seen.reset_at and known.reset_at > now:
            seen = attrs.evolve(seen, remaining=min(seen.remaining, known.remaining), reset_at=known.reset_at)
        self._budgets[key] = attrs.evolve(budget, window=seen)

    def refuse(self, provider: str, token: Credential | None, until: float) -> None:
        """The provider refused a call with this token until ``until`` (epoch seconds)."""
        key, budget = self._get(provider, token)
        self._budgets[key] = attrs.evolve(budget, refused_until=max(budget.refused_until, until))

    def refused_for(self, provider: str, token: Credential | None, now: float) -> float | None:
        """Seconds until the provider's refusal of this token ends, or None when it is not refused."""
        _, budget = self._get(provider, token)
        left = budget.refused_until - now
        return left if left > 0 else None

    def window(self, provider: str, token: Credential | None) -> RateWindow | None:
        return self._get(provider, token)[1].window

    def interval(self, provider: str, token: Credential | None, *, base: float, now: float) -> float:
        """The refresh interval for a connection using this token (see :func:`refresh_interval`)."""
        return refresh_interval(base, self.window(provider, token), now)
