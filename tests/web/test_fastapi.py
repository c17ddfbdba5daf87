"""FastAPI helpers: the app's own auth dependency authenticates the endpoints (overrides apply), and the
library's operations appear in the app's OpenAPI document."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from integration_status import ConfigurationError, StatusService, Viewer
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections
from integration_status.web.fastapi import (
    COMPONENT_PREFIX,
    TAG,
    DependencyAuthenticator,
    include,
    merge_openapi,
)
from integration_status.web.starlette import create_app

with warnings.catch_warnings():  # Starlette's TestClient warns about httpx on import
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

STATUS = "/api/integrations/status"
bearer = HTTPBearer(auto_error=True)
USERS = {"tok-alice": "alice"}
exits: list[str] = []


async def db_session() -> AsyncIterator[str]:
    """A yield dependency, as apps use for a database session."""
    yield "session"
    exits.append("session closed")


async def current_user(
    credentials: HTTPAuthorizationCredentials = Depends(bearer),  # noqa: B008
    session: str = Depends(db_session),
) -> str:
    user = USERS.get(credentials.credentials)
    if user is None:
        raise HTTPException(status_code=401, detail="bad token")
    return user


def to_viewer(user: str) -> Viewer:
    return Viewer(user_id=user, project_roles={"p1": {"owner"}})


def build(authenticator: DependencyAuthenticator | None = None) -> tuple[FastAPI, StatusService]:
    service = StatusService(
        connections=StaticConnections.linked("p1", "github"),
        adapters=[ScriptedAdapter("github")],
        authenticator=authenticator or DependencyAuthenticator(current_user, viewer=to_viewer),
        clock=FakeClock(),
    )
    app = FastAPI()

    @app.get("/me")
    async def me(user: str = Depends(current_user)) -> dict[str, str]:
        return {"user": user}

    include(app, service)
    return app, service


@pytest.fixture
def client() -> Iterator[TestClient]:
    app, _ = build()
    with TestClient(app) as c:  # runs the lifespan: the service starts with the app
        yield c


def test_the_apps_dependency_authenticates_the_endpoints(client: TestClient) -> None:
    """A valid bearer token reaches the status; the yield dependency's exit code ran after authentication."""
    exits.clear()
    answer = client.get(STATUS, params={"projectId": "p1"}, headers={"Authorization": "Bearer tok-alice"})
    assert answer.status_code == 200
    assert {i["key"]: i["status"] for i in answer.json()["items"]}["github"] == "connected"
    assert exits == ["session closed"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}])
def test_a_refusing_dependency_is_the_endpoints_own_401(client: TestClient, headers: dict[str, str]) -> None:
    """Missing, unknown or malformed credentials (the dependency's 401/403) answer the library's 401."""
    answer = client.get(STATUS, params={"projectId": "p1"}, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"


def test_dependency_overrides_apply_to_the_endpoints() -> None:
    """``app.dependency_overrides[current_user]`` authenticates the library's endpoints as it does the app's."""
    app, _ = build()
    app.dependency_overrides[current_user] = lambda: "alice"
    with TestClient(app) as client:
        assert client.get("/me").json() == {"user": "alice"}
        assert client.get(STATUS, params={"projectId": "p1"}).status_code == 200
        assert client.get(STATUS, params={"projectId": "p2"}).status_code == 404


def test_a_dependency_that_returns_no_viewer_is_a_configuration_error() -> None:
    """Forgetting ``viewer=`` for a dependency that returns the app's own user object fails loudly."""
    app, _ = build(DependencyAuthenticator(current_user))
    with TestClient(app, raise_server_exceptions=True) as client, pytest.raises(ConfigurationError) as info:
        client.get(STATUS, params={"projectId": "p1"}, headers={"Authorization": "Bearer tok-alice"})
    assert "pass viewer=" in str(info.value)


def test_header_dependencies_that_are_missing_mean_unauthenticated() -> None:
    """A dependency whose required header is absent (a validation error, not an exception) is a 401."""

    async def by_header(x_user: str = Header()) -> Viewer:
        return Viewer(user_id=x_user, roles={"owner"}, project_roles={"p1": {"owner"}})

    app, _ = build(DependencyAuthenticator(by_header))
    with TestClient(app) as client:
        assert client.get(STATUS, params={"projectId": "p1"}).status_code == 401
        assert client.get(STATUS, params={"projectId": "p1"}, headers={"X-User": "bob"}).status_code == 200


def test_the_operations_are_in_the_apps_openapi_document(client: TestClient) -> None:
    """``/openapi.json`` (what ``/docs`` shows) lists the app's routes and the library's, tagged, with the
    library's components renamed and every reference resolving."""
    document = client.get("/openapi.json").json()
    assert "/me" in document["paths"]
    ours = {path for path in document["paths"] if path.startswith("/api/integrations/")}
    assert ours >= {
        STATUS,
        "/api/integrations/actions",
        "/api/integrations/events",
        "/api/integrations/health",
    }
    assert document["paths"][STATUS]["get"]["tags"] == [TAG]
    schemas = document["components"]["schemas"]
    assert f"{COMPONENT_PREFIX}StatusEnvelope" in schemas
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    for ref in refs:
        _, _, kind, name = ref.split("/", 3)
        assert name in document["components"][kind], ref
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json() == document  # merged once, not again on every call


def test_a_mounted_app_finds_the_overrides_through_app_and_merges_its_document() -> None:
    """Mounted as a sub-application, the authenticator given the app (after the fact: the app needs the service
    first) still applies the overrides, and ``merge_openapi`` lists the operations under the mount path."""
    authenticator = DependencyAuthenticator(current_user, viewer=to_viewer)
    service = StatusService(
        connections=StaticConnections.linked("p1", "github"),
        adapters=[ScriptedAdapter("github")],
        authenticator=authenticator,
        clock=FakeClock(),
    )
    app = FastAPI(lifespan=service.lifespan)
    authenticator.app = app
    app.mount("/status-api", create_app(service, prefix="", lifespan=False))
    merge_openapi(app, prefix="/status-api")
    app.dependency_overrides[current_user] = lambda: "alice"
    with TestClient(app) as client:
        assert client.get("/status-api/status", params={"projectId": "p1"}).status_code == 200
        assert "/status-api/status" in client.get("/openapi.json").json()["paths"]
        app.dependency_overrides.clear()
        assert client.get("/status-api/status", params={"projectId": "p1"}).status_code == 401
