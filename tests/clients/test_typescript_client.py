"""The TypeScript client (clients/typescript): its declared types match the JSON contract, the page serves the
same client module, and the declarations type-check (with tsc) against JSON the real endpoints answered."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from integration_status.demo.server import build_app
from tests.e2e.conftest import serve

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "typescript"
DTS = CLIENT / "integration-status.d.ts"
STATIC = ROOT / "integration_status" / "web" / "static"
#: Declared interface -> OpenAPI component schema, where the names differ.
SCHEMA_NAMES = {"ApiError": "Error"}
PRIMITIVES = {"string": str, "number": (int, float), "boolean": bool}


# --- a small reader for the declaration file ----------------------------------------------------------------


def declarations() -> tuple[dict[str, dict[str, tuple[str, bool]]], dict[str, str]]:
    """(interfaces: name -> field -> (type, required), type aliases: name -> type expression)."""
    text = re.sub(r"//[^\n]*", "", DTS.read_text())
    interfaces: dict[str, dict[str, tuple[str, bool]]] = {}
    for name, body in re.findall(r"export interface (\w+)(?: extends [\w, ]+)? \{(.*?)\n\}", text, re.S):
        fields: dict[str, tuple[str, bool]] = {}
        for field, optional, kind in re.findall(r"^\s+(\w+)(\??): ([^;(]+);", body, re.M):
            fields[field] = (kind.strip(), not optional)
        interfaces[name] = fields
    aliases = {
        name: " ".join(kind.split()) for name, kind in re.findall(r"export type (\w+) =\s*(.*?);", text, re.S)
    }
    return interfaces, aliases


def literals(kind: str, aliases: dict[str, str]) -> set[str] | None:
    """The string literals of a union type (expanding aliases), or None when it is not one."""
    out: set[str] = set()
    for part in (p.strip() for p in kind.strip("| ").split("|")):
        if part.startswith('"'):
            out.add(part.strip('"'))
        elif part in aliases:
            inner = literals(aliases[part], aliases)
            if inner is None:
                return None
            out |= inner
        else:
            return None
    return out


def check(value: Any, kind: str, where: str, decl: tuple[dict[str, Any], dict[str, str]]) -> None:
    """Assert that JSON ``value`` has the declared TypeScript type ``kind``."""
    interfaces, aliases = decl
    kind = kind.strip()
    if kind.endswith("[]"):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            check(item, kind[:-2], f"{where}[{i}]", decl)
        return
    if kind == "unknown":
        return
    if kind == "true":
        assert value is True, where
        return
    names = literals(kind, aliases)
    if names is not None:
        assert value in names, f"{where}: {value!r} not in {sorted(names)}"
        return
    if kind in PRIMITIVES:
        assert isinstance(value, PRIMITIVES[kind]), where
        assert kind != "number" or not isinstance(value, bool), where
        return
    if kind in aliases:  # a union of interfaces discriminated by "type"
        options = [p.strip() for p in aliases[kind].strip("| ").split("|")]
        matching = [o for o in options if interfaces[o].get("type", ("",))[0].strip('"') == value.get("type")]
        assert len(matching) == 1, f"{where}: no {kind} member for type {value.get('type')!r}"
        check(value, matching[0], where, decl)
        return
    fields = interfaces[kind]
    assert isinstance(value, dict), where
    assert set(value) <= set(fields), (
        f"{where}: undeclared fields {sorted(set(value) - set(fields))} in {kind}"
    )
    for field, (field_kind, required) in fields.items():
        if field in value:
            assert value[field] is not None, f"{where}.{field}: null (optional fields are omitted)"
            check(value[field], field_kind, f"{where}.{field}", decl)
        else:
            assert not required, f"{where}: required field {field} of {kind} missing"


# --- JSON from the real endpoints ---------------------------------------------------------------------------


async def endpoint_samples() -> list[tuple[str, Any]]:
    """(declared type, JSON) pairs answered by the demo server's real endpoints, over HTTP on loopback."""
    samples: list[tuple[str, Any]] = []
    app = build_app(deploy_seconds=0.2)
    async with serve(app) as base, httpx.AsyncClient(base_url=base + "/api/integrations") as client:
        for role in ("owner", "member", "viewer"):
            r = await client.get("/status", params={"projectId": "demo"}, headers={"X-Role": role})
            samples.append(("StatusEnvelope", r.json()))
        samples.append(
            ("StatusEnvelope", (await client.get("/status", params={"projectId": "empty"})).json())
        )
        for params in ({}, {"projectId": "nope"}):
            r = await client.get("/status", params=params)
            assert r.status_code in {400, 404}
            samples.append(("ErrorResponse", r.json()))
        samples.append(("ErrorResponse", (await client.get("/status", headers={"X-Role": "nobody"})).json()))

        async def act(action: str, provider: str = "vercel", key: str | None = "k", **headers: str) -> Any:
            sent = {"Idempotency-Key": f"{key}-{action}"} if key else {}
            r = await client.post(
                "/actions",
                json={"projectId": "demo", "provider": provider, "action": action},
                headers={**sent, **headers},
            )
            return r.json()

        events: list[Any] = []
        first_event, finished = anyio.Event(), anyio.Event()

        async def listen() -> None:
            async with client.stream("GET", "/events", params={"projectId": "demo"}) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        events.append(json.loads(line[5:]))
                        first_event.set()
                        if events[-1]["type"] == "deploy:finished":
                            finished.set()
                            return

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            with anyio.fail_after(10):
                await first_event.wait()
            samples.append(("ActionResponse", await act("deploy")))
            samples.append(("ActionResponse", await act("open-studio", "sanity")))
            samples.append(("ActionResponse", await act("deploy", key=None)))
            samples.append(("ActionResponse", await act("deploy", key="v", **{"X-Role": "viewer"})))
            service = app.state.service
            await service.publish(
                "demo",
                {
                    "type": "github:push",
                    "projectId": "demo",
                    "branch": "main",
                    "sha": "a" * 40,
                    "ts": service.now_ms(),
                },
            )
            await service.publish(
                "demo", {"type": "sanity:webhook", "projectId": "demo", "count": 2, "ts": service.now_ms()}
            )
            with anyio.fail_after(10):
                await finished.wait()
            tg.cancel_scope.cancel()
    samples.extend(("IntegrationEvent", event) for event in events)
    kinds = {e["type"] for e in events}
    assert {"status:update", "deploy:started", "deploy:finished", "github:push", "sanity:webhook"} <= kinds
    return samples


