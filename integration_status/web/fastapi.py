"""FastAPI helpers (extra ``[fastapi]``): reuse the app's own auth dependency, list the endpoints in ``/docs``.

::

    async def current_user(token: str = Depends(bearer)) -> User: ...   # the app's own dependency

    service = StatusService(
        connections=resolver,
        adapters=adapters,
        authenticator=DependencyAuthenticator(current_user, viewer=to_viewer),
    )
    app = FastAPI()
    include(app, service)        # routes under /api/integrations, the service's lifespan, and /docs

:class:`DependencyAuthenticator` runs a FastAPI dependency with FastAPI's own resolver, so sub-dependencies,
security schemes and ``app.dependency_overrides`` (in the host's tests) apply exactly as on the app's routes.
:func:`include` adds the endpoints to the app's router (not as a mounted sub-app, so the overrides and the
app's exception handlers and middleware see them), chains the service's lifespan into the app's, and merges the
library's OpenAPI operations into the app's document (:func:`merge_openapi`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

try:
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.dependencies.utils import get_dependant, solve_dependencies
    from starlette.requests import Request
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "integration_status.web.fastapi needs FastAPI: pip install 'integration-status[fastapi]'"
    ) from exc

from integration_status.exceptions import ConfigurationError
from integration_status.protocols import RequestInfo, Viewer
from integration_status.service.facade import StatusService
from integration_status.web.openapi import openapi_document
from integration_status.web.starlette import DEFAULT_PREFIX, routes

__all__ = ["COMPONENT_PREFIX", "DEFAULT_PREFIX", "TAG", "DependencyAuthenticator", "include", "merge_openapi"]

#: The tag the library's operations carry in the host's document.
TAG: Final = "integration-status"
#: The library's component names get this prefix in the host's document, so they cannot clash with its own.
COMPONENT_PREFIX: Final = "IntegrationStatus"
#: A dependency's answers that mean "not authenticated" (the endpoints answer their own 401).
_UNAUTHENTICATED: Final = frozenset({401, 403})
#: The request-scope exit stacks FastAPI's resolver expects (its own routes set them).
_STACK_KEYS: Final = ("fastapi_inner_astack", "fastapi_function_astack")


class DependencyAuthenticator:
    """An :class:`~integration_status.Authenticator` that resolves a FastAPI dependency for each request.

    ``dependency`` is what the app passes to ``Depends(...)``: it may take the request, headers, security
    schemes and other dependencies, and may ``yield`` (its exit code runs once authentication is done). It
    returns a :class:`Viewer`, or anything ``viewer`` turns into one (the app's own user object, say), or None.
    A dependency that raises ``HTTPException`` 401 or 403, or whose parameters are missing, means "not
    authenticated": the endpoints answer 401 in their own error object.

    ``app.dependency_overrides`` apply: the app is the request's own (the endpoints added by :func:`include`),
    or ``app`` when given (needed when the endpoints are mounted as a sub-application).
    """

    def __init__(
        self,
        dependency: Callable[..., Any],
        *,
        viewer: Callable[[Any], Viewer | Awaitable[Viewer | None] | None] | None = None,
        app: FastAPI | None = None,
    ) -> None:
        self.dependency = dependency
        self.app = app
        self._viewer = viewer

        def probe(value: Any = Depends(dependency)) -> Any:  # noqa: B008 - FastAPI's own idiom
            return value

        self._dependant = get_dependant(path="", call=probe)

    def __repr__(self) -> str:
        return f"DependencyAuthenticator({getattr(self.dependency, '__qualname__', self.dependency)!r})"

    async def __call__(self, request: RequestInfo) -> Viewer | None:
        raw = request.raw
        if not isinstance(raw, Request):
            raise ConfigurationError(
                "DependencyAuthenticator needs the endpoints served by Starlette or FastAPI"
            )
        overrides = self.app if self.app is not None else raw.scope.get("app")
        if not hasattr(overrides, "dependency_overrides"):
            overrides = None
        scope = raw.scope
        saved = {key: scope.get(key) for key in _STACK_KEYS}
        try:
            async with contextlib.AsyncExitStack() as stack:
                # FastAPI's own routes provide these exit stacks; here they close when authentication is done.
                scope.update(dict.fromkeys(_STACK_KEYS, stack))
                solved = await solve_dependencies(
                    request=raw,
                    dependant=self._dependant,
                    dependency_overrides_provider=overrides,
                    async_exit_stack=stack,
                    embed_body_fields=False,
                )
        except HTTPException as exc:
            if exc.status_code in _UNAUTHENTICATED:
                return None
            raise
        finally:
            for key, value in saved.items():
                if value is None:
                    scope.pop(key, None)
                else:
                    scope[key] = value
        if solved.errors:  # a required header, cookie or query parameter is missing or malformed
            return None
        value = solved.values["value"]
        if self._viewer is not None:
            value = self._viewer(value)
            if isinstance(value, Awaitable):
                value = await value
        if value is None or isinstance(value, Viewer):
            return value
        raise ConfigurationError(
            f"the authentication dependency returned a {type(value).__name__}, not a Viewer: pass viewer= to "
            "turn it into one"
        )


def include(
    app: FastAPI,
    service: StatusService,
    *,
    prefix: str = DEFAULT_PREFIX,
    lifespan: bool = True,
    openapi: bool = True,
) -> None:
    """Serve the endpoints from ``app`` under ``prefix``.

    The routes go into the app's own router, so ``app.dependency_overrides``, its middleware and exception
    handlers apply to them. ``lifespan=True`` starts and stops the service with the app (around the app's own
    lifespan); ``openapi=True`` lists the operations in the app's ``/openapi.json`` and ``/docs``.
    """
    prefix = prefix.rstrip("/")
    app.router.routes.extend(routes(service, prefix=prefix))
    if lifespan:
        inner = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def with_service(a: Any) -> AsyncIterator[Any]:
            async with service, inner(a) as state:
                yield state

        app.router.lifespan_context = with_service
    if openapi:
        merge_openapi(app, prefix=prefix)


def merge_openapi(app: FastAPI, *, prefix: str = DEFAULT_PREFIX) -> None:
    """Add the library's operations under ``prefix`` to ``app.openapi()`` (what ``/docs`` shows).

    Components are renamed with :data:`COMPONENT_PREFIX` (``Error`` becomes ``IntegrationStatusError``) and every
    operation is tagged :data:`TAG`. A path the app already documents raises ConfigurationError.
    """
    original = app.openapi
    merged: list[dict[str, Any]] = []  # the document already merged into (FastAPI caches it)

    def openapi() -> dict[str, Any]:
        schema: dict[str, Any] = original()
        if merged and merged[0] is schema:
            return schema
        ours = _renamed(openapi_document(prefix=prefix.rstrip("/")))
        clash = sorted(set(schema.get("paths", {})) & set(ours["paths"]))
        if clash:
            raise ConfigurationError(f"the app already documents {', '.join(clash)}")
        for operations in ours["paths"].values():
            for operation in operations.values():
                if isinstance(operation, dict) and "responses" in operation:
                    operation.setdefault("tags", [TAG])
        schema.setdefault("paths", {}).update(ours["paths"])
        components = schema.setdefault("components", {})
        for kind, entries in ours.get("components", {}).items():
            components.setdefault(kind, {}).update(entries)
        tags = schema.setdefault("tags", [])
        if not any(tag.get("name") == TAG for tag in tags):
            tags.append({"name": TAG, "description": "Provider connection status (integration-status)"})
        merged[:] = [schema]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _renamed(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every component name prefixed, ``$ref`` values included."""
    document = copy.deepcopy(document)
    names = {
        (kind, name): f"{COMPONENT_PREFIX}{name}"
        for kind, entries in document.get("components", {}).items()
        for name in entries
    }
    document["components"] = {
        kind: {names[(kind, name)]: value for name, value in entries.items()}
        for kind, entries in document.get("components", {}).items()
    }

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            out = {key: walk(value) for key, value in node.items()}
            ref = out.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                _, _, kind, name = ref.split("/", 3)
                out["$ref"] = f"#/components/{kind}/{names.get((kind, name), name)}"
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    result: dict[str, Any] = walk(document)
    return result
