"""The demo: simulated providers whose state changes over time, and the server behind ``integration-status demo``.

The simulated providers are a door of their own, for trying the endpoints and the status bar without any
provider account::

    service = StatusService(connections=..., adapters=simulated_adapters(World()))

``build_service`` and ``build_app`` (the demo's own service and Starlette app) need the ``[demo]`` extra and are
imported on first use.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from integration_status._lazy import lazy_door as _lazy_door

if _TYPE_CHECKING:
    from integration_status.demo.server import build_app, build_service
    from integration_status.demo.simulated import Activity, SimulatedAdapter, World, simulated_adapters

__all__ = ["Activity", "SimulatedAdapter", "World", "build_app", "build_service", "simulated_adapters"]

_WHERE = {
    "Activity": "simulated",
    "SimulatedAdapter": "simulated",
    "World": "simulated",
    "build_app": "server",
    "build_service": "server",
    "simulated_adapters": "simulated",
}

__getattr__, __dir__ = _lazy_door(__name__, globals(), _WHERE)
