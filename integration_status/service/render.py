"""Status envelopes as a viewer sees them: rendered once per (project, permissions, provider views, second),
hashed, encoded, and answered 200 or 304.

The most polled path of the library: a project's last answer is reused when a request brings the very same
provider views (the aggregator hands out the same objects while entries stay fresh) and the same (memoised)
grants, so a warm poll costs an identity check and an ETag comparison.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from cachetools import LRUCache

from integration_status.core.clock import Clock, utcnow
from integration_status.core.etag import compute_etag, format_etag, if_none_match_matches, random_etag_key
from integration_status.core.policy import Grants, ProviderView, view_item
from integration_status.exceptions import InvalidRequest
from integration_status.models import StatusEnvelope

__all__ = ["MAX_PROJECT_ID", "RENDER_BUCKET", "EnvelopeCache", "StatusResult", "validate_project_id"]

MAX_PROJECT_ID = 200

#: A rendered envelope is reused for this long (seconds) by requests that see the same provider views with the
#: same permissions. Relative times ("5 minutes ago") move in minutes, so this delays nothing a viewer can see
#: by more than a second, and it spares hashing and JSON encoding on every poll.
RENDER_BUCKET = 1.0
RENDER_CACHE_SIZE = 1024


@attrs.frozen(kw_only=True)
class StatusResult:
    """The answer of :meth:`StatusService.status`: the viewer's envelope, its ETag header value, and whether the
    client's ``If-None-Match`` matched (answer 304)."""

    envelope: StatusEnvelope
    etag: str
    not_modified: bool
    #: The envelope as compact UTF-8 JSON, encoded once (what the status endpoint sends).
    body: bytes = b""


@attrs.frozen(kw_only=True)
class _Rendered:
    # ``views`` keeps the snapshots alive, so the ``id()``s in this entry's key cannot be reused meanwhile.
    views: tuple[ProviderView, ...]
    envelope: StatusEnvelope
    digest: str
    etag: str
    body: bytes
    # The two answers for this envelope, built once (results are frozen, so requests may share them).
    ok: StatusResult
    not_modified: StatusResult


def _same_views(a: Sequence[ProviderView], b: Sequence[ProviderView]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):  # noqa: SIM110 - faster than all() over a generator
        if x is not y:
            return False
    return True


def _envelope_body(envelope: StatusEnvelope) -> bytes:
    return json.dumps(envelope.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def validate_project_id(project_id: object) -> str:
    """A project id is 1-200 printable characters; anything else is a 400 ``invalid_request``."""
    if not isinstance(project_id, str) or not project_id:
        raise InvalidRequest("projectId is required")
    if len(project_id) > MAX_PROJECT_ID or not project_id.isprintable():
        raise InvalidRequest(f"projectId must be 1-{MAX_PROJECT_ID} printable characters")
    return project_id


class EnvelopeCache:
    """Rendered envelopes and their two answers (200 and 304), reused while nothing they show changed."""

    def __init__(self, *, clock: Clock, size: int = RENDER_CACHE_SIZE, key: bytes | None = None) -> None:
        self._clock = clock
        self._key = key or random_etag_key()  # see core.etag: the tags are keyed
        self._size = size
        self._rendered: LRUCache[tuple[Any, ...], _Rendered] = LRUCache(maxsize=size)
        # Per project: (views, grants, time bucket, envelope) of the last status answer, checked by identity.
        self._last_rendered: dict[str, tuple[tuple[ProviderView, ...], Grants, int, _Rendered]] = {}

    def use_key(self, key: bytes) -> None:
        """Key every later tag with ``key`` (e.g. the one the workers share); envelopes rendered before go."""
        self._key = key
        self._rendered.clear()
        self._last_rendered.clear()

    def answer(
        self, project_id: str, views: Sequence[ProviderView], grants: Grants, if_none_match: str | None
    ) -> StatusResult:
        """The viewer's envelope for these views and grants; ``not_modified`` when ``if_none_match`` matches."""
        bucket = int(self._clock.time() // RENDER_BUCKET)
        # The last envelope of this project, when this request has the very same views (the aggregator hands
        # out the same objects while the entries stay fresh) and the same (memoised) grants.
        last = self._last_rendered.get(project_id)
        if (
            last is not None
            and last[1] is grants
            and last[2] == bucket
            and (last[0] is views or _same_views(last[0], views))
        ):
            rendered = last[3]
        else:
            rendered = self._render(project_id, views, grants, bucket)
            last_rendered = self._last_rendered
            if project_id not in last_rendered and len(last_rendered) >= self._size:
                del last_rendered[next(iter(last_rendered))]
            last_rendered[project_id] = (
                views if isinstance(views, tuple) else tuple(views),
                grants,
                bucket,
                rendered,
            )
        # The common revalidation sends back exactly the tag it got: compare before parsing the header.
        if if_none_match is None:
            return rendered.ok
        if if_none_match == rendered.etag or if_none_match_matches(if_none_match, rendered.digest):
            return rendered.not_modified
        return rendered.ok

    def _render(
        self, project_id: str, views: Sequence[ProviderView], grants: Grants, bucket: int
    ) -> _Rendered:
        key = (
            project_id,
            grants,
            bucket,
            tuple((id(v.snapshot), v.changed_at, v.stale, v.problem) for v in views),
        )
        rendered = self._rendered.get(key)
        if rendered is None:
            now = utcnow(self._clock)
            items = tuple(
                view_item(view, allowed=allowed, visibility=visibility, now=now)
                for view, (allowed, visibility) in zip(views, grants, strict=True)
            )
            body = StatusEnvelope(project_id=project_id, items=items)
            digest = compute_etag(body.to_json(with_hash=False), key=self._key)
            envelope = attrs.evolve(body, hash=digest)
            etag = format_etag(digest)
            encoded = _envelope_body(envelope)
            rendered = _Rendered(
                views=tuple(views),
                envelope=envelope,
                digest=digest,
                etag=etag,
                body=encoded,
                ok=StatusResult(envelope=envelope, etag=etag, not_modified=False, body=encoded),
                not_modified=StatusResult(envelope=envelope, etag=etag, not_modified=True, body=encoded),
            )
            self._rendered[key] = rendered
        return rendered
