"""Provider webhook signatures and payload translation: pure functions, no I/O.

Three signature schemes, each over the *raw* request body:

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``
- Vercel: ``x-vercel-signature: <hex HMAC-SHA1(secret, body)>``
- Sanity (``@sanity/webhook``): ``sanity-webhook-signature: t=<unix ms>,v1=<base64url HMAC-SHA256(secret,
  "<t>.<body>")>`` with the padding stripped

Checks return ``None`` when the delivery is authentic, otherwise a short machine reason (``"bad_signature"``,
``"stale_timestamp"`` ...) that is safe to log: it never contains the secret or the signature.

>>> body = b'{"zen":"Keep it logically awesome."}'
>>> check_github_signature("s3cret", sign_github("s3cret", body), body) is None
True
>>> check_github_signature("other", sign_github("s3cret", body), body)
'bad_signature'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias

import attrs

from integration_status.exceptions import InvalidModel
from integration_status.models import DeployFinished, DeployStarted, GithubPush, SanityWebhook

WebhookProvider: TypeAlias = Literal["github", "vercel", "sanity"]
WEBHOOK_PROVIDERS: Final[tuple[WebhookProvider, ...]] = ("github", "vercel", "sanity")

GITHUB_SIGNATURE_HEADER: Final = "x-hub-signature-256"
GITHUB_EVENT_HEADER: Final = "x-github-event"
GITHUB_DELIVERY_HEADER: Final = "x-github-delivery"
VERCEL_SIGNATURE_HEADER: Final = "x-vercel-signature"
SANITY_SIGNATURE_HEADER: Final = "sanity-webhook-signature"

# Same grammar as @sanity/webhook's decoder: "t=<digits>" then "," and/or spaces, then "v1=<value>".
_SANITY_HEADER = re.compile(r"t=(\d{1,16})[, ]+v1=([^, ]+)")
_HEX = re.compile(r"[0-9a-fA-F]+")
#: Longest signature header value that is parsed; real ones are under 80 characters. Longer is malformed.
MAX_SIGNATURE_HEADER: Final = 512

# Vercel deployment event types and what they mean for a deploy.
_VERCEL_STARTED: Final = frozenset({"deployment.created"})
_VERCEL_SUCCEEDED: Final = frozenset({"deployment.succeeded", "deployment.ready"})
_VERCEL_FAILED: Final = frozenset({"deployment.error", "deployment.canceled"})


# --- signing (for tests, the demo, and hosts' own tests) ----------------------------------------------------


def _hmac(secret: str, data: bytes, algorithm: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), data, algorithm).digest()


def _sanity_digest(secret: str, body: bytes, timestamp_ms: int) -> str:
    raw = _hmac(secret, f"{timestamp_ms}.".encode("ascii") + body, "sha256")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def sign_github(secret: str, body: bytes) -> dict[str, str]:
    """The signature header GitHub sends for ``body``.

    >>> sign_github("It's a Secret to Everybody", b"Hello, World!")["x-hub-signature-256"][:15]
    'sha256=757107ea'
    """
    return {GITHUB_SIGNATURE_HEADER: "sha256=" + _hmac(secret, body, "sha256").hex()}


def sign_vercel(secret: str, body: bytes) -> dict[str, str]:
    """The signature header Vercel sends for ``body`` (hex HMAC-SHA1)."""
    return {VERCEL_SIGNATURE_HEADER: _hmac(secret, body, "sha1").hex()}


def sign_sanity(secret: str, body: bytes, timestamp_ms: int) -> dict[str, str]:
    """The signature header Sanity sends for ``body`` signed at ``timestamp_ms`` (epoch milliseconds).

    >>> sign_sanity("try-me", b'{"title":"GROQ-Hooks are neat"}', 1633518820676)["sanity-webhook-signature"]
    't=1633518820676,v1=e7C9h2sfbFfc4V7TEz7PSOp4IoNzl0UdVsBV-1wgdeA'
    """
    return {SANITY_SIGNATURE_HEADER: f"t={timestamp_ms},v1={_sanity_digest(secret, body, timestamp_ms)}"}


# --- verification -------------------------------------------------------------------------------------------


def _same(expected: str, given: str) -> bool:
    # compare_digest on bytes: header values may hold any characters, and str comparison rejects non-ASCII.
    return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "surrogatepass"))


def _usable(secret: str) -> bool:
    # An empty key makes the HMAC computable by anyone: treat it as "no valid signature possible".
    return bool(secret)


def check_github_signature(secret: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """``None`` when ``x-hub-signature-256`` is the HMAC-SHA256 of ``body``, else the reason it is not."""
    value = headers.get(GITHUB_SIGNATURE_HEADER)
    if not value:
        return "missing_signature"
    if len(value) > MAX_SIGNATURE_HEADER:
        return "malformed_signature"
    scheme, sep, digest = value.strip().partition("=")
    if not sep or scheme != "sha256" or len(digest) != 64 or not _HEX.fullmatch(digest):
        return "malformed_signature"
    if not _usable(secret):
        return "no_secret"
    return None if _same(_hmac(secret, body, "sha256").hex(), digest.lower()) else "bad_signature"


def check_vercel_signature(secret: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """``None`` when ``x-vercel-signature`` is the hex HMAC-SHA1 of ``body``, else the reason it is not."""
    value = headers.get(VERCEL_SIGNATURE_HEADER)
    if not value:
        return "missing_signature"
    digest = value.strip() if len(value) <= MAX_SIGNATURE_HEADER else ""
    if len(digest) != 40 or not _HEX.fullmatch(digest):
        return "malformed_signature"
    if not _usable(secret):
        return "no_secret"
    return None if _same(_hmac(secret, body, "sha1").hex(), digest.lower()) else "bad_signature"


def parse_sanity_signature(value: str) -> tuple[int, str] | None:
    """``(timestamp_ms, v1)`` from a ``sanity-webhook-signature`` value, or None when it is malformed.

    >>> parse_sanity_signature("t=1633470609222, v1=7kTYPaw6SmCoN2VJzFL24oEjV-ac7lRwbljOkh7d13A")[0]
    1633470609222
    """
    if len(value) > MAX_SIGNATURE_HEADER:
        return None
    match = _SANITY_HEADER.fullmatch(value.strip())
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


def check_sanity_signature(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float, tolerance: float
) -> str | None:
    """``None`` when ``sanity-webhook-signature`` signs ``"<t>.<body>"`` and ``t`` is within ``tolerance``
    seconds of ``now`` (epoch seconds), else the reason. The signature is checked first so that a forged
    header cannot learn anything from the timestamp answer."""
    value = headers.get(SANITY_SIGNATURE_HEADER)
    if not value:
        return "missing_signature"
    parsed = parse_sanity_signature(value)
    if parsed is None:
        return "malformed_signature"
    timestamp_ms, digest = parsed
    if not _usable(secret):
        return "no_secret"
    if not _same(_sanity_digest(secret, body, timestamp_ms), digest):
        return "bad_signature"
    # Both directions: a timestamp far in the future is as suspicious as an old one (clock skew is bounded).
    if abs(now - timestamp_ms / 1000.0) > tolerance:
        return "stale_timestamp"
    return None


def check_signature(
    provider: WebhookProvider,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float,
) -> str | None:
    """Dispatch to the provider's scheme. ``headers`` must have lower-case names."""
    if provider == "github":
        return check_github_signature(secret, headers, body)
    if provider == "vercel":
        return check_vercel_signature(secret, headers, body)
    return check_sanity_signature(secret, headers, body, now=now, tolerance=tolerance)


