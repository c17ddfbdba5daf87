"""Events: their ids, and their per-viewer redaction.

**Ids.** An event id is ``"<ms>-<seq>"``: the publishing clock's epoch milliseconds and a sequence number
within that millisecond, the shape of a Redis Stream id, so ids from the memory and Redis engines look alike.
Ids of one project increase strictly: when the clock has not moved past the last id's millisecond (or went
back), the next id keeps that millisecond and increments ``seq``. Ids compare numerically by ``(ms, seq)``,
never as strings.

**Redaction.** The bus holds raw events; each subscriber gets :func:`redact_event` for its own
:class:`~integration_status.snapshot.Visibility`. Sensitive values are recognised by their key, at any depth:
see :data:`REPO_KEYS`, :data:`ORG_KEYS` and :func:`is_url_key`. Publishers must keep repository, branch, SHA,
organisation and URL values in such keys and out of free text.

>>> parse_event_id("1764136800000-3")
(1764136800000, 3)
>>> event_id_after("10-0", "9-7")
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from integration_status.snapshot import Visibility

__all__ = [
    "ORG_KEYS",
    "REPO_KEYS",
    "event_id_after",
    "format_event_id",
    "is_url_key",
    "next_event_id",
    "parse_event_id",
    "redact_event",
    "resume_event_id",
]

_ID = re.compile(r"(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")
_MAX_PART: Final = 2**64 - 1  # Redis Stream id parts are unsigned 64-bit


def parse_event_id(value: object) -> tuple[int, int] | None:
    """``(ms, seq)`` of an event id, or None for anything malformed (never raises).

    >>> parse_event_id("12-0"), parse_event_id("12"), parse_event_id("x-1"), parse_event_id("01-1")
    ((12, 0), None, None, None)
    """
    if not isinstance(value, str):
        return None
    match = _ID.fullmatch(value)
    if match is None:
        return None
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms > _MAX_PART or seq > _MAX_PART:
        return None
    return ms, seq


#: Longest ``Last-Event-ID`` a client may resume from: two 20-digit parts and a dash.
MAX_EVENT_ID_LENGTH: Final = 41


def resume_event_id(value: str | None) -> str | None:
    """The ``Last-Event-ID`` a stream resumes from, or None (a fresh snapshot) when it is absent, empty, or
    too long to be an event id: an engine never parses an oversized client value, and it is never an error.

    >>> resume_event_id("12-0"), resume_event_id(""), resume_event_id("9" * 5000)
    ('12-0', None, None)
    """
    if not value or len(value) > MAX_EVENT_ID_LENGTH:
        return None
    return value


def format_event_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


def _parse_strict(value: str) -> tuple[int, int]:
    parts = parse_event_id(value)
    if parts is None:
        raise ValueError(f"not an event id: {value[:40]!r}")
    return parts


def event_id_after(a: str, b: str) -> bool:
    """Whether id ``a`` comes strictly after id ``b``. Raises ValueError for a malformed id."""
    return _parse_strict(a) > _parse_strict(b)


def next_event_id(last: tuple[int, int] | None, now_ms: int) -> tuple[int, int]:
    """The id after ``last`` for an event published at ``now_ms``: strictly greater, even if the clock went
    back.

    >>> next_event_id(None, 5), next_event_id((5, 0), 5), next_event_id((5, 1), 4), next_event_id((5, 1), 6)
    ((5, 0), (5, 1), (5, 2), (6, 0))
    """
    if last is None or now_ms > last[0]:
        return (max(0, now_ms), 0)
    return (last[0], last[1] + 1)


# --- redaction ----------------------------------------------------------------------------------------------


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


#: Keys (compared case-insensitively, ignoring ``_`` and ``-``) whose values need repository visibility.
REPO_KEYS: Final = frozenset(
    {
        "repository",
        "repo",
        "repositoryname",
        "reponame",
        "fullname",
        "branch",
        "branchname",
        "ref",
        "sha",
        "commit",
        "commitsha",
        "headsha",
        "aftersha",
        "beforesha",
    }
)
#: Keys whose values need organisation visibility.
ORG_KEYS: Final = frozenset({"org", "organization", "organisation", "owner", "team", "teamname", "teamslug"})
# The required string fields of the typed events: blanked rather than dropped so the event still parses and
# the UI still learns that something happened (e.g. "a push happened").
_BLANKED: Final[Mapping[str, frozenset[str]]] = {"github:push": frozenset({"branch", "sha"})}


def is_url_key(key: str) -> bool:
    """Keys that hold a URL (``url``, ``deploymentUrl``, ``inspector_url`` ...) need URL visibility."""
    return _norm(key).endswith("url")


def _hidden(key: str, visibility: Visibility) -> bool:
    norm = _norm(key)
    if norm in REPO_KEYS:
        return not visibility.repo
    if norm in ORG_KEYS:
        return not visibility.org
    if norm.endswith("url"):
        return not visibility.urls
    return False


def _hidden_url(key: str, item: Any, visibility: Visibility) -> bool:
    # A URL the viewer may see in general can still embed a name they may not (a preview host's branch).
    return isinstance(item, str) and _norm(key).endswith("url") and not visibility.allows_url(item)


def _redact(value: Any, visibility: Visibility, blank: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and (_hidden(key, visibility) or _hidden_url(key, item, visibility)):
                if key in blank:
                    out[key] = ""
                continue
            out[key] = _redact(item, visibility, frozenset())
        return out
    if isinstance(value, list | tuple):
        return [_redact(item, visibility, frozenset()) for item in value]
    return value


def redact_event(event: Mapping[str, Any], visibility: Visibility) -> Mapping[str, Any] | None:
    """The raw ``event`` as one viewer may see it; None when it is not an event (no string ``type``).

    - ``github:push`` without repository visibility keeps its ``branch`` and ``sha`` keys, as ``""``;
    - any other sensitive key (see the module docstring) the viewer may not see is removed, at any depth - so
      ``deploy:finished`` loses ``url`` unless ``visibility.urls`` and :meth:`Visibility.allows_url` (a preview
      URL embedding a branch or team needs repository or organisation visibility too);
    - ``status:update`` events on the bus are markers (``type``, ``projectId``, ``ts``) that the web layer
      renders per viewer; they have no sensitive keys and come back unchanged.

    The input is never modified; the result is a new dict.

    >>> redact_event({"type": "github:push", "projectId": "p", "branch": "main", "sha": "abc", "ts": 1},
    ...              Visibility.none())
    {'type': 'github:push', 'projectId': 'p', 'branch': '', 'sha': '', 'ts': 1}
    """
    kind = event.get("type") if isinstance(event, Mapping) else None
    if not isinstance(kind, str):
        return None
    redacted: Mapping[str, Any] = _redact(event, visibility, _BLANKED.get(kind, frozenset()))
    return redacted
