"""The app the start-during-an-outage test runs as real uvicorn workers (``uvicorn tests.e2e.outage_app:app
--workers 2``): the simulated providers on the engine the environment names (``INTEGRATION_STATUS_REDIS_URL``,
``INTEGRATION_STATUS_REDIS_PREFIX``), as a host configures it."""

from __future__ import annotations

from integration_status import StatusService, Viewer, allow_global_roles
from integration_status.backends import engine_from_env
from integration_status.demo import World, simulated_adapters
from integration_status.demo.server import DemoConnections
from integration_status.protocols import RequestInfo
from integration_status.web.starlette import create_app


async def authenticate(request: RequestInfo) -> Viewer | None:
    return Viewer(user_id=request.headers.get("x-user", "u1"), roles={"owner"})


service = StatusService(
    connections=DemoConnections(),
    adapters=simulated_adapters(World(seed=3)),
    authenticator=authenticate,
    authorizer=allow_global_roles,
    engine=engine_from_env(),
)
app = create_app(service)