# --- delivery identity --------------------------------------------------------------------------------------


def _given(value: object) -> str | None:
    # A blank id names nothing: treated as absent. A real one is kept exactly as sent (it is what is hashed).
    return value if isinstance(value, str) and value.strip() else None


def delivery_id(provider: WebhookProvider, headers: Mapping[str, str], payload: Any) -> str | None:
    """The id that stays the same when the provider retries one delivery, or None when there is none.

    GitHub: ``X-GitHub-Delivery``. Vercel: the body's ``id`` ("the ID of the webhook delivery"). Sanity:
    the ``idempotency-key`` header; without it, ``sanity-transaction-id`` + ``sanity-document-id``; without
    those, the signature value itself (so at least a byte-identical replay is caught). ``sanity-webhook-id``
    names the webhook configuration, not a delivery, so it is never used alone.

    An id that is empty or only whitespace counts as none: for GitHub and Vercel the delivery is then malformed,
    for Sanity the next source is used.

    Headers are not covered by the signatures: see :func:`delivery_keys` for what replay protection records.

    >>> delivery_id("github", {"x-github-delivery": " "}, {}) is None
    True
    """
    if provider == "github":
        return _given(headers.get(GITHUB_DELIVERY_HEADER))
    if provider == "vercel":
        return _given(payload.get("id") if isinstance(payload, Mapping) else None)
    if key := _given(headers.get("idempotency-key")):
        return key
    transaction = _given(headers.get("sanity-transaction-id"))
    document = _given(headers.get("sanity-document-id"))
    if transaction and document:
        return f"{transaction}/{document}"
    signature = headers.get(SANITY_SIGNATURE_HEADER)
    return f"sig:{signature.strip()}" if signature else None


