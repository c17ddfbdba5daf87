"""integration-status inside a FastAPI app, with simulated providers.

    pip install 'integration-status[starlette,prometheus,demo]' fastapi
    python examples/fastapi_app.py            # then open http://127.0.0.1:8000/

A mounted app gets no lifespan events of its own, so the service's lifespan goes to the FastAPI app and the
mounted integration-status app is created with ``lifespan=False`` and ``prefix=""`` (the mount adds the path).
Prometheus metrics are served at /metrics (a route: the page's catch-all mount at / would hide a /metrics mount's
redirect to /metrics/).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from integration_status import (
    PROVIDERS,
    ProjectConnections,
    ProviderConnection,
    RequestInfo,
    StatusService,
    Viewer,
)
from integration_status.demo import World, simulated_adapters
from integration_status.observability import PrometheusMetrics
from integration_status.web import STATUS_BAR_DIR
from integration_status.web.starlette import create_app


async def connections(project_id: str) -> ProjectConnections | None:
    """Your storage: which providers a project links, and with which credentials (None: no such project)."""
    if project_id != "demo":
        return None
    return ProjectConnections(
        project_id="demo", providers={p: ProviderConnection(provider=p) for p in PROVIDERS}
    )


async def authenticate(request: RequestInfo) -> Viewer | None:
    """Demo authentication - replace with your own (session cookie, bearer token, ...).

    Trusts the X-User / X-Role headers, or user / role query parameters (EventSource cannot send headers).
    """
    role = request.headers.get("x-role") or request.query.get("role") or "owner"
    user = request.headers.get("x-user") or request.query.get("user") or "demo"
    if role not in {"owner", "admin", "member", "viewer"}:
        return None
    # The role is for the one project this example has: a global role alone opens no project.
    return Viewer(user_id=user, project_roles={"demo": {role}})


metrics = PrometheusMetrics()  # its own registry; scraped at /metrics
service = StatusService(
    connections=connections,
    adapters=simulated_adapters(World()),
    authenticator=authenticate,
    metrics=metrics,
)
app = FastAPI(lifespan=service.lifespan)
app.mount("/api/integrations", create_app(service, prefix="", lifespan=False))
app.add_route(
    "/metrics", metrics.asgi_app(), methods=["GET"]
)  # a route, not a mount: no redirect to /metrics/
app.mount("/", StaticFiles(directory=STATUS_BAR_DIR, html=True), name="status-bar")

if __name__ == "__main__":
    import uvicorn

    from integration_status.web.serving import uvicorn_options

    # Head and body deadlines, bounded head size, connections and requests (docs/operations.md, "Hardening").
    uvicorn.run(app, host="127.0.0.1", port=8000, **uvicorn_options())
