"""integration-status in a Starlette app, with simulated providers.

    pip install 'integration-status[starlette,prometheus,demo]'
    python examples/starlette_app.py          # then open http://127.0.0.1:8000/

The API is under /api/integrations (status, actions, events, webhooks/{provider}, openapi.json); the status
bar page is served under /status-bar/ and / redirects there. The page is not mounted at / itself: a catch-all
mount in the same router would answer the API's wrong-method requests (404/405 with ``Allow: GET, HEAD``)
instead of the API routes' own 405 with ``Allow: POST``. Prometheus metrics are served at /metrics.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse
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


async def index(request: Request) -> RedirectResponse:
    """The status bar page (its scripts and styles are relative to it)."""
    return RedirectResponse("/status-bar/?projectId=demo")


app = create_app(service)  # runs the service's lifespan with the app
app.add_route("/", index, methods=["GET"])
app.add_route(
    "/metrics", metrics.asgi_app(), methods=["GET"]
)  # a route, not a mount: no redirect to /metrics/
app.mount("/status-bar", StaticFiles(directory=STATUS_BAR_DIR, html=True), name="status-bar")

if __name__ == "__main__":
    import uvicorn

    from integration_status.web.serving import uvicorn_options

    # Head and body deadlines, bounded head size, connections and requests (docs/operations.md, "Hardening").
    uvicorn.run(app, host="127.0.0.1", port=8000, **uvicorn_options())