#: Longest provider delivery id accepted (GitHub's GUIDs have 36 characters, Vercel's ids about 30, Sanity's
#: transaction and document ids together at most about 150); a longer one makes the delivery malformed (400).
MAX_DELIVERY_ID_LENGTH: Final = 256


def _digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def delivery_keys(
    provider: WebhookProvider, headers: Mapping[str, str], payload: Any, body: bytes
) -> tuple[str, ...] | None:
    """What replay protection records for one verified delivery, signed content first; None when the
    provider's delivery id is missing (the request is malformed). Raises :class:`InvalidModel` for a delivery
    id longer than :data:`MAX_DELIVERY_ID_LENGTH`.

    The first key covers only signed content, so a captured delivery resent with a forged delivery-id header
    is caught by it: GitHub signs the body (its redeliveries repeat it byte for byte), Sanity signs
    ``"<t>.<body>"``, Vercel's delivery ``id`` is inside the signed body. The second, the provider's delivery
    id (:func:`delivery_id`), catches retries that are re-signed (Sanity signs each retry with a new ``t``).
    Every key is a fixed-length digest, so an entry costs the same whatever the client sent.
    """
    named = delivery_id(provider, headers, payload)
    if named is None:
        return None
    if len(named) > MAX_DELIVERY_ID_LENGTH:
        raise InvalidModel(f"the delivery id is longer than {MAX_DELIVERY_ID_LENGTH} characters", field="id")
    by_id = f"id:{_digest(named.encode('utf-8', 'surrogatepass'))}"
    if provider == "vercel":
        return (by_id,)
    if provider == "github":
        signed = _digest(body)
    else:
        parsed = parse_sanity_signature(headers.get(SANITY_SIGNATURE_HEADER, ""))
        stamp = parsed[0] if parsed is not None else ""
        signed = _digest(f"{stamp}.".encode() + body)
    return (f"signed:{signed}", by_id)


def signed_at(provider: WebhookProvider, headers: Mapping[str, str], payload: Any) -> float | None:
    """When the provider says it sent this delivery (epoch seconds), from signed content only; None when the
    delivery carries no such time.

    Sanity: the signature's ``t``. Vercel: the body's ``createdAt`` (epoch ms). GitHub: a push's
    ``repository.pushed_at`` (epoch seconds; other events carry no reliable send time).

    >>> signed_at("vercel", {}, {"createdAt": 1764136790000})
    1764136790.0
    """
    if provider == "sanity":
        parsed = parse_sanity_signature(headers.get(SANITY_SIGNATURE_HEADER, ""))
        return None if parsed is None else parsed[0] / 1000.0
    if provider == "vercel":
        value = _get(payload, "createdAt")
        scale = 1000.0
    else:
        value = _get(payload, "repository", "pushed_at")
        scale = 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value / scale


# --- translation --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Translation:
    """What an authentic delivery means: the raw events to publish, and whether the provider's cached status
    is now out of date. ``ignored`` marks a kind we do not act on (answered 202); ``kind`` is the provider's
    own name for the delivery (for logs)."""

    kind: str
    events: tuple[Mapping[str, Any], ...] = ()
    invalidate: bool = False
    ignored: bool = False


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _require_str(data: Any, *path: str) -> str:
    value = _get(data, *path)
    if not isinstance(value, str) or not value:
        raise InvalidModel(f"{'.'.join(path)} must be a non-empty string", field=".".join(path))
    return value


