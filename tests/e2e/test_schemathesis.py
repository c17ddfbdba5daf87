"""Schemathesis against the project's own OpenAPI document, served by the Starlette and Flask examples: the
document is loaded from each app, and every operation gets a bounded number of generated requests (valid and
invalid) whose answers must be no 5xx and conform to the document (status code, content type, headers, body).

The event stream is included: schemathesis reads an event stream until ``max-stream-events`` events have
arrived, so with 1 it checks the headers and the first frame (the snapshot, or the ``retry:`` refusal) and
closes the stream, which the server notices as a disconnect. The error answers of ``/events`` (400/401/404)
are plain JSON and checked like any other.

Which checks: the five that say "the answer conforms" (the CI contract), plus the method checks (a wrong
method gets a 405 with a correct ``Allow``). Not run: ``positive_data_acceptance``/``negative_data_rejection``,
which judge how exactly the document describes the *accepted inputs*. They found that the document allowed any
``Idempotency-Key``, any action id and control characters in ``projectId`` (all fixed in ``web/openapi.py``);
what remains is ``projectId``'s rule, ``str.isprintable``, which excludes unassigned and private-use code points
and so has no portable JSON Schema pattern (a schema-valid ``projectId`` such as ``"\\U000f0000"`` is a 400).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (  # the registry's checks, loaded on first access
    allow_header_conformance,
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.python import asgi as schemathesis_asgi

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOCUMENT = "/api/integrations/openapi.json"
#: One event is enough to check a stream (headers and the first frame); each call has a hard time limit.
CONFIG = {"max-stream-events": 1, "request-timeout": 5}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,
    allow_header_conformance,
]
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
#: The examples trust X-Role / X-User. Most requests carry a known role; some carry none (the example's
#: default viewer) and some an unknown role, which the authenticator refuses: the documented 401.
VIEWERS: list[dict[str, str]] = [
    {"X-Role": "owner", "X-User": "ana"},
    {"X-Role": "admin", "X-User": "ben"},
    {"X-Role": "member", "X-User": "cho"},
    {"X-Role": "viewer", "X-User": "dee"},
    {"X-Role": "owner", "X-User": "eli"},
    {},
    {"X-Role": "intruder", "X-User": "eve"},
]


def flatmap_case(context: schemathesis.HookContext, case: schemathesis.Case) -> st.SearchStrategy[Any]:
    """Each generated case gets a viewer (its X-Role / X-User headers); a valid case names the example's one
    project, ``demo``, three times in four (a generated id would almost never exist, so every answer would be a
    404), leaving the rest to the generated id."""
    valid = case.meta is None or case.meta.generation.mode is schemathesis.GenerationMode.POSITIVE
    # Built from the generated values each time: a draw never sees what an earlier draw set.
    headers, query, body = dict(case.headers or {}), case.query, case.body

    def build(viewer: dict[str, str], demo: bool) -> schemathesis.Case:
        case.headers = {**headers, **viewer}
        case.query, case.body = query, body
        if demo and valid:
            if query and "projectId" in query:
                case.query = {**query, "projectId": "demo"}
            if isinstance(body, dict) and "projectId" in body:
                case.body = {**body, "projectId": "demo"}
        return case

    return st.builds(build, st.sampled_from(VIEWERS), st.sampled_from([True, True, True, False]))


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path, as a fresh module (a fresh service)."""
    spec = importlib.util.spec_from_file_location(f"schemathesis_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STARLETTE = load("starlette_app")
FLASK = load("flask_app")
# Loading through the ASGI app runs its lifespan (schemathesis keeps it running, on its own event loop thread,
# for the calls to come). Stopped again at once, so that collecting this module leaves nothing running: the
# first generated call starts it anew, and the fixture below stops it after the last one.
STARLETTE_SCHEMA = schemathesis.openapi.from_asgi(
    DOCUMENT, STARLETTE.app, config=schemathesis.Config.from_dict(CONFIG)
)
schemathesis_asgi.shutdown_lifespans()
FLASK_SCHEMA = schemathesis.openapi.from_wsgi(
    DOCUMENT, FLASK.app, config=schemathesis.Config.from_dict(CONFIG)
)
STARLETTE_SCHEMA.hook(flatmap_case)
FLASK_SCHEMA.hook(flatmap_case)


@pytest.fixture(scope="module", autouse=True)
def _stop_services() -> Any:
    """After the module: the Starlette app's lifespan ends and the Flask extension stops its event loop."""
    yield
    schemathesis_asgi.shutdown_lifespans()
    FLASK.integration_status_ext.close()
    assert not STARLETTE.service.running
    assert not FLASK.service.running


def test_documents_are_the_served_ones() -> None:
    """Both examples serve the document with every endpoint, under the prefix they mount."""
    for schema in (STARLETTE_SCHEMA, FLASK_SCHEMA):
        paths = set(schema.raw_schema["paths"])
        assert {f"/api/integrations/{name}" for name in ("status", "actions", "events", "health")} <= paths


@STARLETTE_SCHEMA.parametrize()
@SETTINGS
def test_starlette_example_conforms(case: schemathesis.Case) -> None:
    """Starlette example: no generated request gets a 5xx or an answer the document does not describe."""
    case.call_and_validate(checks=CHECKS)


@FLASK_SCHEMA.parametrize()
@SETTINGS
def test_flask_example_conforms(case: schemathesis.Case) -> None:
    """Flask example: no generated request gets a 5xx or an answer the document does not describe."""
    case.call_and_validate(checks=CHECKS)
