"""Raw provider snapshots: what an adapter returns and what the cache holds, before any viewer is known.

A snapshot keeps the parts a viewer may not see (repository, branch, SHA, organisation, deployment URL) as tagged
:class:`Sensitive` pieces of its summary, so the policy can drop them per viewer instead of parsing a finished
string. Relative times are :class:`Ago` pieces, rendered coarsely at read time (see :func:`humanize_ago`) so the
rendered text, and with it the ETag, changes rarely.

>>> from datetime import datetime, UTC
>>> snap = ProviderSnapshot(
...     provider="github",
...     status="connected",
...     summary=(
...         Segment(pieces=("Linked to ", Sensitive(kind="branch", value="main")), redacted="Linked"),
...         Segment(pieces=("Last push ", Ago(at=datetime(2026, 11, 26, 5, 58, tzinfo=UTC)))),
...     ),
... )
>>> now = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
>>> render_summary(snap.summary, Visibility.full(), now)
'Linked to main · Last push 2m ago'
>>> render_summary(snap.summary, Visibility.none(), now)
'Linked · Last push 2m ago'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import attrs

from integration_status._urls import url_reveals
from integration_status.exceptions import InvalidModel
from integration_status.models import (
    PROBLEM_CODES,
    PROVIDERS,
    STATUSES,
    Problem,
    ProviderKey,
    StatusValue,
    format_timestamp,
    parse_timestamp,
)

SensitiveKind: TypeAlias = Literal["repo", "branch", "sha", "org", "url"]
SENSITIVE_KINDS: Final[tuple[SensitiveKind, ...]] = ("repo", "branch", "sha", "org", "url")
SEPARATOR: Final = " · "


@attrs.frozen(kw_only=True)
class Visibility:
    """What one viewer may see of one project's provider data."""

    repo: bool = False  # repository names, branch names, commit SHAs
    org: bool = False  # organisation / team names
    urls: bool = False  # deployment URLs
    #: URLs whose host or path embeds names (see :func:`~integration_status._urls.url_reveals`), also
    #: without ``repo``/``org`` visibility. Off by default: a host policy that wants members to see preview
    #: URLs turns it on.
    named_urls: bool = False

    @classmethod
    def full(cls) -> Visibility:
        return cls(repo=True, org=True, urls=True, named_urls=True)

    @classmethod
    def none(cls) -> Visibility:
        return cls()

    def allows(self, kind: SensitiveKind) -> bool:
        if kind in ("repo", "branch", "sha"):
            return self.repo
        if kind == "org":
            return self.org
        return self.urls

    def allows_url(self, url: str) -> bool:
        """Whether this viewer may see ``url``: URL visibility, and also visibility of every name it embeds
        (a branch or repository needs ``repo``, an organisation, team or Studio name needs ``org``), unless
        ``named_urls`` is set.

        >>> member = Visibility(urls=True)
        >>> member.allows_url("https://shop.vercel.app"), member.allows_url("https://shop-git-fix-acme.vercel.app")
        (True, False)
        """
        if not self.urls:
            return False
        if self.named_urls:
            return True
        reveals = url_reveals(url)
        if ("repo" in reveals or "branch" in reveals) and not self.repo:
            return False
        return self.org or "org" not in reveals

    def permits(self, piece: Sensitive) -> bool:
        """Whether this viewer may see one sensitive piece (a URL by what it embeds)."""
        return self.allows_url(piece.value) if piece.kind == "url" else self.allows(piece.kind)


@attrs.frozen(kw_only=True)
class Sensitive:
    """A value only some viewers may see."""

    kind: SensitiveKind = attrs.field(validator=attrs.validators.in_(SENSITIVE_KINDS))
    value: str = attrs.field(validator=attrs.validators.instance_of(str))

    def __repr__(self) -> str:  # a snapshot repr in a log must not carry the value
        return f"Sensitive(kind={self.kind!r}, value=<{len(self.value)} chars>)"


@attrs.frozen(kw_only=True)
class Ago:
    """A moment, rendered at read time as a coarse relative time ("2m ago")."""

    at: datetime


Piece: TypeAlias = str | Sensitive | Ago