def translate_github(event: str, payload: Any, *, project_id: str, ts: int) -> Translation:
    """``push`` to a branch -> ``github:push``; ``ping`` -> accepted without event; anything else ignored.

    Tag pushes are ignored. A branch deletion (``deleted: true``, ``after`` all zeros) has no commit to
    report, so it sends no event but still invalidates the cached status (the tracked branch may be gone).
    """
    if event == "ping":
        return Translation(kind="ping")
    if event != "push":
        return Translation(kind=event, ignored=True)
    ref = _require_str(payload, "ref")
    if not ref.startswith("refs/heads/"):
        return Translation(kind="push", ignored=True)
    if _get(payload, "deleted") is True:
        return Translation(kind="push", ignored=True, invalidate=True)
    push = GithubPush(
        project_id=project_id,
        branch=ref.removeprefix("refs/heads/"),
        sha=_require_str(payload, "after"),
        ts=ts,
    )
    return Translation(kind="push", events=(push.to_json(),), invalidate=True)


def _deployment_url(payload: Any) -> str | None:
    url = _get(payload, "payload", "deployment", "url")
    if not isinstance(url, str) or not url:
        return None
    # Vercel sends the bare host ("my-app-abc123.vercel.app").
    return url if url.startswith(("https://", "http://")) else "https://" + url


def translate_vercel(payload: Any, *, project_id: str, ts: int) -> Translation:
    """Deployment lifecycle -> ``deploy:started`` / ``deploy:finished``; other types ignored."""
    kind = _require_str(payload, "type")
    if kind in _VERCEL_STARTED:
        deployment = _require_str(payload, "payload", "deployment", "id")
        started = DeployStarted(project_id=project_id, operation_id=deployment, ts=ts)
        return Translation(kind=kind, events=(started.to_json(),), invalidate=True)
    if kind in _VERCEL_SUCCEEDED or kind in _VERCEL_FAILED:
        deployment = _require_str(payload, "payload", "deployment", "id")
        success = kind in _VERCEL_SUCCEEDED
        finished = DeployFinished(
            project_id=project_id,
            success=success,
            url=_deployment_url(payload) if success else None,
            operation_id=deployment,
            ts=ts,
        )
        return Translation(kind=kind, events=(finished.to_json(),), invalidate=True)
    return Translation(kind=kind, ignored=True)


def sanity_document_count(payload: Any) -> int:
    """How many documents one Sanity delivery is about.

    A projection may return a list (one entry per document) or the legacy "ids" shape
    (``{"ids": {"all": [...]}}`` or ``{"ids": [...]}``); a plain document is one. Never less than one:
    a delivery always stands for at least one mutation.

    >>> sanity_document_count({"_id": "a"}), sanity_document_count([{}, {}]), sanity_document_count(
    ...     {"ids": {"all": ["a", "b", "c"]}})
    (1, 2, 3)
    """
    if isinstance(payload, list):
        return max(1, len(payload))
    ids = _get(payload, "ids")
    if isinstance(ids, Mapping):
        ids = ids.get("all")
    if isinstance(ids, list):
        return max(1, len(ids))
    return 1


def translate_sanity(headers: Mapping[str, str], payload: Any, *, project_id: str, ts: int) -> Translation:
    """Any document mutation delivery -> one ``sanity:webhook`` with the document count."""
    event = SanityWebhook(project_id=project_id, count=sanity_document_count(payload), ts=ts)
    return Translation(
        kind=headers.get("sanity-operation") or "mutation", events=(event.to_json(),), invalidate=True
    )


def translate(
    provider: WebhookProvider, headers: Mapping[str, str], payload: Any, *, project_id: str, ts: int
) -> Translation:
    """Translate an authentic delivery; raises InvalidModel when a field the mapping needs is missing."""
    if provider == "github":
        event = headers.get(GITHUB_EVENT_HEADER)
        if not event:
            raise InvalidModel("missing X-GitHub-Event header", field=GITHUB_EVENT_HEADER)
        return translate_github(event, payload, project_id=project_id, ts=ts)
    if provider == "vercel":
        return translate_vercel(payload, project_id=project_id, ts=ts)
    return translate_sanity(headers, payload, project_id=project_id, ts=ts)
