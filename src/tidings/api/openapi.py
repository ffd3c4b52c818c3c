"""What ``/openapi.json`` says of the bodies the routes read themselves, and of problems.

Routes that read their body raw (the strict decoder of :mod:`tidings.json_input`, the
CloudEvents modes) declare it with ``openapi_extra``; every operation documents the RFC 9457
problem answers. So a reader, a client generator or a fuzzer finds every body and answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from tidings.events.cloudevents import MAX_BATCH, MAX_SUBJECT, SPECVERSION

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `field` is a JSON pointer to the bad input",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
    },
}

_PROBLEMS = {
    "400": "The body is not JSON, or holds what cannot be stored (a lone surrogate, NUL, "
    "NaN/Infinity, a number past 4,300 digits, nesting past 64 levels); `field` says where. "
    "A URL holding NUL (`%00`, in the path or the query) is refused the same way",
    "401": "Missing or invalid API key",
    "403": "The API key lacks the scope",
    "404": "Not found",
    "413": "The body is larger than 1 MiB",
    "422": "Invalid input; `field` names it",
    "429": "Over the API key's rate (see Retry-After)",
}

CLOUDEVENT_SCHEMA: dict[str, Any] = {
    "title": "CloudEvent",
    "description": "A structured-mode CloudEvent 1.0 with JSON `data`",
    "type": "object",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"type": "string", "enum": [SPECVERSION]},
        "id": {"type": "string", "minLength": 1, "maxLength": 512},
        "source": {"type": "string", "minLength": 1, "maxLength": 512},
        "type": {"type": "string", "minLength": 1, "maxLength": 256},
        "subject": {"type": "string", "minLength": 1, "maxLength": MAX_SUBJECT},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"type": "string"},
        "dataschema": {"type": "string"},
        "data": {"type": "object"},
    },
}

_ITEM_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["index", "id", "status", "duplicate"],
    "properties": {
        "index": {"type": "integer"},
        "id": {},
        "status": {"type": "integer"},
        "duplicate": {"type": "boolean"},
        "problem": PROBLEM_SCHEMA,
    },
}
_ACCEPTED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "source": {"type": "string"},
        "status": {"type": "integer"},
        "duplicate": {"type": "boolean"},
        "results": {"type": "array", "items": _ITEM_RESULT},
    },
}


def _binary_header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": f"ce-{name}",
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": 256 if name == "type" else 512},
    }


EVENTS_OPENAPI: dict[str, Any] = {
    "parameters": [
        _binary_header("specversion", "binary mode: present (`1.0`) makes the body the `data`"),
        _binary_header("id", "binary mode: the event id"),
        _binary_header("source", "binary mode: the event source"),
        _binary_header("type", "binary mode: the event type"),
        _binary_header("subject", "binary mode: the subject (default: data.order_id)"),
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/cloudevents+json": {"schema": CLOUDEVENT_SCHEMA},
            "application/json": {
                "schema": {
                    "description": "structured mode; in binary mode (ce-* headers) the `data`",
                    "anyOf": [CLOUDEVENT_SCHEMA, {"type": "object"}],
                }
            },
            "application/cloudevents-batch+json": {
                "schema": {"type": "array", "maxItems": MAX_BATCH, "items": CLOUDEVENT_SCHEMA}
            },
        },
    },
    "responses": {
        "200": {
            "description": "A duplicate of an accepted event: nothing new happens",
            "content": {"application/json": {"schema": _ACCEPTED}},
        },
        "202": {
            "description": "Committed (every item of a batch)",
            "content": {"application/json": {"schema": _ACCEPTED}},
        },
        "207": {
            "description": "A batch with an item not accepted: one result per item, in order",
            "content": {"application/json": {"schema": _ACCEPTED}},
        },
        "415": {
            "description": "Unsupported content type",
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
        },
        "503": {
            "description": "The backlog of undecided events is at its limit (see Retry-After)",
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
        },
    },
}
"""``openapi_extra`` of ``POST /v1/events``: the three modes' bodies and the answers."""


PREFERENCES_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "Preferences",
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "channels": {"type": "object", "additionalProperties": {"type": "boolean"}},
                        "categories": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {
                                    "enabled": {"type": "boolean"},
                                    "channels": {
                                        "type": "object",
                                        "additionalProperties": {"type": "boolean"},
                                    },
                                },
                            },
                        },
                        "quiet_hours": {
                            "type": "object",
                            "required": ["start", "end"],
                            "properties": {
                                "start": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
                                "end": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
                            },
                        },
                        "muted_until": {"type": "string", "format": "date-time"},
                    },
                }
            }
        },
    }
}
"""``openapi_extra`` of ``PUT /v1/subscribers/{id}/preferences``."""


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body of ``model`` (its ``$defs`` inlined)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, definitions)}},
        }
    }


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node


def document_problems(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document the problem answers of every ``/v1`` operation."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for path, operations in document.get("paths", {}).items():
            if not path.startswith("/v1/"):
                continue
            for operation in operations.values():
                if isinstance(operation, dict) and "responses" in operation:
                    _add_problems(operation["responses"])
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way


def _add_problems(responses: dict[str, Any]) -> None:
    problem = {"application/problem+json": {"schema": PROBLEM_SCHEMA}}
    for status, description in _PROBLEMS.items():
        found = responses.get(status)
        if found is None or "HTTPValidationError" in str(found):
            responses[status] = {"description": description, "content": problem}
