"""ETag hashing and If-None-Match matching."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status.core.canonical import canonical_json
from integration_status.core.etag import (
    EntityTag,
    IfNoneMatch,
    compute_etag,
    etag_key,
    format_etag,
    if_none_match_matches,
    parse_if_none_match,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = etag_key("a deployment secret for the tests")

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)
# The hashes this library emits (hex) and any other legal opaque tag value.
etagc_text = st.text(
    alphabet=st.sampled_from([chr(c) for c in [0x21, *range(0x23, 0x7F), *range(0x80, 0x100)]]), max_size=40
)
OWS = st.sampled_from(["", " ", "\t", "  "])


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


def test_canonical_json_is_sorted_compact_utf8() -> None:
    """canonical_json sorts keys at every level, uses no whitespace and keeps non-ASCII as UTF-8."""
    assert canonical_json({"b": {"z": 1, "a": 2}, "a": "é"}) == '{"a":"é","b":{"a":2,"z":1}}'.encode()


def test_compute_etag_is_32_hex_chars_and_ignores_a_hash_field() -> None:
    """The hash is 32 lower-case hex characters and does not depend on a stray top-level hash field."""
    body = {"projectId": "p1", "items": []}
    tag = compute_etag(body, key=KEY)
    assert len(tag) == 32
    assert all(c in "0123456789abcdef" for c in tag)
    assert compute_etag({**body, "hash": "whatever"}, key=KEY) == tag


def test_the_tag_depends_on_the_key_and_the_key_on_the_secret() -> None:
    """Another key gives another tag for the same body; an empty secret or a short key is refused."""
    body = {"projectId": "p1", "items": []}
    assert compute_etag(body, key=KEY) != compute_etag(body, key=etag_key("another secret"))
    with pytest.raises(ValueError, match="empty"):
        etag_key("")
    with pytest.raises(ValueError, match="16 bytes"):
        compute_etag(body, key=b"short")


def test_compute_etag_is_the_same_in_another_process() -> None:
    """With the same key the hash is stable across processes (no per-process hash seed leaks in)."""
    body = {"projectId": "p1", "items": [{"key": "github", "status": "connected", "summary": "ü · 2m ago"}]}
    code = (
        "import json, sys; from integration_status.core.etag import compute_etag, etag_key; "
        "print(compute_etag(json.loads(sys.argv[1]), key=etag_key('a deployment secret for the tests')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(body)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip() == compute_etag(body, key=KEY)


@given(json_objects, st.integers(0, 2**32))
def test_hash_is_stable_under_key_order(body: dict[str, Any], seed: int) -> None:
    """Permuting the key order of every object at every level never changes the hash."""
    assert compute_etag(_shuffled(body, random.Random(seed)), key=KEY) == compute_etag(body, key=KEY)


@given(json_objects, json_objects)
def test_hash_differs_when_content_differs(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two envelopes with different canonical JSON get different hashes."""
    a.pop("hash", None)
    b.pop("hash", None)
    if canonical_json(a) != canonical_json(b):
        assert compute_etag(a, key=KEY) != compute_etag(b, key=KEY)
    else:
        assert compute_etag(a, key=KEY) == compute_etag(b, key=KEY)


def test_format_etag_quotes_and_rejects_illegal_characters() -> None:
    """format_etag gives the strong quoted form and refuses values that would break the header."""
    assert format_etag("abc123") == '"abc123"'
    for bad in ['a"b', "a b", "a\nb", "a\x00b"]:
        with pytest.raises(ValueError, match="entity-tag"):
            format_etag(bad)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("*", IfNoneMatch(any_tag=True)),
        ('"abc"', IfNoneMatch(tags=(EntityTag(opaque="abc"),))),
        ('W/"abc"', IfNoneMatch(tags=(EntityTag(opaque="abc", weak=True),))),
        ('""', IfNoneMatch(tags=(EntityTag(opaque=""),))),
        (
            ' "a" ,W/"b",\t"c" ',
            IfNoneMatch(
                tags=(EntityTag(opaque="a"), EntityTag(opaque="b", weak=True), EntityTag(opaque="c"))
            ),
        ),
        ('"a", , "b",', IfNoneMatch(tags=(EntityTag(opaque="a"), EntityTag(opaque="b")))),
        ('"\xe9"', IfNoneMatch(tags=(EntityTag(opaque="\xe9"),))),
    ],
)
def test_parse_if_none_match_accepts_the_rfc_grammar(header: str, expected: IfNoneMatch) -> None:
    """`*`, lists with whitespace and empty elements, weak tags and obs-text parse as RFC 9110 says."""
    assert parse_if_none_match(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        ",",
        "abc",  # unquoted
        '"abc',  # unterminated
        'abc"',
        'w/"abc"',  # the weak indicator is case-sensitive
        'W/ "abc"',
        "W/abc",
        '"a" "b"',  # missing comma
        '"a"b',
        '"a b"',  # space is not etagc
        '"a\x7fb"',
        '"a\x01b"',
        '"ab\u0100"',  # beyond latin-1
        '*, "a"',
        '"a", *',
        "**",
        'W/"a"W/"b"',
    ],
)
def test_malformed_or_absent_headers_never_match(header: str | None) -> None:
    """A header that breaks the grammar parses to None and matches nothing, not even the tag it contains."""
    assert parse_if_none_match(header) is None
    assert not if_none_match_matches(header, "a")
    assert not if_none_match_matches(header, "abc")


