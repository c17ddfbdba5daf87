"""The ETag key every worker on one Redis and prefix shares, when the host configured none.

The first worker to start stores a random value under ``{prefix}:etag-key`` with ``SET NX`` (no expiry); every
worker, that one included, then reads whatever is stored and derives its key from it, so all of them compute
the same tags. Deleting the key rotates it for workers started afterwards (restart them all: until then, workers
disagree and a client alternating between them gets 200s). The value is never logged.
"""

from __future__ import annotations

import secrets

from integration_status.backends._redis_base import Shared
from integration_status.core.etag import etag_key

__all__ = ["shared_etag_key"]


async def shared_etag_key(shared: Shared) -> bytes:
    """The deployment's ETag key, agreed through Redis (see the module docstring)."""
    name = shared.key("etag-key")
    with shared.errors("agreeing on the ETag key"):
        await shared.client.set(name, secrets.token_hex(32), nx=True)
        stored = await shared.client.get(name)
    if not stored:  # deleted between the two commands: this worker's candidate is as good as any
        return await shared_etag_key(shared)
    return etag_key(str(stored))
