"""What a viewer is sent: status envelopes (with their ETag, answered 200 or 304), ``status:update`` frames
and redacted provider-event frames, from ONE render cache owned by the service.

Rendering is pure (:func:`~integration_status.core.policy.view_item` per provider); this module decides when
it may be skipped. A rendering depends on the project, the viewer's grants (allowed actions and visibility per
provider: the *viewer class*), the provider views and the clock second. Viewers of one class share the
rendering, its JSON, its hash and its frames; viewers of different classes never do.

The most polled path of the library is a warm poll: the aggregator hands out the same views tuple while the
entries stay fresh and the policy the same grants tuple, so the last rendering of a project is found by two
identity checks before the cache is even asked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import attrs
from cachetools import LRUCache

from integration_status.core.clock import Clock, utcnow
from integration_status.core.etag import compute_etag, format_etag, if_none_match_matches, random_etag_key
from integration_status.core.events import redact_event
from integration_status.core.policy import Grants, ProviderView, view_item
from integration_status.core.sse import encode_event
from integration_status.exceptions import InvalidRequest
from integration_status.models import StatusEnvelope, StatusItem, StatusUpdate
from integration_status.protocols import StoredEvent
from integration_status.snapshot import Visibility

__all__ = ["MAX_PROJECT_ID", "RENDER_BUCKET", "Renderer", "StatusResult", "validate_project_id"]

MAX_PROJECT_ID: Final = 200

#: A rendering is reused for this long (seconds) by viewers of one class that see the same provider views.
#: Relative times ("5 minutes ago") move in minutes, so this delays nothing a viewer can see by more than a
#: second, and it spares hashing and JSON encoding on every poll.
RENDER_BUCKET: Final = 1.0
RENDER_CACHE_SIZE: Final = 2048
#: ``status:update`` frames kept per rendering (one per event id and ts; a few markers share a rendering).
FRAMES_PER_RENDERING: Final = 32


@attrs.frozen(kw_only=True)
class StatusResult:
    """The answer of :meth:`StatusService.status`: the viewer's envelope, its ETag header value, and whether the
    client's ``If-None-Match`` matched (answer 304)."""

    envelope: StatusEnvelope
    etag: str
    not_modified: bool
    #: The envelope as compact UTF-8 JSON, encoded once (what the status endpoint sends).
    body: bytes = b""
    #: Encodings of this answer made by a mount (its response object, its raw headers), kept as long as the
    #: rendering is: results are shared by every request of a viewer class, so a mount encodes each once.
    wire: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False, hash=False)


