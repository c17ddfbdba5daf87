from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status.core.events import (
    ORG_KEYS,
    REPO_KEYS,
    event_id_after,
    format_event_id,
    is_url_key,
    next_event_id,
    parse_event_id,
    redact_event,
)
from integration_status.models import event_from_json
from integration_status.snapshot import Visibility

# --- ids ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [("0-0", (0, 0)), ("1764136800000-12", (1764136800000, 12)), ("18446744073709551615-0", (2**64 - 1, 0))],
)
def test_valid_ids_parse(text: str, parts: tuple[int, int]) -> None:
    """`<ms>-<seq>` parses to its two numbers."""
    assert parse_event_id(text) == parts
    assert format_event_id(parts) == text


@pytest.mark.parametrize(
    "text",
    ["", "12", "12-", "-1", "1-2-3", "a-1", "01-1", "1-01", " 1-1", "1-1\n", "+1-1", "1.5-1", "١-1",
     "18446744073709551616-0", "1" * 30 + "-0", None, 5],
)  # fmt: skip
def test_malformed_ids_parse_to_none(text: Any) -> None:
    """Anything else, including non-strings and out-of-range numbers, is None."""
    assert parse_event_id(text) is None


@given(st.text(max_size=50))
def test_parse_never_raises(text: str) -> None:
    """parse_event_id never raises, and whatever it accepts formats back to the same text."""
    parts = parse_event_id(text)
    if parts is not None:
        assert format_event_id(parts) == text


def test_ids_compare_numerically_not_as_strings() -> None:
    """9-0 comes before 10-0 and 5-9 before 5-10, unlike string order."""
    assert event_id_after("10-0", "9-0")
    assert event_id_after("5-10", "5-9")
    assert not event_id_after("5-9", "5-10")
    assert not event_id_after("5-5", "5-5")


def test_comparing_a_malformed_id_raises() -> None:
    """event_id_after is for valid ids only."""
    with pytest.raises(ValueError, match="not an event id"):
        event_id_after("x", "1-0")


@given(st.lists(st.integers(min_value=0, max_value=10**13), min_size=1, max_size=40))
def test_next_ids_strictly_increase_whatever_the_clock_does(clock_ms: list[int]) -> None:
    """Even when the clock stalls or goes back, every new id is after the previous one."""
    last = None
    for now in clock_ms:
        new = next_event_id(last, now)
        if last is not None:
            assert event_id_after(format_event_id(new), format_event_id(last))
        assert new[0] >= now or (last is not None and new[0] == last[0])
        last = new


# --- redaction ----------------------------------------------------------------------------------------------

PUSH = {"type": "github:push", "projectId": "p1", "branch": "release/secret", "sha": "deadbeef", "ts": 1}
DEPLOY = {
    "type": "deploy:finished",
    "provider": "vercel",
    "projectId": "p1",
    "success": True,
    "url": "https://secret-app.vercel.app",
    "ts": 2,
}


def test_push_without_repo_visibility_keeps_the_event_with_blank_branch_and_sha() -> None:
    """The UI still learns that a push happened, and the result is still a valid event."""
    redacted = redact_event(PUSH, Visibility(urls=True, org=True))
    assert redacted == {**PUSH, "branch": "", "sha": ""}
    assert event_from_json(redacted).type == "github:push"


def test_push_with_repo_visibility_is_unchanged() -> None:
    """A viewer with repo visibility sees branch and sha."""
    assert redact_event(PUSH, Visibility(repo=True)) == PUSH


def test_deploy_url_only_for_viewers_allowed_urls() -> None:
    """deploy:finished drops url for viewers without URL visibility, and still parses."""
    hidden = redact_event(DEPLOY, Visibility(repo=True, org=True))
    assert hidden is not None
    assert "url" not in hidden
    assert event_from_json(hidden).url is None  # type: ignore[union-attr]
    assert redact_event(DEPLOY, Visibility(urls=True)) == DEPLOY


