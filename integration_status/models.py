"""Frozen value types of the wire contract and their exact JSON form.

Every type here has ``to_json()`` (a plain ``dict`` with camelCase keys, optional fields omitted when they have no
value, never ``null``) and ``from_json()`` (validating, raising :class:`~integration_status.exceptions.InvalidModel`
with the offending field named).

>>> Problem(code="timeout", hint="Try again").to_json()
{'code': 'timeout', 'hint': 'Try again'}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeAlias, cast, get_args

import attrs

from integration_status.exceptions import InvalidModel

ProviderKey: TypeAlias = Literal["sanity", "github", "vercel", "supabase"]
StatusValue: TypeAlias = Literal["connected", "warning", "error", "disconnected"]
ProblemCode: TypeAlias = Literal["oauth_revoked", "rate_limited", "timeout", "unknown"]

#: The four providers, in the order the status envelope lists them.
PROVIDERS: Final[tuple[ProviderKey, ...]] = ("sanity", "github", "vercel", "supabase")
STATUSES: Final[tuple[StatusValue, ...]] = cast(tuple[StatusValue, ...], get_args(StatusValue))
PROBLEM_CODES: Final[tuple[ProblemCode, ...]] = cast(tuple[ProblemCode, ...], get_args(ProblemCode))


def _one_of(choices: Sequence[str]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            raise InvalidModel(
                f"{attribute.name} must be one of {', '.join(choices)}, not {value!r}", field=attribute.name
            )

    return check


def _nonempty_str(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidModel(f"{attribute.name} must be a non-empty string", field=attribute.name)


def _of_type(kind: type, what: str) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        # bool is an int subclass: a count of True is not a count.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidModel(f"{attribute.name} must be {what}", field=attribute.name)

    return check


_bool = _of_type(bool, "a boolean")
_str = _of_type(str, "a string")
_int = _of_type(int, "an integer")


def _opt_str(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidModel(f"{attribute.name} must be a string", field=attribute.name)


def _aware(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidModel(f"{attribute.name} must be a timezone-aware datetime", field=attribute.name)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` zone, to the second when there is no fraction.

    >>> format_timestamp(datetime(2026, 11, 26, 6, 0, tzinfo=UTC))
    '2026-11-26T06:00:00Z'
    """
    moment = moment.astimezone(UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def parse_timestamp(value: object, field: str = "updatedAt") -> datetime:
    """Parse an ISO 8601 timestamp that carries a zone; naive or malformed input raises InvalidModel."""
    if not isinstance(value, str):
        raise InvalidModel(f"{field} must be an ISO 8601 string", field=field)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidModel(f"{field} is not an ISO 8601 timestamp: {value[:40]!r}", field=field) from None
    if moment.tzinfo is None:
        raise InvalidModel(f"{field} must carry a time zone", field=field)
    return moment.astimezone(UTC)


def _get(data: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """``data.get(name)``, typed as Any: the validators check what it is."""
    return data.get(name, default)


def _obj(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidModel(f"{what} must be a JSON object", field=what)
    return data


@attrs.frozen(kw_only=True)
class Problem:
    """Why an item is not fine: one of the four normalized codes and a short actionable hint."""

    code: ProblemCode = attrs.field(validator=_one_of(PROBLEM_CODES))
    hint: str | None = attrs.field(default=None, validator=_opt_str)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code}
        if self.hint is not None:
            out["hint"] = self.hint
        return out

    @classmethod
    def from_json(cls, data: object) -> Problem:
        d = _obj(data, "problem")
        return cls(code=_get(d, "code"), hint=_get(d, "hint"))


@attrs.frozen(kw_only=True)
class Action:
    """A quick action as the viewer sees it: ``can`` is decided server-side, ``reason`` says why not."""

    id: str = attrs.field(validator=_nonempty_str)
    label: str = attrs.field(validator=_nonempty_str)
    can: bool = attrs.field(validator=_bool)
    reason: str | None = attrs.field(default=None, validator=_opt_str)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "label": self.label, "can": self.can}
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_json(cls, data: object) -> Action:
        d = _obj(data, "action")
        return cls(id=_get(d, "id"), label=_get(d, "label"), can=_get(d, "can"), reason=_get(d, "reason"))


def _actions(value: Iterable[Action]) -> tuple[Action, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class StatusItem:
    """One provider's status as one viewer sees it (already redacted): the wire type ``IntegrationStatus``
    of the status envelope and of ``status:update``."""

    key: ProviderKey = attrs.field(validator=_one_of(PROVIDERS))
    status: StatusValue = attrs.field(validator=_one_of(STATUSES))
    updated_at: datetime = attrs.field(validator=_aware)
    summary: str | None = attrs.field(default=None, validator=_opt_str)
    stale: bool = attrs.field(default=False, validator=_bool)
    problem: Problem | None = None
    actions: tuple[Action, ...] = attrs.field(default=(), converter=_actions)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "status": self.status}
        if self.summary is not None:
            out["summary"] = self.summary
        out["updatedAt"] = format_timestamp(self.updated_at)
        if self.stale:
            out["stale"] = True
        if self.problem is not None:
            out["problem"] = self.problem.to_json()
        if self.actions:
            out["actions"] = [a.to_json() for a in self.actions]
        return out

    @classmethod
    def from_json(cls, data: object) -> StatusItem:
        d = _obj(data, "item")
        actions = _get(d, "actions", [])
        if not isinstance(actions, list):
            raise InvalidModel("actions must be a list", field="actions")
        problem = _get(d, "problem")
        return cls(
            key=_get(d, "key"),
            status=_get(d, "status"),
            summary=_get(d, "summary"),
            updated_at=parse_timestamp(_get(d, "updatedAt")),
            stale=_get(d, "stale", False),
            problem=None if problem is None else Problem.from_json(problem),
            actions=tuple(Action.from_json(a) for a in actions),
        )


def _items(value: Iterable[StatusItem]) -> tuple[StatusItem, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class StatusEnvelope:
    """The body of ``GET /status``: four items in the order of :data:`PROVIDERS` and their hash."""

    project_id: str = attrs.field(validator=_nonempty_str)
    items: tuple[StatusItem, ...] = attrs.field(converter=_items)
    hash: str = ""

    def to_json(self, *, with_hash: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"projectId": self.project_id, "items": [i.to_json() for i in self.items]}
        if with_hash:
            out["hash"] = self.hash
        return out

    @classmethod
    def from_json(cls, data: object) -> StatusEnvelope:
        d = _obj(data, "envelope")
        items = _get(d, "items")
        if not isinstance(items, list):
            raise InvalidModel("items must be a list", field="items")
        return cls(
            project_id=_get(d, "projectId"),
            items=tuple(StatusItem.from_json(i) for i in items),
            hash=_get(d, "hash", ""),
        )


# --- events ---------------------------------------------------------------------------------------------------


def _ts(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidModel("ts must be epoch milliseconds (a non-negative integer)", field="ts")


@attrs.frozen(kw_only=True)
class DeployStarted:
    """``deploy:started``: a Vercel deployment began (``operationId`` ties it to the action)."""

    project_id: str = attrs.field(validator=_nonempty_str)
    operation_id: str = attrs.field(validator=_nonempty_str)
    ts: int = attrs.field(validator=_ts)
    provider: Literal["vercel"] = "vercel"
    type: Literal["deploy:started"] = "deploy:started"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "provider": self.provider,
            "projectId": self.project_id,
            "operationId": self.operation_id,
            "ts": self.ts,
        }


@attrs.frozen(kw_only=True)
class DeployFinished:
    """``deploy:finished``: a Vercel deployment ended; ``url`` only for viewers allowed to open it."""

    project_id: str = attrs.field(validator=_nonempty_str)
    success: bool = attrs.field(validator=_bool)
    ts: int = attrs.field(validator=_ts)
    url: str | None = attrs.field(default=None, validator=_opt_str)
    #: Not on the wire by REQUIREMENTS.md, but sent when known so a client can match started/finished.
    operation_id: str | None = attrs.field(default=None, validator=_opt_str)
    provider: Literal["vercel"] = "vercel"
    type: Literal["deploy:finished"] = "deploy:finished"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "provider": self.provider,
            "projectId": self.project_id,
            "success": self.success,
        }
        if self.operation_id is not None:
            out["operationId"] = self.operation_id
        if self.url is not None:
            out["url"] = self.url
        out["ts"] = self.ts
        return out


@attrs.frozen(kw_only=True)
class GithubPush:
    """``github:push``: a push to the linked repository (branch and sha blank for viewers without access)."""

    project_id: str = attrs.field(validator=_nonempty_str)
    branch: str = attrs.field(validator=_str)
    sha: str = attrs.field(validator=_str)
    ts: int = attrs.field(validator=_ts)
    type: Literal["github:push"] = "github:push"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "projectId": self.project_id,
            "branch": self.branch,
            "sha": self.sha,
            "ts": self.ts,
        }


