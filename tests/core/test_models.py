"""Wire models and raw snapshots: JSON round-trips, validation errors, and per-viewer redaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status.exceptions import InvalidModel
from integration_status.models import (
    PROBLEM_CODES,
    PROVIDERS,
    STATUSES,
    Action,
    DeployFinished,
    DeployStarted,
    GithubPush,
    Problem,
    SanityWebhook,
    StatusEnvelope,
    StatusItem,
    StatusUpdate,
    event_from_json,
    format_timestamp,
    parse_timestamp,
)
from integration_status.snapshot import (
    SENSITIVE_KINDS,
    Ago,
    ProviderSnapshot,
    Segment,
    Sensitive,
    Visibility,
    render_summary,
)

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)

moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))  # the wire keeps milliseconds
texts = st.text(min_size=1, max_size=30)
problems = st.builds(Problem, code=st.sampled_from(PROBLEM_CODES), hint=st.none() | texts)
actions = st.builds(Action, id=texts, label=texts, can=st.booleans(), reason=st.none() | texts)
items = st.builds(
    StatusItem,
    key=st.sampled_from(PROVIDERS),
    status=st.sampled_from(STATUSES),
    updated_at=moments,
    summary=st.none() | texts,
    stale=st.booleans(),
    problem=st.none() | problems,
    actions=st.lists(actions, max_size=4).map(tuple),
)
ts = st.integers(0, 2**45)
events = st.one_of(
    st.builds(DeployStarted, project_id=texts, operation_id=texts, ts=ts),
    st.builds(
        DeployFinished,
        project_id=texts,
        success=st.booleans(),
        ts=ts,
        url=st.none() | texts,
        operation_id=st.none() | texts,
    ),
    st.builds(GithubPush, project_id=texts, branch=st.text(max_size=20), sha=st.text(max_size=40), ts=ts),
    st.builds(SanityWebhook, project_id=texts, count=st.integers(0, 10_000), ts=ts),
    st.builds(StatusUpdate, project_id=texts, items=st.lists(items, max_size=4).map(tuple), ts=ts),
)


def _no_nulls(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, dict):
        return all(_no_nulls(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_nulls(v) for v in value)
    return True


@given(items)
def test_item_round_trips_through_json_text(item: StatusItem) -> None:
    """An item survives to_json -> JSON text -> from_json unchanged, and its JSON never carries null."""
    data = json.loads(json.dumps(item.to_json()))
    assert _no_nulls(data)
    assert StatusItem.from_json(data) == item


@given(texts, st.lists(items, max_size=4), st.text(max_size=32))
def test_envelope_round_trips(project_id: str, its: list[StatusItem], hash_value: str) -> None:
    """An envelope round-trips with and without its hash; without it the key is absent."""
    env = StatusEnvelope(project_id=project_id, items=its, hash=hash_value)
    assert StatusEnvelope.from_json(json.loads(json.dumps(env.to_json()))) == env
    assert "hash" not in env.to_json(with_hash=False)


@given(events)
def test_events_round_trip_by_type(event: Any) -> None:
    """Every event type parses back from its JSON to an equal value."""
    data = json.loads(json.dumps(event.to_json()))
    assert _no_nulls(data)
    assert event_from_json(data) == event


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"key": "gitlab", "status": "connected", "updatedAt": "2026-11-26T06:00:00Z"}, "key"),
        ({"key": "github", "status": "fine", "updatedAt": "2026-11-26T06:00:00Z"}, "status"),
        ({"key": "github", "status": "connected", "updatedAt": "2026-11-26T06:00:00"}, "updatedAt"),
        ({"key": "github", "status": "connected", "updatedAt": "yesterday"}, "updatedAt"),
        ({"key": "github", "status": "connected"}, "updatedAt"),
        (
            {"key": "github", "status": "connected", "updatedAt": "2026-11-26T06:00:00Z", "summary": 3},
            "summary",
        ),
        (
            {
                "key": "github",
                "status": "error",
                "updatedAt": "2026-11-26T06:00:00Z",
                "problem": {"code": "boom"},
            },
            "code",
        ),
        ({"key": "github", "status": "error", "updatedAt": "2026-11-26T06:00:00Z", "actions": {}}, "actions"),
        (
            {
                "key": "github",
                "status": "error",
                "updatedAt": "2026-11-26T06:00:00Z",
                "actions": [{"id": "x"}],
            },
            "label",
        ),
        ([], "item"),
    ],
)
def test_invalid_items_name_the_field(data: Any, field: str) -> None:
    """Invalid item JSON raises InvalidModel (a ValueError) naming the offending field."""
    with pytest.raises(InvalidModel) as caught:
        StatusItem.from_json(data)
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param(
            {"key": "github", "status": "connected", "updatedAt": "2026-11-26T06:00:00Z", "stale": "yes"},
            "stale",
        ),
        pytest.param(
            {
                "key": "github",
                "status": "connected",
                "updatedAt": "2026-11-26T06:00:00Z",
                "actions": [{"id": "x", "label": "X", "can": "yes"}],
            },
            "can",
        ),
    ],
)
def test_wrongly_typed_booleans_raise_invalid_model(data: Any, field: str) -> None:
    """A non-boolean where a boolean belongs is an InvalidModel naming the field (a 400, not a 500)."""
    with pytest.raises(InvalidModel) as caught:
        StatusItem.from_json(data)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "data",
    [
        {"type": "deploy:exploded", "projectId": "p", "ts": 1},
        {"type": "deploy:started", "projectId": "p", "operationId": "o", "ts": -1},
        {"type": "deploy:started", "projectId": "p", "operationId": "o", "ts": True},
        {"type": "deploy:started", "provider": "github", "projectId": "p", "operationId": "o", "ts": 1},
        {"type": "github:push", "projectId": "", "branch": "b", "sha": "s", "ts": 1},
        {"type": "status:update", "projectId": "p", "items": "none", "ts": 1},
        "not an object",
    ],
)
def test_invalid_events_are_refused(data: Any) -> None:
    """Unknown types, bad timestamps, empty ids and wrong shapes raise InvalidModel."""
    with pytest.raises(InvalidModel):
        event_from_json(data)


def test_timestamps_are_utc_with_z() -> None:
    """Timestamps render in UTC with a Z zone and parse back from any explicit offset."""
    plus_two = datetime(2026, 11, 26, 8, 0, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(plus_two) == "2026-11-26T06:00:00Z"
    assert format_timestamp(NOW.replace(microsecond=250_000)) == "2026-11-26T06:00:00.250Z"
    assert parse_timestamp("2026-11-26T08:00:00+02:00") == NOW


# --- raw snapshots and redaction -------------------------------------------------------------------------

secret_values = st.text(alphabet="abcxyz", max_size=6).map(lambda t: "SECRET-" + t + "|")
plain_texts = st.text(max_size=12).filter(lambda t: "|" not in t)
pieces = st.one_of(
    plain_texts,
    st.builds(Sensitive, kind=st.sampled_from(SENSITIVE_KINDS), value=secret_values),
    st.builds(Ago, at=moments),
)
segments = st.builds(
    Segment, pieces=st.lists(pieces, min_size=1, max_size=4).map(tuple), redacted=st.none() | plain_texts
)


def _numbered(summary: tuple[Segment, ...]) -> tuple[Segment, ...]:
    """Make every Sensitive value unique and never a substring of another text: "SECRET-<n>-<text>|"."""
    counter = iter(range(10_000))
    return tuple(
        Segment(
            pieces=tuple(
                Sensitive(kind=p.kind, value=p.value.replace("SECRET-", f"SECRET-{next(counter)}-"))
                if isinstance(p, Sensitive)
                else p
                for p in seg.pieces
            ),
            redacted=seg.redacted,
        )
        for seg in summary
    )


summaries = st.lists(segments, max_size=5).map(tuple).map(_numbered)
visibilities = st.builds(Visibility, repo=st.booleans(), org=st.booleans(), urls=st.booleans())


@given(summaries, visibilities, moments)
def test_render_summary_never_leaks_a_hidden_value(
    summary: tuple[Segment, ...], visibility: Visibility, now: datetime
) -> None:
    """No Sensitive value whose kind the viewer may not see ever appears in the rendered summary."""
    text = render_summary(summary, visibility, now) or ""
    for seg in summary:
        for piece in seg.pieces:
            if isinstance(piece, Sensitive) and not visibility.allows(piece.kind):
                assert piece.value not in text
            elif isinstance(piece, Sensitive) and all(
                not isinstance(p, Sensitive) or visibility.allows(p.kind) for p in seg.pieces
            ):
                assert piece.value in text  # a fully visible segment shows its values


@given(summaries, moments)
def test_full_visibility_hides_nothing_and_none_shows_nothing(
    summary: tuple[Segment, ...], now: datetime
) -> None:
    """Full visibility renders every Sensitive value; no visibility renders none of them."""
    full = render_summary(summary, Visibility.full(), now) or ""
    bare = render_summary(summary, Visibility.none(), now) or ""
    for seg in summary:
        for piece in seg.pieces:
            if isinstance(piece, Sensitive):
                assert piece.value in full
                assert piece.value not in bare


def test_hidden_segment_uses_its_redacted_text_or_disappears() -> None:
    """A segment with a hidden piece becomes its redacted text, or is dropped when it has none."""
    summary = (
        Segment(pieces=("Linked to ", Sensitive(kind="repo", value="acme/site")), redacted="Linked"),
        Segment(pieces=("org ", Sensitive(kind="org", value="acme"))),
        Segment(pieces=("Last push ", Ago(at=NOW - timedelta(minutes=3)))),
    )
    assert render_summary(summary, Visibility.none(), NOW) == "Linked · Last push 2m ago"
    assert (
        render_summary(summary, Visibility(repo=True, org=True), NOW)
        == "Linked to acme/site · org acme · Last push 2m ago"
    )
    assert render_summary((summary[1],), Visibility.none(), NOW) is None


def test_sensitive_repr_hides_the_value() -> None:
    """A Sensitive value never shows in reprs (and so in logs of snapshots)."""
    snap = ProviderSnapshot(
        provider="github",
        status="connected",
        summary=(Segment(pieces=(Sensitive(kind="sha", value="SECRET-deadbeef"),)),),
    )
    assert "SECRET-deadbeef" not in repr(snap)


@given(
    st.sampled_from(PROVIDERS),
    st.sampled_from(STATUSES),
    st.lists(segments, max_size=4).map(tuple),
    st.none() | problems,
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.text(max_size=8)
        | st.integers()
        | st.builds(Sensitive, kind=st.sampled_from(SENSITIVE_KINDS), value=secret_values),
        max_size=3,
    ),
)
def test_snapshot_round_trips_through_json_text(
    provider: Any, status: Any, summary: tuple[Segment, ...], problem: Problem | None, details: dict[str, Any]
) -> None:
    """A raw snapshot survives to_json -> JSON text -> from_json (the shared-cache form) unchanged."""
    snap = ProviderSnapshot(
        provider=provider, status=status, summary=summary, problem=problem, details=details
    )
    assert ProviderSnapshot.from_json(json.loads(json.dumps(snap.to_json()))) == snap


@pytest.mark.parametrize(
    "data", [{}, {"provider": "github"}, {"provider": "github", "status": "x", "summary": 1}]
)
def test_snapshot_from_bad_json_raises_invalid_model(data: dict[str, Any]) -> None:
    """A document that is not a snapshot raises InvalidModel, not KeyError or TypeError."""
    with pytest.raises(InvalidModel):
        ProviderSnapshot.from_json(data)
