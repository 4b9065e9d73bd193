"""Invalid GeluModelRollout objects, generated: each a valid base spec with one thing broken.

Every object carries its category and the field it breaks (``spec.traffic.steps[1].weight``),
so that a test can check that whoever refuses it (the CRD's schema or CEL rules, or
``parse_spec`` in the operator) names that field. Shared by the fast property test over the
CRD and the model and by the test that applies them through the sandbox's API.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from gelu_rollout.spec.model import VARIANTS
from gelu_rollout.spec.resource import API_VERSION, KIND

Json = dict[str, Any]
Path = tuple[str | int, ...]

# Valid bases, each reaching other parts of the spec: every field that a mutation touches
# exists in at least one of them.
VARIANT_BASE: Json = {
    "model": {"name": "gelu_mlp", "image": "nvcr.io/nvidia/tritonserver:24.09-py3"},
    "baseline": {"variant": "exact", "replicas": 1},
    "candidate": {"variant": "tanh", "replicas": 1},
    "traffic": {
        "mode": "ReplicaRatio",
        "steps": [{"weight": 10, "analysisSeconds": 60}, {"weight": 50, "analysisSeconds": 60}],
    },
    "analysis": {
        "intervalSeconds": 30,
        "warmupSeconds": 10,
        "falseRollbackBudget": 0.01,
        "ledgerLimit": 50,
        "power": 0.8,
        "slo": {"availability": 0.999, "latencyP99Ms": 250},
        "gates": {
            "burnRate": {"enabled": True, "windows": [{"burnRate": 14.4, "longWindowFactor": 1}]},
            "errorRate": {"enabled": True, "maxRatioToBaseline": 2},
            "latency": {"enabled": True, "maxRegression": 0.1},
            "divergence": {"enabled": True, "maxKL": 0.01},
            "nonFinite": {"enabled": True, "maxPerMillion": 0},
        },
        "probe": {"enabled": True, "rows": 256},
        "latencyHistogram": {
            "metric": "gelu_gateway_request_duration_seconds_bucket",
            "armLabel": "service",
            "matchers": [{"label": "namespace", "value": "default"}],
        },
    },
}
ROUTE_BASE: Json = {
    "model": {"name": "gelu_mlp"},
    "baseline": {"repository": {"configMapName": "weights-a"}},
    "candidate": {"repository": {"configMapName": "weights-b"}},
    "traffic": {"mode": "HTTPRoute", "httpRouteName": "gelu", "steps": [{"weight": 20}]},
    "analysis": {"outputSample": {"configMapName": "samples"}},
}
BASES: tuple[Json, ...] = (VARIANT_BASE, ROUTE_BASE)


@dataclass(frozen=True)
class BadRollout:
    """One invalid object: what kind of mistake, the field it is in, the object itself."""

    category: str
    field: str
    """The path of the broken field, ``spec.`` first; a refusal must name it."""
    spec: Any

    def manifest(self, name: str, namespace: str = "default") -> Json:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": self.spec,
        }


def field_path(path: Path) -> str:
    out = "spec"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _set(spec: Json, path: Path, value: Any) -> Json:
    spec = copy.deepcopy(spec)
    node: Any = spec
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return spec


def _delete(spec: Json, path: Path) -> Json:
    spec = copy.deepcopy(spec)
    node: Any = spec
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return spec


# (base, path, JSON type) of the leaves whose type a mutation breaks.
TYPED: tuple[tuple[Json, Path, str], ...] = (
    (VARIANT_BASE, ("model",), "object"),
    (VARIANT_BASE, ("model", "name"), "string"),
    (VARIANT_BASE, ("model", "image"), "string"),
    (VARIANT_BASE, ("baseline",), "object"),
    (VARIANT_BASE, ("baseline", "variant"), "string"),
    (VARIANT_BASE, ("baseline", "replicas"), "integer"),
    (VARIANT_BASE, ("candidate", "variant"), "string"),
    (VARIANT_BASE, ("traffic",), "object"),
    (VARIANT_BASE, ("traffic", "mode"), "string"),
    (VARIANT_BASE, ("traffic", "steps"), "array"),
    (VARIANT_BASE, ("traffic", "steps", 0), "object"),
    (VARIANT_BASE, ("traffic", "steps", 1, "weight"), "integer"),
    (VARIANT_BASE, ("traffic", "steps", 0, "analysisSeconds"), "integer"),
    (VARIANT_BASE, ("analysis", "intervalSeconds"), "integer"),
    (VARIANT_BASE, ("analysis", "warmupSeconds"), "integer"),
    (VARIANT_BASE, ("analysis", "falseRollbackBudget"), "number"),
    (VARIANT_BASE, ("analysis", "power"), "number"),
    (VARIANT_BASE, ("analysis", "slo", "availability"), "number"),
    (VARIANT_BASE, ("analysis", "gates"), "object"),
    (VARIANT_BASE, ("analysis", "gates", "latency", "enabled"), "boolean"),
    (VARIANT_BASE, ("analysis", "gates", "burnRate", "windows"), "array"),
    (VARIANT_BASE, ("analysis", "gates", "divergence", "maxKL"), "number"),
    (VARIANT_BASE, ("analysis", "probe", "rows"), "integer"),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "metric"), "string"),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "armLabel"), "string"),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "matchers"), "array"),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "matchers", 0, "label"), "string"),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "matchers", 0, "value"), "string"),
    (ROUTE_BASE, ("baseline", "repository", "configMapName"), "string"),
    (ROUTE_BASE, ("traffic", "httpRouteName"), "string"),
)

_BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=8),
    "integer": st.integers(-(2**40), 2**40),
    "fraction": st.floats(allow_nan=False, allow_infinity=False).filter(
        lambda x: not float(x).is_integer()
    ),
    "boolean": st.booleans(),
    "array": st.lists(st.integers(0, 3), max_size=3),
    "object": st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2),
}
# Which generated kinds of value a JSON type accepts (a number accepts an integer).
_ACCEPTS: dict[str, set[str]] = {
    "string": {"string"},
    "integer": {"integer"},
    "number": {"integer", "fraction"},
    "boolean": {"boolean"},
    "array": {"array"},
    "object": {"object"},
}


@st.composite
def wrong_types(draw: st.DrawFn) -> BadRollout:
    base, path, wanted = draw(st.sampled_from(TYPED))
    kind = draw(st.sampled_from(sorted(set(_BY_TYPE) - _ACCEPTS[wanted])))
    value = draw(_BY_TYPE[kind])
    return BadRollout("wrong type", field_path(path), _set(base, path, value))


# (base, path, values out of range) of bounded numbers.
RANGES: tuple[tuple[Json, Path, st.SearchStrategy[Any]], ...] = (
    (VARIANT_BASE, ("traffic", "steps", 0, "weight"), st.sampled_from([0, -1, -(2**31)])),
    (VARIANT_BASE, ("traffic", "steps", 1, "weight"), st.integers(100, 2**62)),
    (ROUTE_BASE, ("traffic", "steps", 0, "weight"), st.integers(-(2**62), 0) | st.just(100)),
    (VARIANT_BASE, ("traffic", "steps", 0, "analysisSeconds"), st.integers(-1000, 0)),
    (VARIANT_BASE, ("baseline", "replicas"), st.integers(101, 10**6) | st.integers(-5, 0)),
    (VARIANT_BASE, ("analysis", "intervalSeconds"), st.integers(3601, 10**9) | st.integers(-9, 9)),
    (VARIANT_BASE, ("analysis", "warmupSeconds"), st.integers(-(10**9), -1)),
    (VARIANT_BASE, ("analysis", "falseRollbackBudget"), st.floats(0.2001, 1e9) | st.just(0)),
    (VARIANT_BASE, ("analysis", "ledgerLimit"), st.sampled_from([9, 0, 501, 10**12])),
    (VARIANT_BASE, ("analysis", "power"), st.floats(1.0, 1e6) | st.floats(-1e6, 0.4999)),
    (VARIANT_BASE, ("analysis", "slo", "availability"), st.floats(1.0, 2.0) | st.just(0.5)),
    (VARIANT_BASE, ("analysis", "slo", "latencyP99Ms"), st.floats(-1e9, 0.0)),
    (VARIANT_BASE, ("analysis", "gates", "latency", "maxRegression"), st.floats(10.001, 1e9)),
    (VARIANT_BASE, ("analysis", "gates", "divergence", "maxKL"), st.floats(-1e9, 0.0)),
    (VARIANT_BASE, ("analysis", "gates", "nonFinite", "maxPerMillion"), st.floats(-1e9, -1e-9)),
    (VARIANT_BASE, ("analysis", "probe", "rows"), st.sampled_from([0, 15, 4097, 2**40])),
    (
        VARIANT_BASE,
        ("analysis", "gates", "burnRate", "windows", 0, "burnRate"),
        st.floats(-1e3, 1.0),
    ),
)


@st.composite
def out_of_range(draw: st.DrawFn) -> BadRollout:
    base, path, values = draw(st.sampled_from(RANGES))
    return BadRollout("out of range", field_path(path), _set(base, path, draw(values)))


@st.composite
def unknown_variants(draw: st.DrawFn) -> BadRollout:
    arm = draw(st.sampled_from(["baseline", "candidate"]))
    value = draw(
        st.sampled_from(["EXACT", "gelu", "tanh ", " exact", "fp32", "int8", "exact\n"])
        | st.text(min_size=0, max_size=20)
    )
    if value in VARIANTS:
        value += "-x"
    path: Path = (arm, "variant")
    return BadRollout("unknown variant", field_path(path), _set(VARIANT_BASE, path, value))


# Strings with a length limit: (base, path, the limit).
LIMITED: tuple[tuple[Json, Path, int], ...] = (
    (VARIANT_BASE, ("model", "name"), 128),
    (ROUTE_BASE, ("baseline", "repository", "configMapName"), 253),
    (ROUTE_BASE, ("traffic", "httpRouteName"), 253),
    (ROUTE_BASE, ("analysis", "outputSample", "configMapName"), 253),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "metric"), 200),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "armLabel"), 100),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "matchers", 0, "label"), 100),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "matchers", 0, "value"), 253),
)


@st.composite
def oversized_strings(draw: st.DrawFn) -> BadRollout:
    base, path, limit = draw(st.sampled_from(LIMITED))
    length = draw(st.integers(limit + 1, limit * 40))
    # A name that would be valid but for its length (a DNS name: labels of at most 63).
    unit = draw(st.sampled_from(["a", "a.", "x_"])) if "configMapName" not in path else "a."
    if "Name" in str(path[-1]):
        unit = "a."
    value = (unit * length)[: length - 1] + "a"
    if path[-1] == "metric":
        value = value[: length - 7].replace(".", "_") + "_bucket"
    return BadRollout("oversized string", field_path(path), _set(base, path, value))


# PromQL and quoting that must never reach a query unescaped, or a name unrefused.
HOSTILE: tuple[str, ...] = (
    'gelu"}',
    'gelu"} or vector(1) or {a="',
    "gelu'} or up{a='",
    'a",arm=~".*',
    "x\\",
    'x\\"',
    "x\ny",
    "x\r\n",
    "x\t",
    "x\x00y",
    "`x`",
    "a b",
    "sum(up)",
    'up{job=~".+"}',
    '{__name__=~".+"}',
    "a=~b",
    "a!=b",
    "a;b",
    "ã",
    "\u202egelu",
    "gelu\u2028",
    "$(whoami)",
    "../etc",
    "..",
    ".",
    "",
)

_MODEL_NAME = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9_.-]{1,128}\Z")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*_bucket\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

# Where a hostile string goes, and what a valid value there looks like. For the free-form
# label values (None) the schema allows any text: there it must be escaped, not refused.
NAMED: tuple[tuple[Json, Path, re.Pattern[str] | None], ...] = (
    (VARIANT_BASE, ("model", "name"), _MODEL_NAME),
    (ROUTE_BASE, ("model", "name"), _MODEL_NAME),
    (ROUTE_BASE, ("baseline", "repository", "configMapName"), _DNS_NAME),
    (ROUTE_BASE, ("candidate", "repository", "configMapName"), _DNS_NAME),
    (ROUTE_BASE, ("traffic", "httpRouteName"), _DNS_NAME),
    (ROUTE_BASE, ("analysis", "outputSample", "configMapName"), _DNS_NAME),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "metric"), _METRIC),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "armLabel"), _LABEL),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "matchers", 0, "label"), _LABEL),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "matchers", 0, "value"), None),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "baselineValue"), None),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "candidateValue"), None),
)
FREE_FORM: frozenset[str] = frozenset(field_path(path) for _, path, valid in NAMED if not valid)
"""Fields whose value may be any string: a hostile one is valid there, and escaped."""


@st.composite
def hostile_names(draw: st.DrawFn) -> BadRollout:
    base, path, valid = draw(st.sampled_from(NAMED))
    value = draw(
        (
            st.sampled_from(HOSTILE)
            | st.builds(
                lambda a, b, c: a + b + c,
                st.sampled_from(["gelu", "a", ""]),
                st.sampled_from(HOSTILE),
                st.sampled_from(["", "_bucket", "x"]),
            )
        ).filter(lambda v: valid is None or not valid.match(v))
    )
    return BadRollout("PromQL or quotes in a name", field_path(path), _set(base, path, value))


# Places where an unknown key is put, and the key.
_OBJECTS: tuple[tuple[Json, Path], ...] = (
    (VARIANT_BASE, ()),
    (VARIANT_BASE, ("model",)),
    (VARIANT_BASE, ("baseline",)),
    (VARIANT_BASE, ("traffic",)),
    (VARIANT_BASE, ("traffic", "steps", 1)),
    (VARIANT_BASE, ("analysis",)),
    (VARIANT_BASE, ("analysis", "gates", "latency")),
    (VARIANT_BASE, ("analysis", "latencyHistogram")),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "matchers", 0)),
    (ROUTE_BASE, ("baseline", "repository")),
)
_UNKNOWN_KEYS = st.sampled_from(
    ["foo", "Variant", "weights", "model_name", "intervalseconds", "replica", "x-y", "$ref"]
) | st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{0,15}", fullmatch=True)


@st.composite
def unknown_fields(draw: st.DrawFn) -> BadRollout:
    base, path = draw(st.sampled_from(_OBJECTS))
    node: Any = base
    for part in path:
        node = node[part]
    key = draw(_UNKNOWN_KEYS.filter(lambda k: k not in node and k not in _KNOWN_KEYS))
    value = draw(st.sampled_from([1, "x", None, {"a": 1}, [1], True]))
    full = (*path, key)
    return BadRollout("unknown field", field_path(full), _set(base, full, value))


_KNOWN_KEYS = frozenset(
    {
        "model", "pod", "baseline", "candidate", "traffic", "analysis", "name", "image",
        "variant", "repository", "storageUri", "revision", "storage", "version", "replicas",
        "mode", "httpRouteName", "steps", "weight", "analysisSeconds", "enabled", "required",
        "metric", "armLabel", "baselineValue", "candidateValue", "unit", "matchers", "label",
        "value", "configMapName",
    }
)  # fmt: skip

# Required fields, and fields whose null the API server cannot drop.
REQUIRED: tuple[tuple[Json, Path], ...] = (
    (VARIANT_BASE, ("model",)),
    (VARIANT_BASE, ("model", "name")),
    (VARIANT_BASE, ("baseline",)),
    (VARIANT_BASE, ("candidate",)),
    (VARIANT_BASE, ("traffic", "steps", 0, "weight")),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "metric")),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "armLabel")),
    (VARIANT_BASE, ("analysis", "latencyHistogram", "matchers", 0, "value")),
    (ROUTE_BASE, ("baseline", "repository", "configMapName")),
)


@st.composite
def missing_or_null(draw: st.DrawFn) -> BadRollout:
    base, path = draw(st.sampled_from(REQUIRED))
    if draw(st.booleans()):
        return BadRollout("missing required field", field_path(path), _delete(base, path))
    return BadRollout("null", field_path(path), _set(base, path, None))


@st.composite
def nulls_in_lists(draw: st.DrawFn) -> BadRollout:
    """A null list item, which no pruning drops."""
    base, path = draw(
        st.sampled_from(
            [
                (VARIANT_BASE, ("traffic", "steps", 0)),
                (VARIANT_BASE, ("analysis", "latencyHistogram", "matchers", 0)),
                (VARIANT_BASE, ("analysis", "gates", "burnRate", "windows", 0)),
            ]
        )
    )
    return BadRollout("null", field_path(path), _set(base, path, None))


# Optional fields: a null there is dropped by the API server, and the default applies.
OPTIONAL: tuple[tuple[Json, Path], ...] = (
    (VARIANT_BASE, ("model", "image")),
    (VARIANT_BASE, ("baseline", "replicas")),
    (VARIANT_BASE, ("traffic", "mode")),
    (VARIANT_BASE, ("traffic", "steps")),
    (VARIANT_BASE, ("analysis", "intervalSeconds")),
    (VARIANT_BASE, ("analysis", "gates", "latency")),
    (VARIANT_BASE, ("analysis", "latencyHistogram")),
    (ROUTE_BASE, ("analysis", "outputSample", "configMapName")),
)
DROPPED_NULL = "null in an optional field"


@st.composite
def optional_nulls(draw: st.DrawFn) -> BadRollout:
    base, path = draw(st.sampled_from(OPTIONAL))
    return BadRollout(DROPPED_NULL, field_path(path), _set(base, path, None))


def _nest(depth: int, leaf: Any, as_list: bool) -> Any:
    for _ in range(depth):
        leaf = [leaf] if as_list else {"a": leaf}
    return leaf


@st.composite
def deep_nesting(draw: st.DrawFn) -> BadRollout:
    base, path, _ = draw(st.sampled_from(TYPED))
    depth = draw(st.integers(20, 300))
    as_list = draw(st.booleans())
    wanted = next(t for b, p, t in TYPED if (b, p) == (base, path))
    if (wanted, as_list) in {("array", True), ("object", False)}:
        as_list = not as_list  # the outermost level must be of the wrong type
    value = _nest(depth, 1, as_list)
    return BadRollout("deep nesting", field_path(path), _set(base, path, value))


_CROSS: tuple[Callable[[random.Random], tuple[str, Json]], ...] = (
    lambda r: (
        "spec.candidate.variant",
        _set(VARIANT_BASE, ("candidate", "variant"), VARIANT_BASE["baseline"]["variant"]),
    ),
    lambda r: (
        "spec.candidate.repository.configMapName",
        _set(ROUTE_BASE, ("candidate", "repository", "configMapName"), "weights-a"),
    ),
    lambda r: (
        "spec.traffic.httpRouteName",
        _delete(ROUTE_BASE, ("traffic", "httpRouteName")),
    ),
    lambda r: (
        "spec.traffic.httpRouteName",
        _set(VARIANT_BASE, ("traffic", "httpRouteName"), "gelu"),
    ),
    lambda r: (
        "spec.traffic.steps",
        _set(
            VARIANT_BASE,
            ("traffic", "steps"),
            [{"weight": w} for w in sorted(r.sample(range(1, 100), 3), reverse=True)],
        ),
    ),
    lambda r: (
        "spec.traffic.steps",
        _set(VARIANT_BASE, ("traffic", "steps", 0, "analysisSeconds"), r.randint(1, 29)),
    ),
    lambda r: (
        "spec.analysis.gates",
        _set(
            VARIANT_BASE,
            ("analysis", "gates"),
            {key: {"enabled": False} for key in VARIANT_BASE["analysis"]["gates"]},
        ),
    ),
    lambda r: (
        "spec.baseline",
        _set(VARIANT_BASE, ("baseline", "repository"), {"configMapName": "weights-a"}),
    ),
    lambda r: ("spec.baseline", _delete(VARIANT_BASE, ("baseline", "variant"))),
    lambda r: (
        "spec.traffic.steps",
        _set(
            VARIANT_BASE,
            ("traffic", "steps"),
            [{"weight": 5 + i} for i in range(r.randint(21, 40))],
        ),
    ),
    lambda r: ("spec.traffic.steps", _set(VARIANT_BASE, ("traffic", "steps"), [])),
    lambda r: (
        "spec.candidate.storage",
        _set(
            VARIANT_BASE,
            ("candidate",),
            {"storageUri": "pvc://claim/m", "revision": "1", "storage": {"region": "eu-1"}},
        ),
    ),
    lambda r: (
        "spec.baseline.storage.endpoint",
        _set(
            VARIANT_BASE,
            ("baseline",),
            {
                "storageUri": "gs://bucket/m",
                "revision": "1",
                "storage": {"endpoint": "https://minio:9000"},
            },
        ),
    ),
    lambda r: (
        "spec.analysis.gates.latency.detectRegression",
        _set(
            VARIANT_BASE,
            ("analysis", "gates", "latency", "detectRegression"),
            r.choice([0.01, 0.05, 0.1]),
        ),
    ),
)


@st.composite
def cross_field(draw: st.DrawFn) -> BadRollout:
    make = draw(st.sampled_from(_CROSS))
    field, spec = make(random.Random(draw(st.integers(0, 2**32))))
    return BadRollout("cross-field rule", field, spec)


@st.composite
def whole_spec(draw: st.DrawFn) -> BadRollout:
    spec: Any = draw(st.sampled_from([None, "spec", 1, [], [VARIANT_BASE], True, {}]))
    return BadRollout("whole spec wrong", "spec", spec)


CATEGORIES: tuple[st.SearchStrategy[BadRollout], ...] = (
    wrong_types(),
    out_of_range(),
    unknown_variants(),
    oversized_strings(),
    hostile_names(),
    unknown_fields(),
    missing_or_null(),
    nulls_in_lists(),
    optional_nulls(),
    deep_nesting(),
    cross_field(),
    whole_spec(),
)
bad_rollouts: st.SearchStrategy[BadRollout] = st.one_of(*CATEGORIES)
"""One invalid (or, in a free-form label value, hostile but valid) rollout of any category."""
