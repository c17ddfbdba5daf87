"""integration-status in a Flask app, with simulated providers.

    pip install 'integration-status[flask,prometheus]'
    python examples/flask_app.py              # then open http://127.0.0.1:8000/

The extension runs the async service on its own event loop thread (an anyio blocking portal), started on the
first request and stopped at exit. Each open event stream holds one server thread: serve with threads
(``flask run`` and this dev server do; in production e.g. ``gunicorn --threads 32 examples.flask_app:app``).
Prometheus metrics are served at /metrics.
"""

from __future__ import annotations

from flask import Flask, redirect
from flask.typing import ResponseReturnValue

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
from integration_status.web.flask import IntegrationStatus


async def connections(project_id: str) -> ProjectConnections | None:
    """Your storage: which providers a project links, and with which credentials (None: no such project)."""
    if project_id != "demo":
        return None
    return ProjectConnections(
        project_id="demo", providers={p: ProviderConnection(provider=p) for p in PROVIDERS}
    )


async def authenticate(request: RequestInfo) -> Viewer | None:
    """Demo authentication - replace with your own (Flask-Login's user, a bearer token, ...).

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
app = Flask(__name__, static_folder=STATUS_BAR_DIR, static_url_path="/static")
app.config["INTEGRATION_STATUS_PREFIX"] = "/api/integrations"  # the default
integration_status_ext = IntegrationStatus(app, service=service)
app.add_url_rule("/metrics", view_func=metrics.flask_view())


@app.get("/")
def index() -> ResponseReturnValue:
    """The status bar page (its scripts and styles are relative to it)."""
    return redirect("/static/index.html?projectId=demo")


if __name__ == "__main__":
    # The development server only: it has no head or body deadlines. In production run gunicorn with the
    # settings in docs/operations.md ("Hardening"), behind a proxy that bounds slow clients.
    app.run(host="127.0.0.1", port=8000, threaded=True)