def test_nested_and_variant_keys_are_redacted() -> None:
    """Sensitive keys in any case or spelling, at any depth, are removed for viewers lacking visibility."""
    event = {
        "type": "sanity:webhook",
        "projectId": "p",
        "count": 2,
        "ts": 3,
        "meta": {
            "Repository": "acme/app",
            "head_sha": "abc",
            "items": [{"org": "acme", "deploymentUrl": "u"}],
        },
        "team": "acme-team",
    }
    assert redact_event(event, Visibility.none()) == {
        "type": "sanity:webhook",
        "projectId": "p",
        "count": 2,
        "ts": 3,
        "meta": {"items": [{}]},
    }


def test_status_update_markers_come_back_unchanged() -> None:
    """status:update markers carry nothing sensitive and are left for the web layer to render."""
    marker = {"type": "status:update", "projectId": "p", "ts": 4}
    assert redact_event(marker, Visibility.none()) == marker


def test_redaction_does_not_modify_the_raw_event() -> None:
    """The bus's raw event is shared by all subscribers and must stay intact."""
    raw = json.loads(json.dumps(PUSH))
    redact_event(raw, Visibility.none())
    assert raw == PUSH


@pytest.mark.parametrize("event", [{}, {"type": 5}, {"projectId": "p"}])
def test_something_without_a_type_is_not_an_event(event: dict[str, Any]) -> None:
    """Without a string type there is nothing to render."""
    assert redact_event(event, Visibility.full()) is None


def test_url_keys() -> None:
    """Any key ending in url, whatever its case or separators, is a URL key."""
    assert all(is_url_key(k) for k in ["url", "URL", "deploymentUrl", "inspector_url", "preview-URL"])
    assert not any(is_url_key(k) for k in ["urls_count", "projectId", "type"])


SECRET = "Pr0tected-Value-xyz"
# One spelling of each sensitive key, in the forms publishers are likely to use.
SENSITIVE = {
    **dict.fromkeys([*sorted(REPO_KEYS), "headSha", "commit_sha", "Branch"], "repo"),
    **dict.fromkeys([*sorted(ORG_KEYS), "teamSlug", "Organization"], "org"),
    **dict.fromkeys(["url", "deploymentUrl", "inspector_url", "Url"], "urls"),
}
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
plain_key = st.sampled_from(["projectId", "count", "success", "operationId", "meta", "items", "n"])


@st.composite
def events_with_a_secret(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    sensitive_key = draw(st.sampled_from(sorted(SENSITIVE)))
    kind = draw(
        st.sampled_from(["github:push", "deploy:finished", "deploy:started", "sanity:webhook", "x:y"])
    )
    # The secret sits under the sensitive key, somewhere inside a random JSON tree.
    holder: dict[str, Any] = {sensitive_key: draw(st.sampled_from([SECRET, [SECRET], {"v": SECRET}]))}
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        sibling = draw(st.dictionaries(plain_key, json_leaf, max_size=3))
        holder = {**sibling, draw(plain_key): draw(st.sampled_from([holder, [holder]]))}
    event = {**draw(st.dictionaries(plain_key, json_leaf, max_size=3)), **holder, "type": kind}
    return event, SENSITIVE[sensitive_key]


@given(events_with_a_secret(), st.booleans(), st.booleans(), st.booleans())
def test_protected_value_never_reaches_a_viewer_without_its_visibility(
    case: tuple[dict[str, Any], str], repo: bool, org: bool, urls: bool
) -> None:
    """A value under any sensitive key, at any depth, never reaches a viewer lacking that visibility."""
    event, needs = case
    visibility = Visibility(repo=repo, org=org, urls=urls)
    redacted = redact_event(event, visibility)
    assert redacted is not None
    text = json.dumps(redacted)
    if not getattr(visibility, needs):
        assert SECRET not in text
    else:
        assert SECRET in text