@attrs.frozen(kw_only=True)
class SanityWebhook:
    """``sanity:webhook``: Sanity reported ``count`` changed documents."""

    project_id: str = attrs.field(validator=_nonempty_str)
    count: int = attrs.field(validator=_int)
    ts: int = attrs.field(validator=_ts)
    type: Literal["sanity:webhook"] = "sanity:webhook"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "projectId": self.project_id, "count": self.count, "ts": self.ts}


@attrs.frozen(kw_only=True)
class StatusUpdate:
    """``status:update``: the project's items as this viewer sees them now."""

    project_id: str = attrs.field(validator=_nonempty_str)
    items: tuple[StatusItem, ...] = attrs.field(converter=_items)
    ts: int = attrs.field(validator=_ts)
    type: Literal["status:update"] = "status:update"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "projectId": self.project_id,
            "items": [i.to_json() for i in self.items],
            "ts": self.ts,
        }


IntegrationEvent: TypeAlias = DeployStarted | DeployFinished | GithubPush | SanityWebhook | StatusUpdate
EVENT_TYPES: Final[tuple[str, ...]] = (
    "deploy:started",
    "deploy:finished",
    "github:push",
    "sanity:webhook",
    "status:update",
)


def event_from_json(data: object) -> IntegrationEvent:
    """Parse one event by its ``type``; unknown types and missing fields raise InvalidModel."""
    d = _obj(data, "event")
    kind = _get(d, "type")
    if kind == "deploy:started":
        if _get(d, "provider", "vercel") != "vercel":
            raise InvalidModel("deploy events come from vercel", field="provider")
        return DeployStarted(
            project_id=_get(d, "projectId"), operation_id=_get(d, "operationId"), ts=_get(d, "ts")
        )
    if kind == "deploy:finished":
        return DeployFinished(
            project_id=_get(d, "projectId"),
            success=_get(d, "success"),
            url=_get(d, "url"),
            operation_id=_get(d, "operationId"),
            ts=_get(d, "ts"),
        )
    if kind == "github:push":
        return GithubPush(
            project_id=_get(d, "projectId"), branch=_get(d, "branch"), sha=_get(d, "sha"), ts=_get(d, "ts")
        )
    if kind == "sanity:webhook":
        return SanityWebhook(project_id=_get(d, "projectId"), count=_get(d, "count"), ts=_get(d, "ts"))
    if kind == "status:update":
        items = _get(d, "items")
        if not isinstance(items, list):
            raise InvalidModel("items must be a list", field="items")
        return StatusUpdate(
            project_id=_get(d, "projectId"),
            items=tuple(StatusItem.from_json(i) for i in items),
            ts=_get(d, "ts"),
        )
    raise InvalidModel(f"unknown event type {kind!r}", field="type")