@pytest.fixture(scope="module")
def samples() -> list[tuple[str, Any]]:
    return anyio.run(endpoint_samples, backend="asyncio")


# --- the tests ----------------------------------------------------------------------------------------------


def test_page_serves_the_same_client_module() -> None:
    """The status bar page's integration-status.js is byte-identical to the published client."""
    assert (STATIC / "integration-status.js").read_bytes() == (CLIENT / "integration-status.js").read_bytes()


def test_endpoint_json_conforms_to_declared_types(samples: list[tuple[str, Any]]) -> None:
    """Every body and event the real endpoints answer has the declared fields, literals and optionality."""
    decl = declarations()
    assert len(samples) >= 15
    for i, (kind, value) in enumerate(samples):
        check(value, kind, f"sample {i} ({kind})", decl)


def test_declared_types_match_the_openapi_document() -> None:
    """Each declared interface has the same fields, required fields and enums as the OpenAPI schema."""
    try:
        from integration_status.web.openapi import openapi_document
    except ImportError:
        pytest.skip(
            "integration_status.web.openapi is not there yet; the endpoint JSON test covers the contract"
        )
    schemas = openapi_document(prefix="/api/integrations")["components"]["schemas"]
    interfaces, aliases = declarations()
    compared = 0
    for name, fields in interfaces.items():
        schema = schemas.get(SCHEMA_NAMES.get(name, name))
        if schema is None:
            continue
        compared += 1
        props = schema["properties"]
        assert set(fields) == set(props), f"{name}: fields differ from the OpenAPI schema"
        required = {f for f, (_, req) in fields.items() if req}
        assert required == set(schema.get("required", [])), f"{name}: required fields differ"
        for field, (kind, _) in fields.items():
            prop = props[field]
            if "$ref" in prop:
                prop = schemas[prop["$ref"].rsplit("/", 1)[1]]
            names = literals(kind, aliases)
            expected = prop.get("enum") or ([prop["const"]] if isinstance(prop.get("const"), str) else None)
            if names is not None and expected is not None:
                assert names == set(expected), f"{name}.{field}: {sorted(names)} != {sorted(expected)}"
    assert compared >= 12
    union = {p.strip() for p in aliases["IntegrationEvent"].split("|") if p.strip()}
    assert union == {ref["$ref"].rsplit("/", 1)[1] for ref in schemas["IntegrationEvent"]["oneOf"]}


def _tsc() -> list[str] | None:
    """The tsc pinned by clients/typescript/package-lock.json, installed with `npm ci` when missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    tsc = CLIENT / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT, check=True, capture_output=True, timeout=300
        )
    return [node, str(tsc)]


def test_declarations_type_check_against_endpoint_json(
    samples: list[tuple[str, Any]], tmp_path: Path
) -> None:
    """tsc (strict, exact optional types) accepts the client's usage and the real JSON as typed literals."""
    tsc = _tsc()
    if tsc is None:
        reason = "node/npm not found: the tsc type-check needs Node.js (apt-get install nodejs npm)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    lines = [f'import type * as T from "{(CLIENT / "integration-status.js").as_posix()}";']
    for i, (kind, value) in enumerate(samples):
        lines.append(f"export const sample{i}: T.{kind} = {json.dumps(value, ensure_ascii=False)};")
    (tmp_path / "samples.ts").write_text("\n".join(lines) + "\n")
    # A deliberately wrong literal proves the check can fail: an extra field is an error under strict typing.
    (tmp_path / "wrong.ts").write_text(
        f'import type * as T from "{(CLIENT / "integration-status.js").as_posix()}";\n'
        'export const bad: T.Action = {id: "deploy", label: "Deploy", can: true, extra: 1};\n'
    )
    for files, ok in ((["samples.ts"], True), (["wrong.ts"], False)):
        config = {
            "extends": (CLIENT / "tsconfig.json").as_posix(),
            "files": [DTS.as_posix(), (CLIENT / "contract-check.ts").as_posix(), *files],
        }
        (tmp_path / "tsconfig.json").write_text(json.dumps(config))
        result = subprocess.run(
            [*tsc, "-p", str(tmp_path / "tsconfig.json")], capture_output=True, text=True, timeout=120
        )
        assert (result.returncode == 0) is ok, result.stdout + result.stderr
