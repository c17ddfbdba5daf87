"""ETags for the status envelope: a keyed content hash, its header form, and ``If-None-Match`` matching.

The tag is an HMAC-SHA256 under a per-deployment key over canonical JSON (sorted keys, no whitespace, UTF-8), so
the same content gives the same tag in every process that holds the key. Keyed, because an owner's tag travels
(proxies, logs, screenshots of devtools): with a plain hash, anyone holding it could confirm a guess of the
names it hides offline, starting from their own redacted envelope. Without the key no guess can be checked.
See :func:`etag_key` for where the key comes from. ``If-None-Match`` follows the entity-tag grammar of RFC 9110
(sections 8.8.3 and 13.1.2) with weak comparison; anything that does not parse is treated as "no match" (the
client gets a normal 200).

>>> key = etag_key(b"a per-deployment secret")
>>> tag = compute_etag({"projectId": "p1", "items": []}, key=key)
>>> if_none_match_matches(f'W/"zzz", {format_etag(tag)}', tag)
True
>>> if_none_match_matches("not-quoted", tag)
False
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Any, Final

import attrs

from integration_status.core.canonical import canonical_json

__all__ = [
    "MAX_IF_NONE_MATCH_LENGTH",
    "MAX_IF_NONE_MATCH_TAGS",
    "EntityTag",
    "IfNoneMatch",
    "compute_etag",
    "etag_key",
    "format_etag",
    "if_none_match_matches",
    "parse_if_none_match",
    "random_etag_key",
]

#: Hex characters of the hash: 128 bits is plenty to tell envelopes apart and keeps the header short.
HASH_LENGTH: Final = 32
_OWS: Final = " \t"


#: Bytes of a derived ETag key.
KEY_LENGTH: Final = 32
_KEY_LABEL: Final = b"integration-status etag v1"


def etag_key(secret: str | bytes) -> bytes:
    """The ETag key derived from a deployment secret (HMAC of a fixed label), so the secret itself never keys
    anything else the host may use it for. Every worker given the same secret computes the same tags; changing
    it changes every tag once (each client gets one 200, then 304s again).

    >>> len(etag_key("s3cret")), etag_key("s3cret") == etag_key(b"s3cret")
    (32, True)
    """
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise ValueError("an ETag secret may not be empty")
    return hmac.new(raw, _KEY_LABEL, hashlib.sha256).digest()


def random_etag_key() -> bytes:
    """A fresh random key: the default of one process without a configured secret (its tags change on restart)."""
    return secrets.token_bytes(KEY_LENGTH)


def compute_etag(envelope_json_without_hash: Mapping[str, Any], *, key: bytes) -> str:
    """The keyed hash of an envelope's JSON (without its ``hash`` field): 32 lower-case hex characters of
    HMAC-SHA256(``key``, canonical JSON).

    A top-level ``hash`` key, if present anyway, is ignored so that the hash never depends on itself.
    """
    if len(key) < 16:
        raise ValueError("an ETag key needs at least 16 bytes (see etag_key)")
    body = {k: v for k, v in envelope_json_without_hash.items() if k != "hash"}
    return hmac.new(key, canonical_json(body), hashlib.sha256).hexdigest()[:HASH_LENGTH]


def _is_etagc(ch: str) -> bool:
    # etagc = %x21 / %x23-7E / obs-text (%x80-FF); header values arrive decoded as latin-1.
    code = ord(ch)
    return code == 0x21 or 0x23 <= code <= 0x7E or 0x80 <= code <= 0xFF


def format_etag(hash_value: str) -> str:
    """The strong, quoted ``ETag`` header value for a hash.

    >>> format_etag("abc")
    '"abc"'
    """
    if not all(_is_etagc(ch) for ch in hash_value):
        raise ValueError("an entity-tag may not contain quotes, spaces or control characters")
    return f'"{hash_value}"'


@attrs.frozen(kw_only=True)
class EntityTag:
    """One entity-tag of a list: its opaque value (without quotes) and whether it was marked weak (``W/``)."""

    opaque: str
    weak: bool = False


@attrs.frozen(kw_only=True)
class IfNoneMatch:
    """A parsed ``If-None-Match`` header: either ``*`` (``any_tag``) or a list of entity-tags."""

    any_tag: bool = False
    tags: tuple[EntityTag, ...] = ()

    def matches(self, current_hash: str) -> bool:
        """Weak comparison (RFC 9110 8.8.3.2): the opaque values are equal, whatever the weakness flags."""
        return self.any_tag or any(tag.opaque == current_hash for tag in self.tags)


#: Longest ``If-None-Match`` value that is parsed (characters). A client revalidates with the one tag it got
#: (34 characters); a longer value is treated as "no match": the client gets a normal 200, never an error, and
#: a hostile megabyte costs one length check instead of a parse.
MAX_IF_NONE_MATCH_LENGTH: Final = 4096
#: Most entity-tags one ``If-None-Match`` may list; more is treated as "no match" as well.
MAX_IF_NONE_MATCH_TAGS: Final = 64

# etagc = %x21 / %x23-7E / obs-text (%x80-FF); header values arrive decoded as latin-1.
_ETAGC: Final = r"[\x21\x23-\x7e\x80-\xff]"
_ELEMENT: Final = rf'[ \t]*(?:(?:W/)?"{_ETAGC}*"[ \t]*)?'
# The whole list, empty elements allowed (RFC 9110 5.6.1). Every character is consumed by exactly one part of
# the pattern (an etagc never is a quote, OWS never is a comma), so matching is linear in the length.
_LIST: Final = re.compile(rf"{_ELEMENT}(?:,{_ELEMENT})*")
_TAG: Final = re.compile(rf'(W/)?"({_ETAGC}*)"')


def parse_if_none_match(header: str | None) -> IfNoneMatch | None:
    """Parse an ``If-None-Match`` value; None when it is absent, empty, malformed, longer than
    :data:`MAX_IF_NONE_MATCH_LENGTH` or listing more than :data:`MAX_IF_NONE_MATCH_TAGS` tags (it never raises).

    Empty list elements (``"a", , "b"``) are allowed, as RFC 9110 5.6.1 asks recipients to accept them.

    >>> parse_if_none_match('"a", W/"b"').tags
    (EntityTag(opaque='a', weak=False), EntityTag(opaque='b', weak=True))
    >>> parse_if_none_match("*").any_tag
    True
    >>> parse_if_none_match('"unterminated') is None
    True
    """
    if not isinstance(header, str) or len(header) > MAX_IF_NONE_MATCH_LENGTH:
        return None
    text = header.strip(_OWS)
    if not text:
        return None
    if text == "*":
        return IfNoneMatch(any_tag=True)
    if _LIST.fullmatch(text) is None:  # two tags without a comma, an unterminated quote, a stray character
        return None
    tags = tuple(EntityTag(opaque=m[2], weak=m[1] is not None) for m in _TAG.finditer(text))
    if not tags or len(tags) > MAX_IF_NONE_MATCH_TAGS:
        return None
    return IfNoneMatch(tags=tags)


def if_none_match_matches(header: str | None, current_hash: str) -> bool:
    """Whether ``If-None-Match`` matches the current hash (bare, without quotes): the request may get a 304.

    >>> if_none_match_matches('W/"abc"', "abc"), if_none_match_matches('"abd"', "abc")
    (True, False)
    """
    parsed = parse_if_none_match(header)
    return parsed is not None and parsed.matches(current_hash)
