"""Webhook replay protection: which delivery-log keys a verified delivery writes, in which order, and for how
long.

A delivery's keys come from :func:`integration_status.core.webhooks.delivery_keys`, signed content first. The
rules:

- **A replay writes nothing.** The signed-content key is checked (and set) first; when it was seen, the
  delivery is a duplicate and nothing else is looked at, so resending one captured delivery under any number of
  fresh, unsigned delivery ids leaves the log exactly as it was. The provider's delivery id is recorded only
  for content that is new.
- **The protection outlives the signature.** Keys live at least ``2 * tolerance`` (a Sanity signature is
  accepted ``tolerance`` seconds either side of now). A delivery whose signed send time (see
  :func:`~integration_status.core.webhooks.signed_at`) is older than the log can remember (``ttl - tolerance``)
  or further ahead than ``tolerance`` is treated as a replay: its first acceptance may already be forgotten.
  GitHub events other than pushes carry no signed time; the log's ``ttl`` is their only bound.
"""

from __future__ import annotations

from collections.abc import Sequence

from integration_status.protocols import DeliveryLog

__all__ = ["admit_delivery", "replay_ttl_for", "within_window"]


def replay_ttl_for(replay_ttl: float, tolerance: float) -> float:
    """How long keys live: ``replay_ttl``, but never less than the ``2 * tolerance`` a signed timestamp spans.

    >>> replay_ttl_for(86_400, 300), replay_ttl_for(60, 300)
    (86400, 600)
    """
    return max(replay_ttl, 2 * tolerance)


def within_window(sent_at: float | None, *, now: float, ttl: float, tolerance: float) -> bool:
    """Whether a delivery signed at ``sent_at`` is young enough for the log to have remembered its first
    acceptance (``None``: the delivery carries no signed time, and only the log can tell)."""
    if sent_at is None:
        return True
    return now - ttl + tolerance < sent_at <= now + tolerance


async def admit_delivery(
    deliveries: DeliveryLog,
    keys: Sequence[str],
    *,
    ttl: float,
    now: float,
    tolerance: float,
    sent_at: float | None = None,
) -> tuple[str, ...] | None:
    """Record a verified delivery's ``keys`` (signed content first); the keys it wrote, or None when it is a
    replay (then the signed-content key was already there and nothing was written, or its send time is outside
    the window the log covers)."""
    ttl = replay_ttl_for(ttl, tolerance)
    if not keys or not within_window(sent_at, now=now, ttl=ttl, tolerance=tolerance):
        return None
    # Keys up to the first remembered one are recorded, in order: the signed content first, so a replay
    # (its content remembered) writes nothing. New content under a known delivery id is a re-signed retry
    # (Sanity): its content key stays, so a replay of this very retry is caught by the first check alone.
    first_seen_all = getattr(deliveries, "first_seen_all", None)
    if first_seen_all is not None:  # one step (one round trip to a shared log)
        fresh: int = await first_seen_all(keys, ttl)
        return tuple(keys) if fresh == len(keys) else None
    for key in keys:
        if not await deliveries.first_seen(key, ttl):
            return None
    return tuple(keys)
