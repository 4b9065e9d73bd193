"""Reading the loosely typed JSON of API objects: a missing or mistyped field reads as empty."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ObjectKey = tuple[str, str]
"""``(namespace, name)`` of an object."""


def mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def sequence(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping(obj.get("metadata"))


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    meta = metadata(obj)
    return str(meta.get("namespace")), str(meta.get("name"))
