"""Admission of custom resources as the real API server does it, from the CRD's schema.

The API server does this to every write of a custom resource (not of its status subresource),
in this order:

1. unknown fields: ``fieldValidation=Strict`` (kubectl's default) refuses them with a 400,
   ``Warn`` (the server's default) and ``Ignore`` drop them (pruning);
2. ``null`` where the schema does not say ``nullable`` is dropped, unless a default replaces it;
3. defaults are applied, nested ones included;
4. the structural schema is checked: types, enums, required fields, bounds, lengths and
   patterns, each problem named by its field path (``spec.traffic.steps[0].weight``);
5. the CEL ``x-kubernetes-validations`` rules run with ``self`` bound to the value at each
   rule's level, unless step 4 found a *blocking* problem (a wrong type, an unsupported enum
   value, a missing required field, too long or too many), as the server skips them then.

Problems come back as the server's ``Invalid`` status (422) with one cause per problem; kubectl
prints them as ``The GeluModelRollout "x" is invalid: * spec.a: ...``. Messages follow the
server's wording so that what a person sees in the sandbox is what a cluster would say.
Not covered: ``x-kubernetes-list-type``, ``nullable``, formats and the CEL cost budget; the
schemas this sandbox serves use none of them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

JsonObject = dict[str, Any]

PRESERVE: Final = "x-kubernetes-preserve-unknown-fields"
VALIDATIONS: Final = "x-kubernetes-validations"

# The cause reasons of the API server's field errors.
TYPE_INVALID: Final = "FieldValueTypeInvalid"
NOT_SUPPORTED: Final = "FieldValueNotSupported"
REQUIRED: Final = "FieldValueRequired"
TOO_LONG: Final = "FieldValueTooLong"
TOO_MANY: Final = "FieldValueTooMany"
INVALID: Final = "FieldValueInvalid"
BLOCKING: Final = frozenset({TYPE_INVALID, NOT_SUPPORTED, REQUIRED, TOO_LONG, TOO_MANY})
"""Problems after which the server does not run the CEL rules."""

SKIPPED_RULES: Final = (
    "some validation rules were not checked because the object was invalid; correct the "
    "existing errors to complete validation"
)


@dataclass(frozen=True, slots=True)
class Cause:
    """One field error, as the server's Status ``details.causes`` holds it."""

    field: str
    reason: str
    message: str
    rule: bool = False
    """Whether a CEL rule found it (else the structural schema did)."""

    def to_json(self) -> JsonObject:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass
class Verdict:
    """What admission made of an object: the object to store, or why it is refused."""

    obj: JsonObject
    causes: list[Cause] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    """Unknown fields: refused under Strict field validation, dropped (and listed) otherwise."""

    @property
    def refused(self) -> bool:
        return bool(self.causes)


def _type_name(value: object) -> str:
    """The JSON type of a value, as the server names it in a type error."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _shown(value: object) -> str:
    """A value as the server prints it after ``Invalid value:``."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(_type_name(value))