def dumps(value: object) -> str:
    """Compact JSON, non-ASCII kept (what every endpoint and frame sends)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def validate_project_id(project_id: object) -> str:
    """A project id is 1-200 printable characters; anything else is a 400 ``invalid_request`` that says what is
    wrong (missing or empty, not a string, too long or not printable)."""
    if not isinstance(project_id, str):
        raise InvalidRequest("projectId is required" if project_id is None else "projectId must be a string")
    if not project_id:
        raise InvalidRequest("projectId is required")
    if len(project_id) > MAX_PROJECT_ID or not project_id.isprintable():
        raise InvalidRequest(f"projectId must be 1-{MAX_PROJECT_ID} printable characters")
    return project_id


class _Rendering:
    """One rendering of a project's items for one viewer class within one clock second, and what is derived
    from it: the envelope, its hash, its JSON, the two status answers, and ``status:update`` frames."""

    __slots__ = ("envelope", "etag", "frames", "items", "not_modified", "ok", "project_id", "tag", "views")

    def __init__(
        self, project_id: str, views: tuple[ProviderView, ...], items: tuple[StatusItem, ...], key: bytes
    ) -> None:
        self.project_id = project_id
        self.views = views  # keeps the snapshots alive: the id()s in this rendering's key cannot be reused
        self.items = items
        body = StatusEnvelope(project_id=project_id, items=items)
        self.tag = compute_etag(body.to_json(with_hash=False), key=key)
        self.envelope = attrs.evolve(body, hash=self.tag)
        self.etag = format_etag(self.tag)
        encoded = dumps(self.envelope.to_json()).encode()
        self.ok = StatusResult(envelope=self.envelope, etag=self.etag, not_modified=False, body=encoded)
        self.not_modified = StatusResult(
            envelope=self.envelope, etag=self.etag, not_modified=True, body=encoded
        )
        self.frames: dict[tuple[str | None, int], bytes] = {}

    def frame(self, event_id: str | None, ts: int) -> bytes:
        frame = self.frames.get((event_id, ts))
        if frame is None:
            if len(self.frames) >= FRAMES_PER_RENDERING:
                del self.frames[next(iter(self.frames))]
            update = StatusUpdate(project_id=self.project_id, items=self.items, ts=ts)
            frame = self.frames[(event_id, ts)] = encode_event(
                data=dumps(update.to_json()), event="status:update", id=event_id
            )
        return frame


def _same(a: Sequence[ProviderView], b: Sequence[ProviderView]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):  # noqa: SIM110 - faster than all() over a generator
        if x is not y:
            return False
    return True


class Renderer:
    """The service's render cache (see the module docstring): status answers, ``status:update`` frames and
    provider-event frames, bounded, keyed on everything a rendering depends on."""

    def __init__(self, *, clock: Clock, size: int = RENDER_CACHE_SIZE, key: bytes | None = None) -> None:
        self._clock = clock
        self._key = key or random_etag_key()  # see core.etag: the tags are keyed
        self._size = size
        self._cache: LRUCache[tuple[Any, ...], Any] = LRUCache(maxsize=size)
        # Items by (view, allowed actions, visibility, clock second), with the snapshot they were made from: a
        # provider whose view did not move keeps its item when another provider's does (a webhook refreshes
        # one provider), so a new rendering builds one item instead of four.
        self._items: LRUCache[tuple[Any, ...], tuple[ProviderView, StatusItem]] = LRUCache(maxsize=size)
        # The newest rendering per project, with the views and grants objects it was made for: a warm poll
        # finds it by identity without building a cache key.
        self._newest: dict[str, tuple[tuple[ProviderView, ...], Grants, int, _Rendering]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def use_key(self, key: bytes) -> None:
        """Key every later tag with ``key`` (e.g. the one the workers share); renderings made before go
        (unless the key is the one in use already)."""
        if key == self._key:
            return
        self._key = key
        self._cache.clear()
        self._items.clear()
        self._newest.clear()

    def rendering(self, project_id: str, views: Sequence[ProviderView], grants: Grants) -> _Rendering:
        """The rendering of ``views`` for a viewer with ``grants`` (one pair per view, in order)."""
        bucket = int(self._clock.time() // RENDER_BUCKET)
        newest = self._newest.get(project_id)
        if (
            newest is not None
            and newest[1] is grants
            and newest[2] == bucket
            and (newest[0] is views or _same(newest[0], views))
        ):
            return newest[3]
        key = (
            "status",
            project_id,
            grants,
            bucket,
            tuple((id(v.snapshot), v.changed_at, v.stale, v.problem) for v in views),
        )
        rendering: _Rendering | None = self._cache.get(key)
        if rendering is None:
            now = utcnow(self._clock)
            items = tuple(
                [
                    self._item(view, allowed, visibility, bucket, now)
                    for view, (allowed, visibility) in zip(views, grants, strict=True)
                ]
            )
            rendering = self._cache[key] = _Rendering(project_id, tuple(views), items, self._key)
        if project_id not in self._newest and len(self._newest) >= self._size:
            del self._newest[next(iter(self._newest))]
        self._newest[project_id] = (
            views if isinstance(views, tuple) else tuple(views),
            grants,
            bucket,
            rendering,
        )
        return rendering

    def _item(
        self, view: ProviderView, allowed: frozenset[str], visibility: Visibility, bucket: int, now: datetime
    ) -> StatusItem:
        """The item of ``view`` for one viewer class, made once per clock second (as a rendering is)."""
        key = (
            id(view.snapshot),
            view.provider,
            view.changed_at,
            view.stale,
            view.problem,
            allowed,
            visibility,
            bucket,
        )
        hit = self._items.get(key)
        if hit is not None and hit[0].snapshot is view.snapshot:
            return hit[1]
        item = view_item(view, allowed=allowed, visibility=visibility, now=now)
        self._items[key] = (view, item)  # the view keeps its snapshot, so the id() in the key stays its own
        return item

    def answer(
        self, project_id: str, views: Sequence[ProviderView], grants: Grants, if_none_match: str | None
    ) -> StatusResult:
        """The viewer's envelope for these views and grants; ``not_modified`` when ``if_none_match`` matches."""
        newest = self._newest.get(project_id)
        if (
            newest is not None
            and newest[0] is views
            and newest[1] is grants
            and newest[2] == int(self._clock.time() // RENDER_BUCKET)
        ):
            rendering = newest[3]  # the warm poll: rendering() finds it the same way, one call later
        else:
            rendering = self.rendering(project_id, views, grants)
        if if_none_match is None:
            return rendering.ok
        # The common revalidation sends back exactly the tag it got: compare before parsing the header.
        if if_none_match == rendering.etag or if_none_match_matches(if_none_match, rendering.tag):
            return rendering.not_modified
        return rendering.ok

    def status_frame(
        self,
        project_id: str,
        views: Sequence[ProviderView],
        grants: Grants,
        *,
        event_id: str | None,
        ts: int,
    ) -> tuple[bytes, tuple[StatusItem, ...]]:
        """The encoded ``status:update`` frame for a viewer with ``grants``, and the items it carries."""
        rendering = self.rendering(project_id, views, grants)
        return rendering.frame(event_id, ts), rendering.items

    def event_frame(self, project_id: str, stored: StoredEvent, visibility: Visibility) -> bytes | None:
        """The frame a provider event (``github:push``, ``deploy:*``, ``sanity:webhook``) becomes for a viewer
        with ``visibility``; None when it is not sent to them. A hit counts only for the very same event data
        (the same object, or an equal one): an id that came back with other content is rendered again."""
        key = ("event", project_id, stored.id, visibility)
        hit: tuple[Mapping[str, Any], bytes | None] | None = self._cache.get(key)
        if hit is not None and (hit[0] is stored.data or hit[0] == stored.data):
            return hit[1]
        redacted = redact_event(stored.data, visibility)
        frame = None
        if redacted is not None:
            frame = encode_event(data=redacted, event=str(redacted["type"]), id=stored.id)
        self._cache[key] = (stored.data, frame)
        return frame
