"""docs/http-api.md names only endpoints, status codes and headers that the OpenAPI document has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "http-api.md"
PREFIX = "/api/integrations"


def sections() -> dict[tuple[str, str], str]:
    """(method, path) -> the text of its ``### METHOD /path`` section."""
    parts = re.split(r"^### (GET|POST) (\S+)\s*$", DOC.read_text(encoding="utf-8"), flags=re.M)
    return {(parts[i].lower(), parts[i + 1]): parts[i + 2] for i in range(1, len(parts) - 1, 3)}


def named_headers(text: str, label: str) -> set[str]:
    line = next((ln for ln in text.splitlines() if ln.startswith(f"{label}:")), "")
    return set(re.findall(r"`([A-Za-z0-9-]+)`", line))


def resolve(doc: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in obj:
        node: Any = doc
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


@pytest.fixture
def document() -> dict[str, Any]:
    try:
        from integration_status.web.openapi import openapi_document
    except ImportError:
        pytest.skip("integration_status.web.openapi is not in this tree yet")
    return openapi_document(prefix=PREFIX)


def test_sections_are_found() -> None:
    """The page documents the six endpoints, each with a status table."""
    found = sections()
    assert set(found) == {
        ("get", "/status"),
        ("post", "/actions"),
        ("get", "/events"),
        ("post", "/webhooks/{provider}"),
        ("get", "/health"),
        ("get", "/openapi.json"),
    }
    for text in found.values():
        assert re.search(r"^\| \d{3} \|", text, re.M)


def test_every_documented_endpoint_status_and_header_is_in_the_openapi_document(
    document: dict[str, Any],
) -> None:
    """Each documented endpoint, status code, request header and response header exists in openapi.json."""
    for (method, path), text in sections().items():
        operation = document["paths"].get(PREFIX + path, {}).get(method)
        assert operation is not None, f"{method.upper()} {path} is not in the OpenAPI document"
        codes = set(re.findall(r"^\| (\d{3}) \|", text, re.M))
        assert codes <= set(operation["responses"]), f"{path}: {sorted(codes - set(operation['responses']))}"
        params = {
            resolve(document, p)["name"].lower()
            for p in operation.get("parameters", [])
            if resolve(document, p)["in"] == "header"
        }
        for header in named_headers(text, "Request headers"):
            assert header.lower() in params, f"{path}: request header {header} not documented in OpenAPI"
        answered = {
            name.lower()
            for response in operation["responses"].values()
            for name in resolve(document, response).get("headers", {})
        }
        for header in named_headers(text, "Response headers"):
            assert header.lower() in answered, f"{path}: response header {header} not in OpenAPI"
