"""The ETag key every worker on one Redis and prefix shares, when the host configured none.

The first worker to start stores a random value under ``{prefix}:etag-key`` with ``SET NX`` (no expiry); every
worker, that one included, then reads whatever is stored and derives its key from it, so all of them compute
the same tags. Workers agree again each time their connection to Redis comes back (see
``RedisEngine.on_etag_key``), each offering the value it had: after a Redis restart that kept nothing, the first
worker back stores its value again and the others find it, and a worker that started while Redis was away (with
a key of its own meanwhile) takes the deployment's. Deleting the key rotates it for workers started afterwards
and for every worker whose connection comes back (restart them all to rotate at once: until then, workers
disagree and a client alternating between them gets 200s). The value is never logged.
"""

from __future__ import annotations

import secrets

from integration_status.backends._redis_base import Shared

__all__ = ["agree_on_etag_value"]


async def agree_on_etag_value(shared: Shared, offer: str | None = None) -> str:
    """The value the deployment's ETag key is derived from, agreed through Redis: ``offer`` (the value this
    worker had, if any; else a new random one) is stored unless one is there, and whatever is there is
    answered (see the module docstring)."""
    name = shared.key("etag-key")
    with shared.errors("agreeing on the ETag key"):
        await shared.client.set(name, offer or secrets.token_hex(32), nx=True)
        stored = await shared.client.get(name)
    if not stored:  # deleted between the two commands: this worker's candidate is as good as any
        return await agree_on_etag_value(shared, offer)
    return str(stored)