def _is_type(value: object, wanted: str) -> bool:
    if wanted == "object":
        return isinstance(value, dict)
    if wanted == "array":
        return isinstance(value, list)
    if wanted == "string":
        return isinstance(value, str)
    if wanted == "boolean":
        return isinstance(value, bool)
    if wanted == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if wanted == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    # Go's RE2 reads ``$`` as the end of the text; Python's also matches before a final newline.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def prune(value: object, schema: Mapping[str, Any], path: str, unknown: list[str]) -> object:
    """``value`` without unknown fields and without nulls the schema does not allow (unless a
    default replaces them); the unknown ones are listed in ``unknown``."""
    if schema.get(PRESERVE):
        return value
    if isinstance(value, dict) and "properties" in schema:
        properties: Mapping[str, Any] = schema["properties"]
        kept: JsonObject = {}
        for key, item in value.items():
            prop = properties.get(key)
            if prop is None:
                unknown.append(_key_path(path, key))
            elif item is None and not prop.get("nullable") and "default" not in prop:
                continue
            else:
                kept[key] = prune(item, prop, _key_path(path, key), unknown)
        return kept
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), Mapping):
        items = schema["additionalProperties"]
        return {k: prune(v, items, _key_path(path, k), unknown) for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [
            prune(item, schema["items"], f"{path}[{i}]", unknown) for i, item in enumerate(value)
        ]
    return value


def apply_defaults(value: object, schema: Mapping[str, Any]) -> None:
    """Fill in defaults, then recurse into every field, defaulted ones included (in place)."""
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        for key, prop in properties.items():
            absent = key not in value or (value[key] is None and not prop.get("nullable"))
            if "default" in prop and absent:
                value[key] = copy.deepcopy(prop["default"])
        for key, item in value.items():
            if key in properties:
                apply_defaults(item, properties[key])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            apply_defaults(item, schema["items"])


def _bounds(value: float, schema: Mapping[str, Any], path: str) -> Iterator[Cause]:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None:
        if schema.get("exclusiveMinimum") and value <= low:
            yield Cause(
                path,
                INVALID,
                f"Invalid value: {_shown(value)}: {path} in body should "
                f"be greater than {_shown(low)}",
            )
        elif value < low:
            yield Cause(
                path,
                INVALID,
                f"Invalid value: {_shown(value)}: {path} in body should "
                f"be greater than or equal to {_shown(low)}",
            )
    if high is not None:
        if schema.get("exclusiveMaximum") and value >= high:
            yield Cause(
                path,
                INVALID,
                f"Invalid value: {_shown(value)}: {path} in body should "
                f"be less than {_shown(high)}",
            )
        elif value > high:
            yield Cause(
                path,
                INVALID,
                f"Invalid value: {_shown(value)}: {path} in body should "
                f"be less than or equal to {_shown(high)}",
            )


def schema_problems(value: object, schema: Mapping[str, Any], path: str) -> Iterator[Cause]:
    """Every problem of ``value`` under a structural schema, in document order."""
    wanted = schema.get("type")
    if wanted is not None and not _is_type(value, wanted):
        got = _type_name(value)
        yield Cause(
            path,
            TYPE_INVALID,
            f'Invalid value: "{got}": {path} in body must be of type {wanted}: "{got}"',
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(json.dumps(choice) for choice in schema["enum"])
        yield Cause(
            path, NOT_SUPPORTED, f"Unsupported value: {_shown(value)}: supported values: {choices}"
        )
        return
    if isinstance(value, int | float) and not isinstance(value, bool):
        yield from _bounds(value, schema, path)
    elif isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield Cause(
                path, TOO_LONG, f"Too long: may not be more than {schema['maxLength']} bytes"
            )
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield Cause(
                path,
                INVALID,
                f"Invalid value: {_shown(value)}: {path} in body should "
                f"be at least {schema['minLength']} chars long",
            )
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            yield Cause(
                path,
                INVALID,
                f"Invalid value: {_shown(value)}: {path} in body should "
                f"match '{schema['pattern']}'",
            )
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield Cause(
                path,
                TOO_MANY,
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield Cause(
                path,
                INVALID,
                f"Invalid value: {len(value)}: {path} in body should "
                f"have at least {schema['minItems']} items",
            )
        if "items" in schema:
            for i, item in enumerate(value):
                yield from schema_problems(item, schema["items"], f"{path}[{i}]")
    elif isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                yield Cause(_key_path(path, name), REQUIRED, "Required value")
        properties: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                yield from schema_problems(item, properties[key], _key_path(path, key))
            elif isinstance(extra, Mapping):
                yield from schema_problems(item, extra, _key_path(path, key))


_CEL: Final = celpy.Environment()


@cache
def _program(rule: str) -> celpy.Runner:
    return _CEL.program(_CEL.compile(rule))


def _rule_nodes(
    value: object, schema: Mapping[str, Any], path: str
) -> Iterator[tuple[str, object, Mapping[str, Any]]]:
    """Every (path, value, schema) where a value meets a schema that holds CEL rules."""
    if schema.get(VALIDATIONS):
        yield path, value, schema
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                yield from _rule_nodes(item, properties[key], _key_path(path, key))
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from _rule_nodes(item, schema["items"], f"{path}[{i}]")


def rule_problems(value: object, schema: Mapping[str, Any], path: str) -> Iterator[Cause]:
    """The CEL rules that do not hold, each at its field (the rule's ``fieldPath`` added)."""
    for at, node, node_schema in _rule_nodes(value, schema, path):
        for rule in node_schema[VALIDATIONS]:
            where = at + str(rule.get("fieldPath", ""))
            bound = json_to_cel(node)  # type: ignore[arg-type]  # a JSON value, as decoded
            result: object
            try:
                result = _program(rule["rule"]).evaluate({"self": bound})
            except CELEvalError as error:
                result = error
            if isinstance(result, celpy.celtypes.BoolType) and bool(result):
                continue
            if isinstance(result, celpy.celtypes.BoolType):
                text = rule.get("message") or f"failed rule: {rule['rule']}"
            else:  # an evaluation error fails the rule, as on the server
                text = f"{rule['rule']}: rule evaluation error: {result!s}"
            yield Cause(where, INVALID, f"Invalid value: {_shown(node)}: {text}", rule=True)


_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z"
)
_DNS_SUBDOMAIN_TEXT: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def name_problems(metadata: object) -> Iterator[Cause]:
    """A custom resource's name must be a DNS-1123 subdomain (``generateName`` aside)."""
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str):
        return
    if len(name) > 253:
        yield Cause(
            "metadata.name",
            INVALID,
            f"Invalid value: {_shown(name)}: must be no more than 253 characters",
        )
    if not _DNS_SUBDOMAIN.match(name):
        yield Cause(
            "metadata.name", INVALID, f"Invalid value: {_shown(name)}: {_DNS_SUBDOMAIN_TEXT}"
        )


class CustomResourceSchema:
    """One served version's ``openAPIV3Schema``, and what the server does with it."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema: Mapping[str, Any] = copy.deepcopy(dict(schema))

    def admit(self, obj: Mapping[str, Any]) -> Verdict:
        """Prune, default and validate ``obj`` (a copy): the object to store, or the causes."""
        unknown: list[str] = []
        body = {
            key: value for key, value in obj.items() if key in ("apiVersion", "kind", "metadata")
        }
        rest = prune(
            {key: value for key, value in obj.items() if key not in body},
            self.schema,
            "",
            unknown,
        )
        assert isinstance(rest, dict)  # a mapping stays a mapping
        admitted: JsonObject = copy.deepcopy({**body, **rest})
        apply_defaults(admitted, self.schema)
        # metadata is the server's to check, not the schema's: of it, the name.
        causes = list(name_problems(admitted.get("metadata")))
        checked = {k: v for k, v in admitted.items() if k != "metadata"}
        checked_schema = {
            **self.schema,
            "properties": {
                k: v for k, v in self.schema.get("properties", {}).items() if k != "metadata"
            },
        }
        causes += schema_problems(checked, checked_schema, "")
        if any(cause.reason in BLOCKING for cause in causes):
            causes.append(Cause("<nil>", INVALID, f'Invalid value: "null": {SKIPPED_RULES}'))
        else:
            causes += rule_problems(checked, checked_schema, "")
        return Verdict(admitted, causes, unknown)


def invalid_message(kind: str, group: str, name: str, causes: list[Cause]) -> str:
    """The Status message of an Invalid answer: one cause plain, more in brackets."""
    listed = ", ".join(str(cause) for cause in causes)
    text = listed if len(causes) == 1 else f"[{listed}]"
    return f'{kind}.{group} "{name}" is invalid: {text}'


def unknown_fields_message(kind: str, version: str, unknown: list[str]) -> str:
    """The Status message of a Strict write with unknown fields (a 400)."""
    fields = ", ".join(f'unknown field "{path}"' for path in unknown)
    return (
        f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: '
        f"{fields}"
    )
