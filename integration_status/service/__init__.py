"""The service layer: the :class:`StatusService` facade and the features only it uses.

- ``facade``: :class:`StatusService`, the object a host builds once.
- ``render``: the viewer's envelopes, ETags and ``status:update`` frames (one render cache, owned by the service).
- ``actions``: the quick-action pipeline.
- ``streams``: the event streams (subscription, snapshot, replay, dedup, caps, heartbeats).
- ``webhooks``: signed webhook ingestion.
- ``settings``: the tunables.

Hosts import these names from :mod:`integration_status`.
"""

from integration_status.service.facade import StatusService
from integration_status.service.render import StatusResult
from integration_status.service.settings import Settings

__all__ = ["Settings", "StatusResult", "StatusService"]
