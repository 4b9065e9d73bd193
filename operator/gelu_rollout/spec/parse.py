"""Parsing of GeluModelRollout specs and statuses, with plain error messages.

:func:`parse_spec` reports every problem of a spec at once, each at a camelCase path such as
``spec.traffic.steps[1].weight``, in one :class:`SpecError`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gelu_rollout.spec.model import RolloutSpec, cross_field_problems, describe_value
from gelu_rollout.spec.resource import API_VERSION, KIND
from gelu_rollout.spec.status import RolloutStatus


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One problem with a spec or status: where it is and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """A spec or status that does not validate; ``problems`` lists every problem found."""

    problems: list[SpecProblem]

    def __init__(self, problems: Iterable[SpecProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


# Errors that parse_spec replaces with its own checks on the raw input: the cross-field rules
# (model validators only run when every field of their model is valid) and list lengths
# (pydantic counts only the items that validated).
_REPLACED_TYPES: Final = frozenset({"cross_field", "too_short", "too_long"})

_QUOTED: Final = re.compile(r"'((?:[^'\\]|\\.)*)'")


_PLAIN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _join(prefix: str, loc: Iterable[int | str]) -> str:
    """``spec`` + (traffic, steps, 1, weight) -> ``spec.traffic.steps[1].weight``.

    A key that is not a plain name (an unknown field such as ``a.b``) is written quoted in
    brackets, ``spec.model['a.b']``, so that every path reads back unambiguously.
    """
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path = f"{path}[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            path = f"{path}[{part!r}]"
        elif path:
            path = f"{path}.{part}"
        else:
            path = part
    return path


def _choices(error: ErrorDetails) -> str:
    expected = str(error.get("ctx", {}).get("expected", ""))
    return ", ".join(_QUOTED.findall(expected)) or expected


def _bound(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    got = describe_value(error["input"])
    simple = {
        "missing": "is required",
        "extra_forbidden": "unknown field",
    }
    typed = {
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be an integer",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "finite_number": "must be a finite number",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "dict_type": "must be a mapping",
        "list_type": "must be a list",
        "tuple_type": "must be a list",
        "datetime_type": "must be an RFC 3339 timestamp",
        "datetime_parsing": "must be an RFC 3339 timestamp",
        "datetime_from_date_parsing": "must be an RFC 3339 timestamp",
        "datetime_object_invalid": "must be an RFC 3339 timestamp",
        "timezone_aware": "must be an RFC 3339 timestamp with a time zone",
        "string_pattern_mismatch": "has the wrong format",
    }
    bounds = {
        "greater_than": ("must be greater than", "gt"),
        "greater_than_equal": ("must be at least", "ge"),
        "less_than": ("must be less than", "lt"),
        "less_than_equal": ("must be at most", "le"),
    }
    if kind in simple:
        return simple[kind]
    if kind in typed:
        return f"{typed[kind]}, got {got}"
    if kind in bounds:
        text, key = bounds[kind]
        return f"{text} {_bound(ctx.get(key))}, got {got}"
    if kind in {"literal_error", "enum"}:
        return f"must be one of: {_choices(error)}, got {got}"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must be at least {ctx.get('min_length')} characters long, got {got}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long, got {got}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} items, got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
    if kind in {"model_name", "dns_subdomain", "cross_field"}:
        return error["msg"]
    message = error["msg"]
    return message[:1].lower() + message[1:]


def _problem(error: ErrorDetails, prefix: str) -> SpecProblem:
    loc = error["loc"]
    if error["type"] == "invalid_key":
        return SpecProblem(
            _join(prefix, loc[:-1]), f"keys must be strings, got {describe_value(loc[-1])}"
        )
    return SpecProblem(_join(prefix, loc), _message(error))


def _unique(problems: Iterable[SpecProblem]) -> list[SpecProblem]:
    return list(dict.fromkeys(problems))


_TOKEN: Final = re.compile(r"\[(\d+)\]|\[('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]|\.?([^.\[]+)")


def _position(data: object, path: str, prefix: str) -> tuple[int, ...]:
    """Where ``path`` falls in the input, as a sort key: problems follow the document order."""
    key: list[int] = []
    node: object = data
    for match in _TOKEN.finditer(path.removeprefix(prefix)):
        index, quoted, name = match.groups()
        if quoted is not None:
            name = ast.literal_eval(quoted)
        if index is not None:
            key.append(int(index))
            node = (
                node[int(index)]
                if isinstance(node, list | tuple) and int(index) < len(node)
                else None
            )
        elif isinstance(node, Mapping):
            keys = list(node)
            key.append(keys.index(name) if name in node else len(keys))
            node = node.get(name)
        else:
            key.append(0)
            node = None
    return tuple(key)


def _spec_problems(
    data: Mapping[Any, Any], prefix: str
) -> tuple[RolloutSpec | None, list[SpecProblem]]:
    try:
        spec = RolloutSpec.model_validate(dict(data), by_alias=True, by_name=False)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        problems = [_problem(e, prefix) for e in errors if e["type"] not in _REPLACED_TYPES]
        problems += [SpecProblem(p, m) for p, m in cross_field_problems(data, prefix)]
        if not problems:  # the raw checks found nothing: fall back on pydantic's own words
            problems = [_problem(e, prefix) for e in errors]
        problems.sort(key=lambda problem: _position(data, problem.path, prefix))
        return None, _unique(problems)
    return spec, []


def _check_manifest(data: Mapping[Any, Any]) -> tuple[object, list[SpecProblem]]:
    problems: list[SpecProblem] = []
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if key not in data:
            problems.append(SpecProblem(key, "is required"))
        elif data[key] != expected:
            problems.append(
                SpecProblem(key, f"must be {expected}, got {describe_value(data[key])}")
            )
    if "spec" not in data:
        problems.append(SpecProblem("spec", "is required"))
        return None, problems
    spec: object = data["spec"]
    return spec, problems


def parse_spec(data: object) -> RolloutSpec:
    """Validate a spec, given as the spec mapping itself or as a whole manifest.

    A mapping with ``apiVersion`` or ``kind`` is taken to be a manifest: its apiVersion and
    kind are checked and its ``spec`` is parsed. Keys must be the camelCase manifest names.
    Raises :class:`SpecError` listing every problem found.
    """
    if isinstance(data, RolloutSpec):
        return data
    problems: list[SpecProblem] = []
    if isinstance(data, Mapping) and ("apiVersion" in data or "kind" in data):
        data, problems = _check_manifest(data)
        if data is None and problems:
            raise SpecError(problems)
    if not isinstance(data, Mapping):
        raise SpecError(
            [*problems, SpecProblem("spec", f"must be a mapping, got {describe_value(data)}")]
        )
    spec, spec_problems = _spec_problems(data, "spec")
    problems += spec_problems
    if problems or spec is None:
        raise SpecError(problems)
    return spec


def parse_status(data: object) -> RolloutStatus:
    """Read a status as written by :meth:`RolloutStatus.to_dict` or the API server.

    ``None`` or an empty mapping gives the default status. Unknown fields are ignored.
    Raises :class:`SpecError` (paths start with ``status``) if the status does not validate.
    """
    if data is None:
        return RolloutStatus()
    if isinstance(data, RolloutStatus):
        return data
    if not isinstance(data, Mapping):
        raise SpecError([SpecProblem("status", f"must be a mapping, got {describe_value(data)}")])
    try:
        return RolloutStatus.model_validate(dict(data), by_alias=True, by_name=False)
    except ValidationError as error:
        raise SpecError(
            _unique(_problem(e, "status") for e in error.errors(include_url=False))
        ) from None