def _pieces(value: Iterable[Piece]) -> tuple[Piece, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class Segment:
    """One ``·``-separated part of a summary. If any Sensitive piece is hidden, the whole segment becomes
    ``redacted`` (or is dropped when ``redacted`` is None)."""

    pieces: tuple[Piece, ...] = attrs.field(converter=_pieces)
    redacted: str | None = None


@attrs.frozen(kw_only=True)
class ActionState:
    """An action the provider offers, and whether it can run in the provider's current state."""

    id: str
    label: str
    available: bool = True
    reason: str | None = None


#: Every provider's quick actions, in display order, with their labels.
PROVIDER_ACTIONS: Final[Mapping[ProviderKey, tuple[tuple[str, str], ...]]] = {
    "github": (("push", "Push"), ("pull", "Pull"), ("sync", "Sync"), ("connect", "Connect")),
    "vercel": (("deploy", "Deploy"), ("link", "Link"), ("connect", "Connect")),
    "sanity": (("sync", "Sync"), ("open-studio", "Open Studio"), ("connect", "Connect")),
    "supabase": (("test-connection", "Test connection"), ("reconnect", "Reconnect"), ("connect", "Connect")),
}
#: Actions that start or repair the connection itself: they stay available when the provider is broken.
CONNECT_ACTIONS: Final = frozenset({"connect", "reconnect", "link", "test-connection"})


def default_actions(
    provider: ProviderKey, status: StatusValue, problem: Problem | None = None
) -> tuple[ActionState, ...]:
    """The usual availability of a provider's actions in a given state (adapters may refine it).

    >>> [(a.id, a.available) for a in default_actions("vercel", "disconnected")]
    [('deploy', False), ('link', False), ('connect', True)]
    """
    out: list[ActionState] = []
    for action_id, label in PROVIDER_ACTIONS[provider]:
        if status == "disconnected":
            ok, reason = action_id == "connect", "Not connected"
        elif problem is not None and problem.code == "oauth_revoked":
            ok, reason = action_id in CONNECT_ACTIONS, "OAuth expired"
        elif problem is not None and problem.code == "rate_limited":
            ok, reason = action_id in CONNECT_ACTIONS, "Rate limited"
        elif action_id == "connect":
            ok, reason = False, "Already connected"
        else:
            ok, reason = True, None
        out.append(ActionState(id=action_id, label=label, available=ok, reason=None if ok else reason))
    return tuple(out)


@attrs.frozen(kw_only=True, repr=False)
class Validators:
    """How to ask a provider whether one of its answers changed, and what the adapter took from that answer.

    ``etag`` / ``last_modified`` are the provider's ``ETag`` and ``Last-Modified`` headers, sent back as
    ``If-None-Match`` / ``If-Modified-Since``; ``facts`` is the small JSON value the adapter read from the body,
    so that an answer "not modified" (304) is worked with without a body. Kept on the raw snapshot, they travel
    with the cache entry (to every worker, on Redis) and never reach a viewer.
    """

    etag: str | None = None
    last_modified: str | None = None
    facts: Any = None

    def __repr__(self) -> str:  # facts may name a repository: a repr in a log must not carry them
        return f"Validators(etag={self.etag is not None}, last_modified={self.last_modified is not None})"


def _validators(
    value: Mapping[str, Validators] | tuple[tuple[str, Validators], ...] | None,
) -> tuple[tuple[str, Validators], ...]:
    if isinstance(value, tuple):
        return value
    return tuple(sorted((value or {}).items()))


def _segments(value: Iterable[Segment]) -> tuple[Segment, ...]:
    return tuple(value)


def _action_states(value: Iterable[ActionState]) -> tuple[ActionState, ...]:
    return tuple(value)


def _freeze_details(
    value: Mapping[str, Any] | tuple[tuple[str, Any], ...] | None,
) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, tuple):
        return value
    return tuple(sorted((value or {}).items()))


