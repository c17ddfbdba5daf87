"""``POST {prefix}/webhooks/{provider}``, framework-neutral: raw bytes and headers in, a result out.

A mount reads the raw body (at most ``max_body + 1`` bytes), calls :func:`handle_webhook`, answers
``result.status`` with ``result.body`` as JSON, publishes ``result.events`` to the project's event bus and,
when ``result.invalidate`` is set, drops the provider's cached status for ``result.project_id``.

Order of checks: provider (404) -> body size (413) -> JSON (400) -> integration (401, the same answer as a
bad signature, so an unsigned request cannot probe which integrations exist) -> signature over the raw body
(401) -> timestamp (401, Sanity) -> payload fields (400) -> replay (200 ``duplicate``, no events).
The body is parsed before it is authenticated because the integration (and so the secret) is found from it;
nothing is acted on before the signature holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import attrs

from integration_status._config import warn_once, webhook_secret_problem
from integration_status._logging import get_logger
from integration_status.backends._memory_state import MemoryDeliveryLog
from integration_status.core.clock import Clock, epoch_ms
from integration_status.core.replay import admit_delivery, replay_ttl_for, within_window
from integration_status.core.webhooks import (
    WEBHOOK_PROVIDERS,
    WebhookProvider,
    check_signature,
    delivery_keys,
    sign_github,
    sign_sanity,
    sign_vercel,
    signed_at,
    translate,
)
from integration_status.exceptions import InvalidModel
from integration_status.protocols import DeliveryLog, PublishDelivery, WebhookResolver, WebhookTarget

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_REPLAY_TTL",
    "DEFAULT_TOLERANCE",
    "DeliveryLog",
    "MemoryDeliveryLog",
    "WebhookResolver",
    "WebhookResult",
    "WebhookTarget",
    "handle_webhook",
    "sign_github",
    "sign_sanity",
    "sign_vercel",
]

DEFAULT_MAX_BODY: Final = 1_048_576
DEFAULT_TOLERANCE: Final = 300.0
#: How long a delivery id is remembered. GitHub and Vercel sign no timestamp, so this window is their only
#: replay bound; a day covers every automatic retry schedule.
DEFAULT_REPLAY_TTL: Final = 86_400.0


@attrs.frozen(kw_only=True)
class WebhookResult:
    """What to answer and what to do.

    ``status``: 200 accepted (also ``ping`` and duplicates), 202 an authentic delivery of a kind we ignore,
    400 malformed, 401 bad or missing signature or stale timestamp, 404 unknown provider or integration,
    413 body too large. ``events`` are raw events (camelCase JSON) to publish, empty unless 200.
    """

    status: int
    provider: str
    body: Mapping[str, Any] = attrs.field(hash=False)
    project_id: str | None = None
    events: tuple[Mapping[str, Any], ...] = attrs.field(default=(), hash=False)
    invalidate: bool = False
    #: The delivery-log keys this delivery recorded (to forget them if its events cannot be published).
    recorded: tuple[str, ...] = ()
    #: Whether ``events`` were already published with the delivery's keys, in one step (``publish_delivery``).
    published: bool = False


def _log() -> Any:
    return get_logger(__name__)


def _reject(provider: str, status: int, code: str, message: str, reason: str) -> WebhookResult:
    # Only the provider name and a fixed reason word: never a header value, body byte or secret.
    _log().info("integration_status.webhook.rejected", provider=provider, reason=reason)
    return WebhookResult(status=status, provider=provider, body={"error": {"code": code, "message": message}})


_UNAUTHORIZED_MESSAGES: Final = {
    "missing_signature": "Missing webhook signature",
    "malformed_signature": "Malformed webhook signature",
    "stale_timestamp": "Webhook timestamp outside the allowed window",
}


async def handle_webhook(
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    resolve: WebhookResolver,
    deliveries: DeliveryLog,
    clock: Clock,
    max_body: int = DEFAULT_MAX_BODY,
    tolerance: float = DEFAULT_TOLERANCE,
    replay_ttl: float = DEFAULT_REPLAY_TTL,
    publish_delivery: PublishDelivery | None = None,
) -> WebhookResult:
    """Verify one provider webhook delivery and turn it into raw events.

    ``headers`` may use any case; ``body`` must be the raw bytes as received (signatures cover them exactly).
    ``tolerance`` bounds the Sanity signature timestamp (seconds either side of ``clock.time()``);
    ``replay_ttl`` is how long delivery ids are remembered (at least ``2 * tolerance``). With
    ``publish_delivery`` (an engine's one-step record-and-publish), a delivery with events is recorded and
    published by it (``published`` is then set); otherwise it is recorded in ``deliveries`` and the caller
    publishes its events.
    """
    if provider not in WEBHOOK_PROVIDERS:
        # The name comes from the URL path: keep the log line short.
        return _reject(provider[:32], 404, "not_found", "Unknown webhook provider", "unknown_provider")
    name: WebhookProvider = provider
    if len(body) > max_body:
        return _reject(name, 413, "invalid_request", f"Body larger than {max_body} bytes", "too_large")
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return _reject(name, 400, "invalid_request", "Body is not valid JSON", "malformed_json")
    lowered = {k.lower(): v for k, v in headers.items()}

    target = await resolve(name, lowered, payload)
    if target is None:
        # The same answer as a bad signature: an unsigned request must not learn which integrations exist.
        return _reject(name, 401, "unauthorized", "Invalid webhook signature", "unknown_integration")

    if (problem := webhook_secret_problem(target.secret)) is not None:  # an empty key signs anything: refuse
        warn_once(
            "integration_status.config.bad_webhook_secret",
            project=target.project_id,
            provider=name,
            reason=problem,
        )
        return _reject(name, 401, "unauthorized", "Invalid webhook signature", "misconfigured_secret")
    now = clock.time()
    reason = check_signature(name, target.secret.reveal(), lowered, body, now=now, tolerance=tolerance)
    if reason is not None:
        message = _UNAUTHORIZED_MESSAGES.get(reason, "Invalid webhook signature")
        return _reject(name, 401, "unauthorized", message, reason)

    # Authentic from here on. Translating (pure) before recording the delivery means a signed but malformed
    # delivery is not remembered, so a corrected retry is not mistaken for a replay.
    try:
        translation = translate(name, lowered, payload, project_id=target.project_id, ts=epoch_ms(clock))
        keys = delivery_keys(name, lowered, payload, body)
    except InvalidModel as exc:
        return _reject(name, 400, "invalid_request", f"Malformed {name} webhook: {exc}", "malformed_payload")
    if keys is None:
        return _reject(name, 400, "invalid_request", "Missing webhook delivery id", "missing_delivery_id")
    # Signed content first: a replay under a fresh delivery id writes nothing (see core.replay).
    named = tuple(f"{name}:{key}" for key in keys)
    sent_at = signed_at(name, lowered, payload)
    published = False
    if publish_delivery is not None and translation.events and not translation.ignored:
        # The keys and the events in one step: recorded only with the events, the events only once.
        log_keys: tuple[str, ...] | None = None
        ttl = replay_ttl_for(replay_ttl, tolerance)
        if within_window(sent_at, now=now, ttl=ttl, tolerance=tolerance):
            ids = await publish_delivery(target.project_id, translation.events, named, ttl)
            if ids is not None:
                log_keys, published = (), True
    else:
        log_keys = await admit_delivery(
            deliveries, named, ttl=replay_ttl, now=now, tolerance=tolerance, sent_at=sent_at
        )
    if log_keys is None:
        _log().info("integration_status.webhook.duplicate", provider=name, kind=translation.kind)
        return WebhookResult(
            status=200, provider=name, project_id=target.project_id, body={"ok": True, "duplicate": True}
        )

    if translation.ignored:
        _log().debug("integration_status.webhook.ignored", provider=name, kind=translation.kind)
        return WebhookResult(
            status=202,
            provider=name,
            project_id=target.project_id,
            body={"ok": True, "ignored": True},
            invalidate=translation.invalidate,
        )
    _log().info(
        "integration_status.webhook.accepted",
        provider=name,
        kind=translation.kind,
        project_id=target.project_id,
        events=len(translation.events),
    )
    return WebhookResult(
        status=200,
        provider=name,
        project_id=target.project_id,
        body={"ok": True},
        events=translation.events,
        invalidate=translation.invalidate,
        recorded=log_keys,
        published=published,
    )
