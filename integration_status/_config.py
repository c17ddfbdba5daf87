"""Loud misconfiguration: checks that turn wiring mistakes into a clear error or one warning.

A misconfigured library otherwise looks like an outage: a base URL without a scheme shows as ``timeout``, a typo
in a connection's settings key or a provider linked without an adapter as ``disconnected``, a pasted ``…`` in a
token as "Provider error". Two kinds of checks live here:

- construction-time values the host wrote in code (base URLs): a :class:`ConfigurationError` at once;
- per-project data the host's resolvers return at run time (connections, tokens, webhook secrets): one warning
  per project, provider and problem (``integration_status.config.*``), naming the project and the provider and
  never a value. The request goes on as before (or, for a webhook secret, is refused), so one bad row cannot
  take the endpoint down.
"""

from __future__ import annotations

import threading
from typing import Any, Final
from urllib.parse import urlsplit

from cachetools import LRUCache

from integration_status._logging import get_logger
from integration_status.exceptions import ConfigurationError, ProviderError
from integration_status.protocols import Credential, ProviderConnection, Secret

__all__ = [
    "CONFIG_HINTS",
    "TOKEN_HINT",
    "URL_HINT",
    "check_base_url",
    "check_connection",
    "report_provider_error",
    "token_problem",
    "warn_once",
    "webhook_secret_problem",
]

_log = get_logger("integration_status.config")

#: The hints of provider errors that come from the configuration, not from the provider.
URL_HINT: Final = "Check the API URL"
TOKEN_HINT: Final = "Check the token"
CONFIG_HINTS: Final = frozenset({URL_HINT, TOKEN_HINT})

#: How many (project, provider, problem) triples are remembered as already warned about.
_WARNED_MAX: Final = 10_000
_warned: LRUCache[tuple[str, ...], bool] = LRUCache(maxsize=_WARNED_MAX)
_warned_lock = threading.Lock()


def check_base_url(url: object, *, provider: str, name: str = "base_url") -> str:
    """``url`` without its trailing slash, or a ConfigurationError saying what is wrong with it.

    A provider API base URL needs an ``http``/``https`` scheme and a host; a ``{projectId}`` placeholder (the
    Sanity query URL) is allowed. The URL is echoed without any ``user:password@`` part.

    >>> check_base_url("https://api.github.com/", provider="github")
    'https://api.github.com'
    >>> check_base_url("api.github.com", provider="github")
    Traceback (most recent call last):
    ...
    integration_status.exceptions.ConfigurationError: github: base_url 'api.github.com' has no scheme; write it as https://api.github.com
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"{provider}: {name} must be a string, not {type(url).__name__}")
    text = url.strip()
    if text != url:
        raise ConfigurationError(f"{provider}: {name} has surrounding whitespace")
    try:
        parts = urlsplit(text.replace("{projectId}", "project"))
        host = parts.hostname
    except ValueError:
        raise ConfigurationError(f"{provider}: {name} is not a valid URL") from None
    shown = _without_userinfo(text)
    if not parts.scheme or (not parts.netloc and "." in parts.path.split("/", 1)[0]):
        raise ConfigurationError(f"{provider}: {name} {shown!r} has no scheme; write it as https://{shown}")
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(f"{provider}: {name} {shown!r} must start with https:// (or http://)")
    if not host:
        raise ConfigurationError(f"{provider}: {name} {shown!r} has no host")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{provider}: {name} {shown!r} must not carry a query or a fragment")
    return text.rstrip("/")


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def token_problem(token: Credential | None) -> str | None:
    """Why a token cannot be sent in an HTTP header (empty, surrounding spaces, not ASCII), or None.

    The answer never contains the token or any part of it.

    >>> token_problem(Secret("ghp_…"))
    'contains a non-ASCII character (a placeholder pasted from an example?)'
    >>> token_problem(Secret("ghp_abc")) is None
    True
    """
    if not isinstance(token, Secret):
        return None  # none, or a RefreshableToken: what it mints is checked by the provider
    value = token.reveal()
    if not value.strip():
        return "is empty"
    if value != value.strip():
        return "has surrounding whitespace"
    if not value.isascii():
        return "contains a non-ASCII character (a placeholder pasted from an example?)"
    if not value.isprintable() or " " in value:
        return "contains a space or a control character"
    return None


def webhook_secret_problem(secret: Secret) -> str | None:
    """Why a webhook signing secret cannot be trusted (empty, or surrounding whitespace), or None.

    An empty key would let anyone compute a valid signature, so such a delivery is refused, never verified.
    """
    value = secret.reveal()
    if not value.strip():
        return "is empty"
    if value != value.strip():
        return "has surrounding whitespace"
    return None


def warn_once(event: str, *, project: str, provider: str, **fields: Any) -> bool:
    """Log ``event`` as a warning the first time this project, provider and problem are seen; True if logged."""
    key = (event, project, provider, *(f"{k}={v}" for k, v in sorted(fields.items())))
    with _warned_lock:
        if key in _warned:
            return False
        _warned[key] = True
    _log.warning(event, project=project, provider=provider, **fields)
    return True


def check_connection(project: str, provider: str, connection: ProviderConnection, adapter: object) -> None:
    """Warn (once each) about one linked provider that cannot work as configured: linked without an adapter,
    settings keys the adapter does not read (a typo there shows as ``disconnected``), a token that cannot be
    sent. Only adapters that declare ``settings_keys`` (the built-in ones do) get their keys checked."""
    if adapter is None:
        warn_once("integration_status.config.no_adapter", project=project, provider=provider)
        return
    known = getattr(adapter, "settings_keys", None)
    if known is not None:
        for key in sorted(set(connection.settings) - set(known)):
            warn_once(
                "integration_status.config.unknown_setting",
                project=project,
                provider=provider,
                key=key[:64],
                known=",".join(sorted(known)),
            )
    problem = token_problem(connection.token)
    if problem is not None:
        warn_once("integration_status.config.bad_token", project=project, provider=provider, reason=problem)


def report_provider_error(project: str, provider: str, error: ProviderError) -> None:
    """Warn once when a provider call failed because of the configuration (a base URL that is not the API, a
    token that cannot be sent); the error's message names the fault and never holds a credential."""
    if error.hint in CONFIG_HINTS:
        warn_once(
            "integration_status.config.provider_answer", project=project, provider=provider, reason=str(error)
        )
