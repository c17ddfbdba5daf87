"""The OpenAPI 3.1 document of the endpoints, served at ``{prefix}/openapi.json`` by both mounts.

It is built from plain data (JSON Schema 2020-12 inside OpenAPI 3.1): optional fields are left out of
``required`` and are never ``null``, as on the wire. The document is built once per prefix; every call returns
a fresh copy, so a caller may change what it gets without changing what others get.

>>> doc = openapi_document(prefix="/api/integrations")
>>> doc["openapi"], "/api/integrations/status" in doc["paths"]
('3.1.0', True)
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final

from integration_status.core.idempotency import MAX_KEY_LENGTH
from integration_status.models import EVENT_TYPES, PROBLEM_CODES, PROVIDERS, STATUSES
from integration_status.snapshot import PROVIDER_ACTIONS

__all__ = ["ERROR_CODES", "openapi_document", "openapi_json"]

#: Every ``error.code`` an endpoint answers with: request-level codes and the four provider codes.
ERROR_CODES: Final = (
    "invalid_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "idempotency_conflict",
    "idempotency_mismatch",
    "rate_limited",
    "oauth_revoked",
    "timeout",
    "unknown",
)
VERSION: Final = "0.1.0"
#: A project id: 1-200 printable characters. The pattern excludes the C0 and C1 controls and DEL, which are never
#: printable; the rest of ``str.isprintable`` (format, separator, private-use, unassigned) has no portable pattern.
PROJECT_ID: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$",
}

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: Json, required: tuple[str, ...] = (), *, closed: bool = True, **extra: Any) -> Json:
    out: Json = {"type": "object", "properties": properties, "required": list(required)}
    if closed:
        out["additionalProperties"] = False
    out.update(extra)
    return out


def _schemas() -> Json:
    ts = {"type": "integer", "minimum": 0, "description": "Epoch milliseconds."}
    project_id = PROJECT_ID
    return {
        "ProviderKey": {"type": "string", "enum": list(PROVIDERS)},
        "Problem": _obj(
            {
                "code": {"type": "string", "enum": list(PROBLEM_CODES)},
                "hint": {"type": "string", "description": "Short and actionable, e.g. 'Click to reconnect'."},
            },
            ("code",),
        ),
        "Action": _obj(
            {
                "id": {"type": "string", "minLength": 1, "examples": ["deploy"]},
                "label": {"type": "string", "minLength": 1, "examples": ["Deploy"]},
                "can": {"type": "boolean", "description": "Decided server-side for this viewer."},
                "reason": {"type": "string", "description": "Why not, when ``can`` is false."},
            },
            ("id", "label", "can"),
            description="An action the viewer's role never allows is omitted, not listed with can=false.",
        ),
        "IntegrationStatus": _obj(
            {
                "key": _ref("ProviderKey"),
                "status": {"type": "string", "enum": list(STATUSES)},
                "summary": {"type": "string", "examples": ["Linked to main · Last push 2m ago"]},
                "updatedAt": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the content last changed (UTC, with a zone), not when last checked.",
                },
                "stale": {
                    "type": "boolean",
                    "const": True,
                    "description": "Present (true) when served past its TTL because the provider failed.",
                },
                "problem": _ref("Problem"),
                "actions": {"type": "array", "items": _ref("Action")},
            },
            ("key", "status", "updatedAt"),
        ),
        "StatusEnvelope": _obj(
            {
                "projectId": project_id,
                "items": {
                    "type": "array",
                    "items": _ref("IntegrationStatus"),
                    "minItems": len(PROVIDERS),
                    "maxItems": len(PROVIDERS),
                    "description": "Always in the order " + ", ".join(PROVIDERS) + ".",
                },
                "hash": {"type": "string", "minLength": 1, "description": "The ETag value, unquoted."},
            },
            ("projectId", "items", "hash"),
        ),
        "ActionRequest": _obj(
            {
                "projectId": project_id,
                "provider": _ref("ProviderKey"),
                "action": {"type": "string", "examples": ["deploy", "push", "sync", "connect"]},
                "payload": {"description": "Action-specific data."},
            },
            ("projectId", "provider", "action"),
            # Each provider has its own actions: any other action id is a 400.
            allOf=[
                {
                    "if": {"properties": {"provider": {"const": provider}}, "required": ["provider"]},
                    "then": {"properties": {"action": {"enum": [a for a, _ in actions]}}},
                }
                for provider, actions in PROVIDER_ACTIONS.items()
            ],
        ),
        "Error": _obj(
            {
                "code": {"type": "string", "enum": list(ERROR_CODES)},
                "message": {"type": "string"},
                "hint": {"type": "string"},
                "retryAfter": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Seconds; equals Retry-After.",
                },
            },
            ("code", "message"),
        ),
        "ErrorResponse": _obj({"error": _ref("Error")}, ("error",)),
        "HealthCheck": _obj(
            {
                "name": {"type": "string", "examples": ["adapter_timeout_rate:github", "status_p95"]},
                "passed": {"type": "boolean"},
                "observed": {"type": "number", "description": "Omitted while there is nothing to measure."},
                "threshold": {"type": "number"},
                "samples": {"type": "integer", "minimum": 0},
                "detail": {"type": "string"},
            },
            ("name", "passed", "threshold", "samples"),
        ),
        "HealthReport": _obj(
            {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "windowSeconds": {"type": "number"},
                "checks": {"type": "array", "items": _ref("HealthCheck")},
            },
            ("status", "windowSeconds", "checks"),
        ),
        "Liveness": _obj(
            {"status": {"const": "ok"}},
            ("status",),
            description="The health answer for a caller not allowed the detailed checks.",
        ),
        "ActionResponse": _obj(
            {
                "success": {"type": "boolean"},
                "operationId": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Tracks progress in events.",
                },
                "url": {"type": "string", "description": "Where to go next (connect, open-studio)."},
                "error": _ref("Error"),
            },
            ("success",),
            closed=False,
            description="Success: operationId (200 done, 202 going on); failure: error. May carry more.",
            **{
                "if": {"properties": {"success": {"const": True}}},
                "then": {"required": ["operationId"], "not": {"required": ["error"]}},
                "else": {"required": ["error"]},
            },
        ),
        "WebhookResponse": _obj(
            {
                "ok": {"type": "boolean", "const": True},
                "duplicate": {"type": "boolean", "const": True, "description": "A replayed delivery."},
                "ignored": {
                    "type": "boolean",
                    "const": True,
                    "description": "Authentic, of a kind not used.",
                },
            },
            ("ok",),
        ),
        "DeployStartedEvent": _obj(
            {
                "type": {"const": "deploy:started"},
                "provider": {"const": "vercel"},
                "projectId": project_id,
                "operationId": {"type": "string"},
                "ts": ts,
            },
            ("type", "provider", "projectId", "operationId", "ts"),
        ),
        "DeployFinishedEvent": _obj(
            {
                "type": {"const": "deploy:finished"},
                "provider": {"const": "vercel"},
                "projectId": project_id,
                "success": {"type": "boolean"},
                "url": {"type": "string", "description": "Only for viewers allowed to open deployments."},
                "operationId": {"type": "string"},
                "ts": ts,
            },
            ("type", "provider", "projectId", "success", "ts"),
        ),
        "GithubPushEvent": _obj(
            {
                "type": {"const": "github:push"},
                "projectId": project_id,
                "branch": {"type": "string", "description": "Empty for viewers without repository access."},
                "sha": {"type": "string", "description": "Empty for viewers without repository access."},
                "ts": ts,
            },
            ("type", "projectId", "branch", "sha", "ts"),
        ),
        "SanityWebhookEvent": _obj(
            {
                "type": {"const": "sanity:webhook"},
                "projectId": project_id,
                "count": {"type": "integer"},
                "ts": ts,
            },
            ("type", "projectId", "count", "ts"),
        ),
        "StatusUpdateEvent": _obj(
            {
                "type": {"const": "status:update"},
                "projectId": project_id,
                "items": {"type": "array", "items": _ref("IntegrationStatus")},
                "ts": ts,
            },
            ("type", "projectId", "items", "ts"),
        ),
        "EventStreamFrame": {
            "description": "One frame of the event stream, as an SSE parser reads it (OpenAPI 3.2's event "
            "object): an event, whose data is an IntegrationEvent as JSON, or the refusal over the connection "
            "caps (event `error` with a `retry` delay), after which the stream ends. Comments (`: connected`, "
            "heartbeats) are not frames.",
            "oneOf": [
                _obj(
                    {
                        "id": {"type": "string", "minLength": 1, "description": "Resume with Last-Event-ID."},
                        "event": {"type": "string", "enum": list(EVENT_TYPES)},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": _ref("IntegrationEvent"),
                        },
                    },
                    ("event", "data"),
                ),
                _obj(
                    {
                        "event": {
                            "const": "overloaded",
                            "description": "Over the connection caps: reconnect after `retry` ms.",
                        },
                        "data": {"type": "string"},
                        "retry": {"type": "integer", "minimum": 0, "description": "Milliseconds."},
                    },
                    ("event", "data", "retry"),
                ),
            ],
        },
        "IntegrationEvent": {
            "oneOf": [_ref(name) for name in _EVENT_SCHEMAS.values()],
            "discriminator": {
                "propertyName": "type",
                "mapping": {kind: f"#/components/schemas/{name}" for kind, name in _EVENT_SCHEMAS.items()},
            },
        },
    }


_EVENT_SCHEMAS: Final = {
    "deploy:started": "DeployStartedEvent",
    "deploy:finished": "DeployFinishedEvent",
    "github:push": "GithubPushEvent",
    "sanity:webhook": "SanityWebhookEvent",
    "status:update": "StatusUpdateEvent",
}
assert tuple(_EVENT_SCHEMAS) == EVENT_TYPES


def _headers() -> Json:
    def header(description: str, schema: Json | None = None, *, required: bool = True) -> Json:
        return {"description": description, "required": required, "schema": schema or {"type": "string"}}

    return {
        "ETag": header(
            "The status hash, quoted: a strong entity tag.", {"type": "string", "pattern": '^"[^"]+"$'}
        ),
        "Cache-Control": header("Always no-store.", {"const": "no-store"}),
        "Idempotent-Replayed": header("Present on a replayed response.", {"const": "true"}, required=False),
        "Retry-After": header(
            "Seconds to wait; equals error.retryAfter.", {"type": "string", "pattern": r"^\d+$"}
        ),
        "RateLimit": header(
            "draft-ietf-httpapi-ratelimit-headers: limit, remaining, reset (not on replays).", required=False
        ),
        "RateLimit-Policy": header(
            "draft-ietf-httpapi-ratelimit-headers: <limit>;w=<window seconds>.", required=False
        ),
        "X-Accel-Buffering": header("Always no: proxies must not buffer the stream.", {"const": "no"}),
    }


# The plain form: printable ASCII without a leading or trailing space or any comma (two joined header lines look
# like that), not opening with a quote. The quoted form (RFC 8941 sf-string): a quote, the same key with " and \
# escaped, a quote.
_INNER: Final = MAX_KEY_LENGTH - 2  # between the first and the last character
_PLAIN_KEY: Final = rf"[!#-+\--~](?:[ -+\--~]{{0,{_INNER}}}[!-+\--~])?"
_SF_CHAR: Final = r'(?:[!#-\[\]-~]|\\["\\])'
_QUOTED_KEY: Final = rf'"{_SF_CHAR}(?:(?:{_SF_CHAR}|[ ]){{0,{_INNER}}}{_SF_CHAR})?"'
_IDEMPOTENCY_KEY: Final = f"^(?:{_PLAIN_KEY}|{_QUOTED_KEY})$"


def _parameters() -> Json:
    return {
        "projectId": {
            "name": "projectId",
            "in": "query",
            "required": True,
            "schema": PROJECT_ID,
            "description": "1-200 printable characters (Python's str.isprintable: no control, format, "
            "private-use, unassigned or surrogate code points, no separator but the space); otherwise 400. "
            "The pattern rules out the control characters; the other classes depend on the Unicode version "
            "and have no portable pattern.",
        },
        "If-None-Match": {
            "name": "If-None-Match",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "Entity tags (a list, weak tags or *); a match answers 304. Malformed: ignored.",
        },
        "Idempotency-Key": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": _IDEMPOTENCY_KEY, "maxLength": 2 * MAX_KEY_LENGTH + 2},
            "description": "1-255 printable ASCII characters without a comma, neither starting nor ending with a "
            "space (or the "
            'same key as a quoted structured-field string, escapes \\" and \\\\). '
            "Kept 24 h per (user, project, key).",
        },
        "Last-Event-ID": {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "Resume after this event; a snapshot instead when it is no longer buffered.",
        },
        "lastEventId": {
            "name": "lastEventId",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "The same as Last-Event-ID, for clients that cannot set headers.",
        },
    }


def _h(*names: str) -> Json:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _p(*names: str) -> list[Json]:
    return [{"$ref": f"#/components/parameters/{name}"} for name in names]


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _error(description: str, *codes: str, envelope: bool = False, headers: tuple[str, ...] = ()) -> Json:
    """A documented error response whose ``error.code`` is one of ``codes``."""
    code = {"const": codes[0]} if len(codes) == 1 else {"enum": list(codes)}
    narrowed: Json = {"properties": {"error": {"properties": {"code": code}}}}
    base = _ref("ActionResponse") if envelope else _ref("ErrorResponse")
    if envelope:
        narrowed["properties"]["success"] = {"const": False}
    return {
        "description": description,
        "headers": _h("Cache-Control", *headers),
        "content": _json({"allOf": [base, narrowed]}),
    }


def _paths(prefix: str) -> Json:
    auth = "The host's authenticator found no viewer."
    unknown_project = "Unknown project, or one the viewer may not see (the same answer)."
    return {
        f"{prefix}/status": {
            "get": {
                "operationId": "getStatus",
                "summary": "All four provider statuses of one project, as this viewer may see them",
                "parameters": _p("projectId", "If-None-Match"),
                "responses": {
                    "200": {
                        "description": "The status envelope.",
                        "headers": _h("ETag", "Cache-Control"),
                        "content": _json(_ref("StatusEnvelope")),
                    },
                    "304": {
                        "description": "If-None-Match matched; no body.",
                        "headers": _h("ETag", "Cache-Control"),
                    },
                    "400": _error("projectId missing or invalid.", "invalid_request"),
                    "401": _error(auth, "unauthorized"),
                    "404": _error(unknown_project, "not_found"),
                },
            }
        },
        f"{prefix}/actions": {
            "post": {
                "operationId": "runAction",
                "summary": "Run a quick action (deploy, push, sync, connect, ...), idempotently",
                "parameters": _p("Idempotency-Key"),
                "requestBody": {"required": True, "content": _json(_ref("ActionRequest"))},
                "responses": {
                    "200": {
                        "description": "Done. A replay of a finished request carries Idempotent-Replayed.",
                        "headers": _h(
                            "Cache-Control", "RateLimit", "RateLimit-Policy", "Idempotent-Replayed"
                        ),
                        "content": _json(_ref("ActionResponse")),
                    },
                    "202": {
                        "description": "Accepted; progress follows as events (deploy:started, ...).",
                        "headers": _h(
                            "Cache-Control", "RateLimit", "RateLimit-Policy", "Idempotent-Replayed"
                        ),
                        "content": _json(_ref("ActionResponse")),
                    },
                    "400": _error("Malformed body or Idempotency-Key.", "invalid_request", envelope=True),
                    "401": _error(auth, "unauthorized", envelope=True),
                    "403": _error("The viewer's role may not run this action.", "forbidden", envelope=True),
                    "404": _error(unknown_project, "not_found", envelope=True),
                    "409": _error("The same key is still running.", "idempotency_conflict", envelope=True),
                    "422": _error(
                        "The same key was used for a different request.",
                        "idempotency_mismatch",
                        envelope=True,
                    ),
                    "429": _error(
                        "Too many actions for this user and project in the rolling window.",
                        "rate_limited",
                        envelope=True,
                        headers=("Retry-After", "RateLimit", "RateLimit-Policy"),
                    ),
                    "502": _error(
                        "The provider refused or failed.", "oauth_revoked", "unknown", envelope=True
                    ),
                    "503": _error(
                        "The provider rate-limited us (rate_limited, with Retry-After), or the shared store "
                        "is unavailable (unknown): nothing ran, retry with the same Idempotency-Key.",
                        "rate_limited",
                        "unknown",
                        envelope=True,
                    ),
                    "504": _error("The provider did not answer in time.", "timeout", envelope=True),
                },
            }
        },
        f"{prefix}/events": {
            "get": {
                "operationId": "streamEvents",
                "summary": "Server-Sent Events of one project, redacted for this viewer",
                "description": "Frames are `id:`, `event:` (the type) and `data:` (an IntegrationEvent "
                "as JSON). A status:update snapshot comes first unless Last-Event-ID is replayed; "
                "heartbeat comments every 15 s; over the connection caps a single `retry:` frame, then "
                "the stream ends.",
                "parameters": _p("projectId", "Last-Event-ID", "lastEventId"),
                "responses": {
                    "200": {
                        "description": "An event stream.",
                        "headers": _h("Cache-Control", "X-Accel-Buffering"),
                        "content": {
                            "text/event-stream": {
                                # Before OpenAPI 3.2, tools (schemathesis among them) read an event
                                # stream's schema as that of each event; x-itemSchema is 3.2's itemSchema.
                                "schema": _ref("EventStreamFrame"),
                                "x-itemSchema": _ref("EventStreamFrame"),
                            }
                        },
                    },
                    "400": _error("projectId missing or invalid.", "invalid_request"),
                    "401": _error(auth, "unauthorized"),
                    "404": _error(unknown_project, "not_found"),
                    "503": _error(
                        "The shared store is unavailable: no stream starts; Retry-After: 5 says when to try "
                        "again (a browser's EventSource does not, by itself, after any non-200).",
                        "unknown",
                    ),
                },
            }
        },
        f"{prefix}/webhooks/{{provider}}": {
            "post": {
                "operationId": "receiveWebhook",
                "summary": "Signed provider webhooks (GitHub, Vercel, Sanity), turned into events",
                "parameters": [
                    {
                        "name": "provider",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["github", "vercel", "sanity"]},
                    },
                    *(
                        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
                        for name in (
                            "X-Hub-Signature-256",
                            "X-GitHub-Event",
                            "X-GitHub-Delivery",
                            "X-Vercel-Signature",
                            "Sanity-Webhook-Signature",
                        )
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "description": "The provider's JSON, byte for byte as signed (at most 1 MiB).",
                    "content": _json({"type": "object"}),
                },
                "responses": {
                    "200": {
                        "description": "Accepted (also a ping or a duplicate).",
                        "headers": _h("Cache-Control"),
                        "content": _json(_ref("WebhookResponse")),
                    },
                    "202": {
                        "description": "Authentic, of a kind that is ignored.",
                        "headers": _h("Cache-Control"),
                        "content": _json(_ref("WebhookResponse")),
                    },
                    "400": _error("Malformed JSON or payload.", "invalid_request"),
                    "401": _error(
                        "Missing or bad signature, a stale timestamp, or an unknown integration (the same "
                        "answer, so integrations cannot be probed).",
                        "unauthorized",
                    ),
                    "404": _error("Unknown provider.", "not_found"),
                    "413": _error("Body larger than 1 MiB.", "invalid_request"),
                    "503": _error(
                        "The delivery log cannot be checked (the shared store is unavailable): nothing is "
                        "recorded or published, and the provider delivers again later.",
                        "unknown",
                    ),
                },
            }
        },
        f"{prefix}/health": {
            "get": {
                "operationId": "getHealth",
                "summary": "Liveness for anyone; for a viewer the host's health authorizer allows, adapter error "
                "and timeout rates, status p95 and SSE stability over a rolling window",
                "responses": {
                    "200": {
                        "description": "Liveness (any caller), or every check passed (an allowed viewer).",
                        "headers": _h("Cache-Control"),
                        "content": _json({"oneOf": [_ref("HealthReport"), _ref("Liveness")]}),
                    },
                    "400": _error("A repeated query parameter.", "invalid_request"),
                    "503": {
                        "description": "At least one check failed; the body says which (allowed viewers only).",
                        "headers": _h("Cache-Control"),
                        "content": _json(_ref("HealthReport")),
                    },
                },
            }
        },
        f"{prefix}/openapi.json": {
            "get": {
                "operationId": "getOpenAPI",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "headers": _h("Cache-Control"),
                        "content": _json({"type": "object"}),
                    }
                },
            }
        },
    }


def _build(prefix: str) -> Json:
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "integration-status",
            "version": VERSION,
            "description": "Aggregated GitHub, Vercel, Sanity and Supabase connection status for one "
            "project: status with ETag/304, idempotent rate-limited quick actions, Server-Sent Events "
            "and signed webhooks. Authentication is the host application's; optional fields are "
            "omitted, never null.",
        },
        "paths": _paths(prefix),
        "components": {"schemas": _schemas(), "headers": _headers(), "parameters": _parameters()},
    }


@functools.lru_cache(maxsize=16)
def openapi_json(*, prefix: str = "/api/integrations") -> bytes:
    """The document as compact UTF-8 JSON, built once per prefix (bytes cannot be changed by a caller)."""
    data = _build(prefix.rstrip("/"))
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def openapi_document(*, prefix: str = "/api/integrations") -> dict[str, Any]:
    """The OpenAPI 3.1 document for endpoints under ``prefix``: a fresh ``dict`` on every call."""
    document: dict[str, Any] = json.loads(openapi_json(prefix=prefix))
    return document