def test_star_matches_any_hash() -> None:
    """`If-None-Match: *` matches whatever the current hash is."""
    assert if_none_match_matches("*", "anything")
    assert if_none_match_matches(" * ", "")


def test_weak_comparison_ignores_weakness_but_not_content() -> None:
    """W/"x" matches "x", and neither matches a different or differently-cased tag."""
    assert if_none_match_matches('W/"abc"', "abc")
    assert if_none_match_matches('"abc"', "abc")
    assert not if_none_match_matches('W/"abc"', "abd")
    assert not if_none_match_matches('"ABC"', "abc")
    assert not if_none_match_matches('"abc"', '"abc"')  # the current hash is compared bare


@given(st.text())
def test_parse_never_raises(header: str) -> None:
    """Parsing arbitrary text never raises and a match attempt is always a plain bool."""
    parsed = parse_if_none_match(header)
    assert parsed is None or isinstance(parsed, IfNoneMatch)
    assert isinstance(if_none_match_matches(header, "abc"), bool)


@given(
    st.lists(st.tuples(etagc_text, st.booleans()), max_size=5),
    st.lists(st.tuples(etagc_text, st.booleans()), max_size=5),
    etagc_text.filter(bool),
    st.booleans(),
    OWS,
    OWS,
)
def test_a_list_with_the_tag_anywhere_matches(
    before: list[tuple[str, bool]],
    after: list[tuple[str, bool]],
    current: str,
    weak: bool,
    left: str,
    right: str,
) -> None:
    """The current tag anywhere in a list, strong or weak, with any whitespace around commas, matches."""
    tags = [*before, (current, weak), *after]
    header = ",".join(f'{left}{"W/" if w else ""}"{t}"{right}' for t, w in tags)
    parsed = parse_if_none_match(header)
    assert parsed is not None
    assert [(t.opaque, t.weak) for t in parsed.tags] == tags
    assert if_none_match_matches(header, current)


@given(st.lists(st.tuples(etagc_text, st.booleans()), min_size=1, max_size=5), etagc_text)
def test_a_list_without_the_tag_does_not_match(tags: list[tuple[str, bool]], current: str) -> None:
    """A well-formed list that does not contain the current tag does not match."""
    tags = [(t, w) for t, w in tags if t != current] or [(current + "x", False)]
    header = ", ".join(f'{"W/" if w else ""}"{t}"' for t, w in tags)
    assert not if_none_match_matches(header, current)


@given(
    st.lists(etagc_text, max_size=3),
    etagc_text,
    st.sampled_from(['"{t}', '{t}"', "{t}", 'w/"{t}"', '"{t}" x', '"{t}""{t}"', '"{t} {t}"', "W/{t}"]),
)
def test_a_malformed_element_poisons_the_whole_header(good: list[str], current: str, broken: str) -> None:
    """One malformed element makes the whole header malformed: no match, even if the current tag is listed."""
    bad = broken.format(t=current or "q")
    header = ", ".join([*(f'"{t}"' for t in good), f'"{current}"', bad])
    assert parse_if_none_match(header) is None
    assert not if_none_match_matches(header, current)


# --- bounds against hostile headers --------------------------------------------------------------------------


def test_if_none_match_longer_than_the_bound_is_no_match() -> None:
    """A value over MAX_IF_NONE_MATCH_LENGTH is "no match" even when it lists the current tag."""
    from integration_status.core.etag import MAX_IF_NONE_MATCH_LENGTH

    padded = f'"abc",{" " * MAX_IF_NONE_MATCH_LENGTH}'
    assert parse_if_none_match(padded) is None
    assert not if_none_match_matches(padded, "abc")
    assert if_none_match_matches(padded[:MAX_IF_NONE_MATCH_LENGTH], "abc")


def test_if_none_match_with_too_many_tags_is_no_match() -> None:
    """More than MAX_IF_NONE_MATCH_TAGS entity-tags is "no match"; exactly the bound still parses."""
    from integration_status.core.etag import MAX_IF_NONE_MATCH_TAGS

    at_bound = ", ".join(f'"t{i}"' for i in range(MAX_IF_NONE_MATCH_TAGS))
    assert if_none_match_matches(at_bound, f"t{MAX_IF_NONE_MATCH_TAGS - 1}")
    assert parse_if_none_match(at_bound + ', "abc"') is None


@pytest.mark.parametrize(
    "value",
    ['"a" "b"', '"a",W/', 'w/"a"', '"a"x', '"' + "a" * 4000, "\x00", '"a",\x7f"b"', '"é\u0100"'],
)
def test_if_none_match_malformed_near_the_bound_is_none(value: str) -> None:
    """Malformed lists (no comma, lower-case w/, garbage, unterminated, non-latin-1) parse to None."""
    assert parse_if_none_match(value) is None


@given(st.lists(st.tuples(st.booleans(), etagc_text), min_size=1, max_size=10), OWS, OWS)
def test_regex_parser_keeps_every_tag_in_order(tags: list[tuple[bool, str]], left: str, right: str) -> None:
    """Any list of legal tags joined by commas with optional whitespace parses back to the same tags."""
    text = ",".join(f'{left}{"W/" if weak else ""}"{opaque}"{right}' for weak, opaque in tags)
    parsed = parse_if_none_match(text)
    assert parsed is not None
    assert parsed.tags == tuple(EntityTag(opaque=o, weak=w) for w, o in tags)
