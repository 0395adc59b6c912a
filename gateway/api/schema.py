"""JSON Schema building blocks shared by the parts of the OpenAPI document."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

TIME: JSON = {"type": "string", "format": "date-time"}
ID: JSON = {"type": "string"}


def ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: JSON) -> JSON:
    return {"anyOf": [schema, {"type": "null"}]}


def closed_object(properties: JSON, required: list[str] | None = None) -> JSON:
    """An object of exactly these properties (all required unless ``required`` says)."""
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required,
            "additionalProperties": False}


def open_object(properties: JSON, required: list[str], description: str) -> JSON:
    """An object with at least these properties; more may be added later."""
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": True, "description": description}