@attrs.frozen(kw_only=True)
class ProviderSnapshot:
    """What an adapter saw of one provider for one project. Equality is content equality: two snapshots that
    compare equal render identically for every viewer at the same moment."""

    provider: ProviderKey = attrs.field(validator=attrs.validators.in_(PROVIDERS))
    status: StatusValue = attrs.field(validator=attrs.validators.in_(STATUSES))
    summary: tuple[Segment, ...] = attrs.field(default=(), converter=_segments)
    problem: Problem | None = None
    actions: tuple[ActionState, ...] = attrs.field(converter=_action_states)
    #: Extra facts for events and action handlers, e.g. ``("productionUrl", Sensitive(kind="url", ...))``.
    details: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_freeze_details)
    #: Per provider call, the validators of its last answer (see :class:`Validators`). Not content: two
    #: snapshots that differ only here are equal, so a new ETag alone is not a change.
    validators: tuple[tuple[str, Validators], ...] = attrs.field(
        default=(), converter=_validators, eq=False, repr=False
    )
    #: Seconds this snapshot should stay fresh at least, when the adapter stretches the refresh interval (a
    #: provider's rate budget running low); None keeps the cache's TTL. Not content either.
    fresh_for: float | None = attrs.field(default=None, eq=False)

    @actions.default
    def _default_actions(self) -> tuple[ActionState, ...]:
        return default_actions(self.provider, self.status, self.problem)

    def detail(self, name: str, default: Any = None) -> Any:
        return dict(self.details).get(name, default)

    def validators_for(self, name: str) -> Validators | None:
        """The validators kept for the call named ``name``, if its last answer had any."""
        return dict(self.validators).get(name)

    def to_json(self) -> dict[str, Any]:
        """A lossless JSON form (for shared caches); it contains sensitive values and never leaves the server."""
        return {
            "provider": self.provider,
            "status": self.status,
            "summary": [
                {"pieces": [_piece_to_json(p) for p in seg.pieces], "redacted": seg.redacted}
                for seg in self.summary
            ],
            "problem": None if self.problem is None else self.problem.to_json(),
            "actions": [[a.id, a.label, a.available, a.reason] for a in self.actions],
            "details": [
                [k, _piece_to_json(v) if isinstance(v, Sensitive | Ago) else v] for k, v in self.details
            ],
            "validators": [[k, v.etag, v.last_modified, v.facts] for k, v in self.validators],
            "freshFor": self.fresh_for,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProviderSnapshot:
        try:
            return cls(
                provider=data["provider"],
                status=data["status"],
                summary=tuple(
                    Segment(
                        pieces=tuple(_piece_from_json(p) for p in seg["pieces"]), redacted=seg["redacted"]
                    )
                    for seg in data["summary"]
                ),
                problem=None if data["problem"] is None else Problem.from_json(data["problem"]),
                actions=tuple(
                    ActionState(id=a[0], label=a[1], available=a[2], reason=a[3]) for a in data["actions"]
                ),
                details=tuple(
                    (k, _piece_from_json(v) if isinstance(v, dict) else v) for k, v in data["details"]
                ),
                # Absent in entries written before validators existed.
                validators=tuple(
                    (v[0], Validators(etag=v[1], last_modified=v[2], facts=v[3]))
                    for v in data.get("validators") or ()
                ),
                fresh_for=data.get("freshFor"),
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise InvalidModel(f"not a provider snapshot: {type(exc).__name__}") from None


def _piece_to_json(piece: Piece) -> Any:
    if isinstance(piece, Sensitive):
        return {"sensitive": piece.kind, "value": piece.value}
    if isinstance(piece, Ago):
        return {"ago": format_timestamp(piece.at)}
    return piece


def _piece_from_json(data: Any) -> Piece:
    if isinstance(data, str):
        return data
    if "sensitive" in data:
        return Sensitive(kind=data["sensitive"], value=data["value"])
    if "ago" in data:
        return Ago(at=parse_timestamp(data["ago"], field="ago"))
    raise InvalidModel("unknown summary piece")


_MINUTE_STEPS: Final = (2, 5, 15, 30, 45)


def humanize_ago(seconds: float) -> str:
    """A coarse relative time that changes rarely: "just now", then 2/5/15/30/45 minutes, then hours, then days.
    Each value is the largest step not greater than the elapsed time, so it never runs ahead. Five changes in
    the first hour, then one an hour: a 10 s poll keeps getting 304 between them.

    >>> [humanize_ago(s) for s in (5, 61, 150, 299, 300, 1000, 3599, 3600, 86400 * 3)]
    ['just now', 'just now', '2m ago', '2m ago', '5m ago', '15m ago', '45m ago', '1h ago', '3d ago']
    """
    if seconds < 120:
        return "just now"
    minutes = int(seconds // 60)
    if minutes < 60:
        step = max(s for s in _MINUTE_STEPS if s <= minutes)
        return f"{step}m ago"
    hours = minutes // 60
    if hours < 24:
        return f"{hours}h ago"
    return f"{hours // 24}d ago"


def steady_ms(measured: float, shown: float | None, *, tolerance: float = 0.5, floor: float = 5.0) -> int:
    """A latency readout that does not flicker: keep the value shown before while the new measurement is within
    ``tolerance`` (a fraction) or ``floor`` ms of it; otherwise show the new measurement, to the millisecond.
    A few milliseconds of jitter mean nothing to a user; a doubling does.

    >>> steady_ms(12.4, None), steady_ms(16.9, 12), steady_ms(19, 12), steady_ms(140, 100), steady_ms(160, 100)
    (12, 12, 19, 100, 160)
    """
    if shown is not None and abs(measured - shown) <= max(floor, tolerance * shown):
        return int(shown)
    return max(1, round(measured))


def render_summary(summary: tuple[Segment, ...], visibility: Visibility, now: datetime) -> str | None:
    """Render a summary for one viewer; None when nothing is left to say."""
    parts: list[str] = []
    for seg in summary:
        if any(isinstance(p, Sensitive) and not visibility.permits(p) for p in seg.pieces):
            if seg.redacted:
                parts.append(seg.redacted)
            continue
        text: list[str] = []
        for p in seg.pieces:
            if isinstance(p, Sensitive):
                text.append(p.value)
            elif isinstance(p, Ago):
                text.append(humanize_ago(max(0.0, (now - p.at).total_seconds())))
            else:
                text.append(p)
        parts.append("".join(text))
    return SEPARATOR.join(parts) if parts else None


__all__ = [
    "CONNECT_ACTIONS",
    "PROBLEM_CODES",
    "PROVIDER_ACTIONS",
    "SENSITIVE_KINDS",
    "ActionState",
    "Ago",
    "ProviderSnapshot",
    "Segment",
    "Sensitive",
    "SensitiveKind",
    "Validators",
    "Visibility",
    "default_actions",
    "humanize_ago",
    "render_summary",
    "steady_ms",
]
