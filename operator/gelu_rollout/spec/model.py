"""The spec of a GeluModelRollout: types, defaults and validation rules.

Every model is frozen and rejects unknown fields. Python attributes are snake_case; the
manifest uses the camelCase aliases. Rules that involve more than one field ("cross-field
rules") are written once, as functions over the manifest-shaped (camelCase) mapping, so that
:func:`gelu_rollout.spec.parse.parse_spec` can apply them to raw input and report them next to
the per-field problems, while the model validators apply the same functions to constructed
models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import WithJsonSchema
from pydantic_core import PydanticCustomError

# --------------------------------------------------------------------------------------------
# Enumerations and constants
# --------------------------------------------------------------------------------------------

Variant = Literal["exact", "tanh", "sigmoid", "fp16", "int8-lut", "tanh-fp16-naive"]
"""Built-in GELU variants the operator renders into a Triton model repository."""
VARIANTS: Final[tuple[str, ...]] = get_args(Variant)

TrafficMode = Literal["ReplicaRatio", "HTTPRoute"]
TRAFFIC_MODES: Final[tuple[str, ...]] = get_args(TrafficMode)

InsufficientDataAction = Literal["Pause", "Rollback"]
INSUFFICIENT_DATA_ACTIONS: Final[tuple[str, ...]] = get_args(InsufficientDataAction)

DEFAULT_IMAGE: Final = "nvcr.io/nvidia/tritonserver:24.09-py3"
DEFAULT_STEP_ANALYSIS_SECONDS: Final = 300
DEFAULT_INTERVAL_SECONDS: Final = 60
MIN_WEIGHT: Final = 1
MAX_WEIGHT: Final = 99
MIN_STEPS: Final = 1
MAX_STEPS: Final = 20
MIN_BURN_RATE_WINDOWS: Final = 1
MAX_BURN_RATE_WINDOWS: Final = 4
MIN_INTERVAL_SECONDS: Final = 10
MAX_INTERVAL_SECONDS: Final = 3600
DEFAULT_PROGRESS_DEADLINE_SECONDS: Final = 600
"""As Kubernetes Deployments' and Flagger canaries' ``progressDeadlineSeconds``."""
MAX_PROGRESS_DEADLINE_SECONDS: Final = 86_400
"""A day: pods not ready after that (a node pool scaled from zero included) are not coming."""

GATE_KEYS: Final[tuple[str, ...]] = ("burnRate", "errorRate", "latency", "divergence", "nonFinite")
"""Manifest names of the gates, in the order the spec lists them."""

Problem = tuple[str, str]
"""A (path, message) pair; :mod:`gelu_rollout.spec.parse` turns these into SpecProblems."""

_MISSING: Final = object()

# --------------------------------------------------------------------------------------------
# Value description and field-level checks
# --------------------------------------------------------------------------------------------


def describe_value(value: object) -> str:
    """Render an input value for an error message: YAML-ish and short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, int) and value.bit_length() > 256:
        return "a very large integer"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


_MODEL_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_DNS_LABEL: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE: Final = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_DNS_SUBDOMAIN_MAX: Final = 253


def _check_model_name(value: str) -> str:
    if not _MODEL_NAME_RE.fullmatch(value) or value in {".", ".."}:
        raise PydanticCustomError(
            "model_name",
            "must be 1 to 128 characters of letters, digits, '_', '.' and '-' "
            "(and not '.' or '..'), got {got}",
            {"got": describe_value(value)},
        )
    return value


def is_dns_subdomain(value: object) -> bool:
    """Whether ``value`` is a Kubernetes DNS-1123 subdomain (an object name)."""
    return (
        isinstance(value, str)
        and len(value) <= _DNS_SUBDOMAIN_MAX
        and _DNS_SUBDOMAIN_RE.fullmatch(value) is not None
    )


def _check_dns_subdomain(value: str) -> str:
    if not is_dns_subdomain(value):
        raise PydanticCustomError(
            "dns_subdomain",
            "must be a DNS-1123 subdomain (at most 253 characters of lowercase letters, digits, "
            "'-' and '.', starting and ending with a letter or digit), got {got}",
            {"got": describe_value(value)},
        )
    return value


# The JSON schemas say what the validators check (the CRD's schema is derived from them).
ModelName = Annotated[
    StrictStr,
    AfterValidator(_check_model_name),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 128,
            "pattern": f"^{_MODEL_NAME_RE.pattern}$",
            "not": {"enum": [".", ".."]},
        }
    ),
]
DnsSubdomain = Annotated[
    StrictStr,
    AfterValidator(_check_dns_subdomain),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": _DNS_SUBDOMAIN_MAX,
            "pattern": f"^{_DNS_SUBDOMAIN_RE.pattern}$",
        }
    ),
]
Number = Annotated[float, Strict(), AllowInfNan(False)]
"""A finite float; YAML integers are accepted, strings and booleans are not."""

METRIC_NAME: Final = r"^[a-zA-Z_:][a-zA-Z0-9_:]*_bucket$"
"""A Prometheus histogram's ``_bucket`` series name."""
LABEL_NAME: Final = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
"""A Prometheus label name."""

# --------------------------------------------------------------------------------------------
# Cross-field rules over manifest-shaped (camelCase) mappings
# --------------------------------------------------------------------------------------------


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _get(raw: object, key: str) -> object:
    """``raw[key]`` if ``raw`` is a mapping that has it, else ``_MISSING``."""
    if isinstance(raw, Mapping) and key in raw:
        value: object = raw[key]
        return value
    return _MISSING


def _is_int(value: object, low: int | None = None, high: int | None = None) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _is_sequence(value: object) -> bool:
    return isinstance(value, list | tuple)


SOURCE_KEYS: Final = ("variant", "repository", "storageUri")
"""Where an arm's model comes from: exactly one is set."""


def arm_problems(raw: object, path: str) -> list[Problem]:
    """Exactly one source on an arm; ``revision`` with ``storageUri``; ``storage`` fits it."""
    if not isinstance(raw, Mapping):
        return []
    sources = [key for key in SOURCE_KEYS if raw.get(key) is not None]
    if len(sources) > 1:
        return [
            (
                _key(path, sources[1]),
                f"must not be set together with {sources[0]} (set exactly one)",
            )
        ]
    if not sources:
        return [(path, f"must set exactly one of {', '.join(SOURCE_KEYS)}")]
    problems: list[Problem] = []
    uri = raw.get("storageUri")
    if isinstance(uri, str):
        if raw.get("revision") is None:
            problems.append((_key(path, "revision"), "is required with storageUri"))
        storage = raw.get("storage")
        # Set means some setting is: an empty mapping (as the API server stores one whose
        # nulls it dropped, and as the model dumps an empty one) asks for nothing.
        settings = isinstance(storage, Mapping) and any(v is not None for v in storage.values())
        if uri.startswith("pvc://") and settings:
            problems.append(
                (_key(path, "storage"), "must not be set for pvc:// (the volume needs no access)")
            )
        if uri.startswith("gs://") and isinstance(storage, Mapping):
            for key in ("endpoint", "region"):
                if storage.get(key) is not None:
                    problems.append((_key(path, f"storage.{key}"), "is for s3:// only"))
    else:
        for key in ("revision", "storage", "version"):
            if raw.get(key) is not None:
                problems.append((_key(path, key), "is for storageUri only"))
    return problems


def traffic_problems(raw: object, path: str) -> list[Problem]:
    """``httpRouteName`` must match ``mode``; step weights must be strictly increasing."""
    if not isinstance(raw, Mapping):
        return []
    problems: list[Problem] = []
    mode = raw.get("mode", "ReplicaRatio")
    route = raw.get("httpRouteName")
    if mode == "HTTPRoute" and route is None:
        problems.append((_key(path, "httpRouteName"), "is required when mode is HTTPRoute"))
    elif mode == "ReplicaRatio" and route is not None:
        problems.append((_key(path, "httpRouteName"), "must not be set when mode is ReplicaRatio"))
    steps = raw.get("steps")
    if _is_sequence(steps):
        assert isinstance(steps, list | tuple)
        previous: tuple[int, int] | None = None  # (index, weight) of the last valid weight
        for i, step in enumerate(steps):
            weight = _get(step, "weight")
            if not _is_int(weight, MIN_WEIGHT, MAX_WEIGHT):
                continue
            assert isinstance(weight, int)
            if previous is not None and weight <= previous[1]:
                problems.append(
                    (
                        _key(_index(_key(path, "steps"), i), "weight"),
                        f"must be greater than {previous[1]} (the weight of "
                        f"steps[{previous[0]}]), got {weight}",
                    )
                )
            previous = (i, weight)
    return problems


def gates_problems(raw: object, path: str) -> list[Problem]:
    """At least one gate must be enabled (an absent gate is enabled by default)."""
    if not isinstance(raw, Mapping):
        return []
    for key in GATE_KEYS:
        gate = raw.get(key, _MISSING)
        if not isinstance(gate, Mapping):
            return []  # absent: enabled by default; wrong type: reported per field
        if gate.get("enabled", True) is not False:
            return []  # enabled, or not a boolean (reported per field)
    return [(path, "must enable at least one gate")]


def _is_number(value: object, low: float, high: float) -> bool:
    """A finite number (not a boolean) in ``(low, high]``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return math.isfinite(value) and low < value <= high


DEFAULT_MAX_REGRESSION: Final = 0.10


def latency_problems(raw: object, path: str) -> list[Problem]:
    """``detectRegression``, where set, must be above ``maxRegression`` (default 0.1)."""
    if not isinstance(raw, Mapping):
        return []
    detect = raw.get("detectRegression")
    limit = raw.get("maxRegression", DEFAULT_MAX_REGRESSION)
    if not (_is_number(detect, 0, 1000) and _is_number(limit, 0, 10)):
        return []  # absent, or wrong on its own (reported per field)
    assert isinstance(detect, int | float)
    assert isinstance(limit, int | float)
    if detect <= limit:
        return [
            (
                _key(path, "detectRegression"),
                f"must be above maxRegression ({limit:g}), got {describe_value(detect)}",
            )
        ]
    return []


def _config_map_name(arm: object) -> object:
    return _get(_get(arm, "repository"), "configMapName")


def rollout_problems(raw: object, path: str) -> list[Problem]:
    """Rules between sections: candidate differs from baseline; steps last an interval."""
    if not isinstance(raw, Mapping):
        return []
    problems: list[Problem] = []
    baseline, candidate = raw.get("baseline"), raw.get("candidate")
    variant = _get(candidate, "variant")
    if variant in VARIANTS and variant == _get(baseline, "variant"):
        problems.append(
            (
                _key(path, "candidate.variant"),
                f"must differ from baseline.variant, both are {describe_value(variant)}",
            )
        )
    uri, revision = _get(candidate, "storageUri"), _get(candidate, "revision")
    version = _get(candidate, "version")
    if (
        isinstance(uri, str)
        and isinstance(revision, str)
        and (uri, revision, version)
        == (_get(baseline, "storageUri"), _get(baseline, "revision"), _get(baseline, "version"))
    ):
        served = "" if version is None else f" version {describe_value(version)}"
        problems.append(
            (
                _key(path, "candidate.revision"),
                "must differ from baseline's storageUri, revision and version, both are "
                f"{describe_value(uri)} at {describe_value(revision)}{served}",
            )
        )
    name = _config_map_name(candidate)
    if is_dns_subdomain(name) and name == _config_map_name(baseline):
        problems.append(
            (
                _key(path, "candidate.repository.configMapName"),
                "must differ from baseline.repository.configMapName, "
                f"both are {describe_value(name)}",
            )
        )

    analysis = raw.get("analysis", _MISSING)
    interval = _get(analysis, "intervalSeconds")
    if interval is _MISSING and (analysis is _MISSING or isinstance(analysis, Mapping)):
        interval = DEFAULT_INTERVAL_SECONDS
    if not _is_int(interval, MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS):
        return problems
    assert isinstance(interval, int)
    traffic = raw.get("traffic", _MISSING)
    steps = _get(traffic, "steps")
    if steps is _MISSING and (traffic is _MISSING or isinstance(traffic, Mapping)):
        shortest = min(step.analysis_seconds for step in DEFAULT_STEPS)
        if interval > shortest:
            problems.append(
                (
                    _key(path, "analysis.intervalSeconds"),
                    f"must be at most {shortest} (the analysisSeconds of the default "
                    f"traffic steps), got {interval}",
                )
            )
    elif isinstance(steps, list | tuple):
        for i, step in enumerate(steps):
            if not isinstance(step, Mapping):
                continue
            seconds = step.get("analysisSeconds", _MISSING)
            note = ""
            if seconds is _MISSING:
                seconds, note = DEFAULT_STEP_ANALYSIS_SECONDS, " (the default)"
            if _is_int(seconds, 1) and seconds < interval:
                problems.append(
                    (
                        _key(path, f"traffic.steps[{i}].analysisSeconds"),
                        f"must be at least analysis.intervalSeconds ({interval}), "
                        f"got {seconds}{note}",
                    )
                )
    return problems


def _length_problem(raw: object, path: str, low: int, high: int, noun: str) -> list[Problem]:
    if not _is_sequence(raw):
        return []
    assert isinstance(raw, list | tuple)
    if len(raw) < low:
        return [(path, f"must have at least {low} {noun}{'s' if low != 1 else ''}, got {len(raw)}")]
    if len(raw) > high:
        return [(path, f"must have at most {high} {noun}s, got {len(raw)}")]
    return []


def length_problems(raw: object, path: str) -> list[Problem]:
    """List lengths, judged on the raw lists (pydantic counts only the items that validated)."""
    traffic = _key(path, "traffic")
    windows = _key(path, "analysis.gates.burnRate.windows")
    return [
        *_length_problem(
            _get(_get(raw, "traffic"), "steps"),
            _key(traffic, "steps"),
            MIN_STEPS,
            MAX_STEPS,
            "step",
        ),
        *_length_problem(
            _get(_get(_get(_get(raw, "analysis"), "gates"), "burnRate"), "windows"),
            windows,
            MIN_BURN_RATE_WINDOWS,
            MAX_BURN_RATE_WINDOWS,
            "window",
        ),
    ]


def cross_field_problems(raw: object, path: str = "spec") -> list[Problem]:
    """Every cross-field problem of a raw spec mapping (camelCase keys), in document order.

    Each rule looks only at values that are individually valid, so a value that is already
    wrong on its own is not reported a second time.
    """
    if not isinstance(raw, Mapping):
        return []
    analysis = raw.get("analysis")
    return [
        *arm_problems(raw.get("baseline"), _key(path, "baseline")),
        *arm_problems(raw.get("candidate"), _key(path, "candidate")),
        *traffic_problems(raw.get("traffic"), _key(path, "traffic")),
        *gates_problems(_get(analysis, "gates"), _key(path, "analysis.gates")),
        *latency_problems(
            _get(_get(analysis, "gates"), "latency"), _key(path, "analysis.gates.latency")
        ),
        *rollout_problems(raw, path),
        *length_problems(raw, path),
    ]


def _raise_problems(problems: list[Problem]) -> None:
    if problems:
        text = "; ".join(f"{p}: {m}" if p else m for p, m in problems)
        raise PydanticCustomError("cross_field", "{problems}", {"problems": text})


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class SpecModel(BaseModel):
    """Base of the spec types: frozen, unknown fields rejected, camelCase aliases."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
    )


class ModelSpec(SpecModel):
    """The Triton model being rolled out and the server that serves it."""

    name: ModelName = Field(description="The Triton model name, used for both arms.")
    image: StrictStr = Field(
        default=DEFAULT_IMAGE, min_length=1, description="The Triton server image both arms run."
    )


class RepositorySpec(SpecModel):
    """A user-provided Triton model repository, stored in a ConfigMap."""

    config_map_name: DnsSubdomain = Field(
        description=(
            "The ConfigMap, in the rollout's namespace, that holds the model "
            "repository: key config.pbtxt, and the version's files (such as "
            "model.py) under 1/."
        )
    )


STORAGE_URI: Final = (
    r"^(s3|gs)://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](/[^\s]*)?$"
    r"|^pvc://[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(/[^\s]*)?$"
)
"""``s3://BUCKET[/PREFIX]``, ``gs://BUCKET[/PREFIX]`` or ``pvc://CLAIM[/PATH]``."""


class StorageSpec(SpecModel):
    """How the arm's pods reach an object store (``storageUri`` with ``s3://`` or ``gs://``)."""

    endpoint: StrictStr | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+$",
        max_length=253,
        description=(
            "An S3-compatible server's URL (http://host:port), for S3 outside AWS; default: AWS."
        ),
    )
    region: StrictStr | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+$",
        max_length=50,
        description="The S3 region (AWS_DEFAULT_REGION).",
    )
    credentials_secret_name: DnsSubdomain | None = Field(
        default=None,
        description=(
            "A Secret in the rollout's namespace the pods read their credentials from: for "
            "s3, keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN if "
            "present); for gs, key key.json (a service-account key). Default: the pod's "
            "service account (cloud workload identity)."
        ),
    )


class Toleration(SpecModel):
    """A Kubernetes toleration."""

    key: StrictStr | None = Field(default=None, max_length=316, description="The taint key.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="How to match.")
    value: StrictStr | None = Field(default=None, max_length=63, description="The taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="The taint effect."
    )
    toleration_seconds: StrictInt | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated."
    )


class EnvVar(SpecModel):
    """An environment variable of the Triton container."""

    name: StrictStr = Field(
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=253, description="Its name."
    )
    value: StrictStr | None = Field(default=None, description="Its value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class Resources(SpecModel):
    """Requests and limits of the Triton container, as Kubernetes quantities."""

    requests: dict[str, StrictStr] | None = Field(
        default=None, description="e.g. cpu: '2', memory: 8Gi."
    )
    limits: dict[str, StrictStr] | None = Field(
        default=None, description="e.g. nvidia.com/gpu: '1', memory: 16Gi."
    )


class ObjectName(SpecModel):
    """A reference by name."""

    name: DnsSubdomain = Field(description="The object's name.")


TritonArgument = Annotated[StrictStr, Field(description="One tritonserver argument.")]


class PodSpec(SpecModel):
    """What the Triton pods of an arm run with. Each field left out is inherited (see
    ``spec.pod``)."""

    image: StrictStr | None = Field(
        default=None, min_length=1, max_length=512, description="The Triton server image."
    )
    resources: Resources | None = Field(default=None, description="The container's resources.")
    node_selector: dict[str, StrictStr] | None = Field(
        default=None, description="Node labels the pods must run on."
    )
    tolerations: tuple[Toleration, ...] | None = Field(
        default=None, max_length=50, description="Taints the pods tolerate."
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes Affinity (nodeAffinity, podAffinity, podAntiAffinity).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    env: tuple[EnvVar, ...] | None = Field(
        default=None, max_length=100, description="Environment variables, merged by name."
    )
    service_account_name: DnsSubdomain | None = Field(
        default=None, description="The pods' service account (cloud identity for storage)."
    )
    image_pull_secrets: tuple[ObjectName, ...] | None = Field(
        default=None, max_length=20, description="Secrets to pull the image with."
    )
    triton_args: tuple[TritonArgument, ...] | None = Field(
        default=None,
        max_length=50,
        description="Extra tritonserver arguments, after the operator's own.",
    )


class ArmSpec(SpecModel):
    """One side of the comparison: a built-in variant, a user repository in a ConfigMap or a
    model repository in object storage or on a volume, and its replicas."""

    variant: Variant | None = Field(
        default=None,
        description=(
            "A built-in GELU variant; the operator renders it into a Triton "
            "model repository. Set exactly one of variant and repository."
        ),
    )
    repository: RepositorySpec | None = Field(
        default=None,
        description=(
            "A Triton model repository you provide. Set exactly one of variant and repository."
        ),
    )
    storage_uri: StrictStr | None = Field(
        default=None,
        pattern=STORAGE_URI,
        max_length=1024,
        description=(
            "A Triton model repository (a folder holding the model's folder) that Triton "
            "reads itself: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, or pvc://CLAIM/PATH (a "
            "PersistentVolumeClaim mounted read-only). Needs revision."
        ),
    )
    revision: StrictStr | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description=(
            "Which content of storageUri this is (a version, a commit, a date): the operator "
            "does not read the store, so a new revision or a new storageUri is what makes a "
            "new revision of the arm."
        ),
    )
    storage: StorageSpec | None = Field(
        default=None, description="How the pods reach the object store of storageUri."
    )
    version: StrictInt | None = Field(
        default=None,
        ge=1,
        description=(
            "The version of the model this arm serves, of those in storageUri: its pods "
            "load the model with Triton's version policy set to this one version, and count "
            "as ready only once it is. Without it, the model's own config.pbtxt decides "
            "(Triton's default: the latest version). With storageUri only."
        ),
    )
    replicas: StrictInt = Field(
        default=1, ge=1, le=100, description="Triton server replicas for this arm."
    )
    pod: PodSpec | None = Field(
        default=None,
        description=(
            "This arm's pod settings, over spec.pod. The candidate inherits the baseline's "
            "placement (resources, nodeSelector, tolerations, affinity) unless it sets its own."
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> ArmSpec:
        _raise_problems(arm_problems(self.model_dump(by_alias=True), ""))
        return self


class TrafficStep(SpecModel):
    """One step of the rollout: the candidate's traffic weight and how long it is analysed."""

    weight: StrictInt = Field(
        ge=MIN_WEIGHT,
        le=MAX_WEIGHT,
        description="Percent of traffic sent to the candidate during the step.",
    )
    analysis_seconds: StrictInt = Field(
        default=DEFAULT_STEP_ANALYSIS_SECONDS,
        ge=1,
        description=(
            "How long the step is analysed before moving on (it may be "
            "extended, see analysis.insufficientData); at least "
            "analysis.intervalSeconds."
        ),
    )


DEFAULT_STEPS: Final[tuple[TrafficStep, ...]] = (
    TrafficStep(weight=10),
    TrafficStep(weight=25),
    TrafficStep(weight=50),
)


class TrafficSpec(SpecModel):
    """How traffic is shifted to the candidate, and in which steps."""

    mode: TrafficMode = Field(
        default="ReplicaRatio",
        description=(
            "ReplicaRatio gives the candidate its share of traffic through its "
            "share of replicas behind one Service; HTTPRoute sets backend "
            "weights on a Gateway API HTTPRoute."
        ),
    )
    http_route_name: DnsSubdomain | None = Field(
        default=None,
        description=(
            "The HTTPRoute whose weights the operator sets; required when mode "
            "is HTTPRoute, not allowed otherwise."
        ),
    )
    steps: tuple[TrafficStep, ...] = Field(
        default=DEFAULT_STEPS,
        min_length=MIN_STEPS,
        max_length=MAX_STEPS,
        description=(
            "The traffic steps, in order, with strictly increasing weights. "
            "When the last step passes, the candidate is promoted."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrafficSpec:
        _raise_problems(traffic_problems(self.model_dump(by_alias=True), ""))
        return self


class InsufficientDataSpec(SpecModel):
    """What to do when a step ends without enough data for a decision."""

    max_extension_seconds: StrictInt = Field(
        default=600,
        ge=0,
        description=(
            "How long a step may run past its analysisSeconds while waiting for enough data."
        ),
    )
    action: InsufficientDataAction = Field(
        default="Pause",
        description=(
            "What happens when the data is still insufficient at that deadline:"
            " hold the rollout for a person to decide (Pause), or roll back "
            "(Rollback)."
        ),
    )


class SloSpec(SpecModel):
    """The service-level objectives the candidate is held to."""

    availability: Number = Field(
        default=0.999,
        gt=0.5,
        lt=1,
        description=("Objective for the success ratio. The error budget is 1 - availability."),
    )
    latency_p99_ms: Number = Field(
        default=250.0, gt=0, description="Absolute ceiling for P99 latency, in milliseconds."
    )


class BurnRateWindow(SpecModel):
    """One multiwindow burn-rate alert: long window = factor x step analysisSeconds."""

    burn_rate: Number = Field(
        gt=1,
        description=("Burn rate (multiples of the sustainable rate) at which the window fires."),
    )
    long_window_factor: Number = Field(
        gt=0,
        description=(
            "Long window length as a multiple of the step's analysisSeconds; "
            "the short window is a twelfth of the long one."
        ),
    )


DEFAULT_BURN_RATE_WINDOWS: Final[tuple[BurnRateWindow, ...]] = (
    BurnRateWindow(burn_rate=14.4, long_window_factor=1.0),
    BurnRateWindow(burn_rate=6.0, long_window_factor=3.0),
)


class BurnRateGate(SpecModel):
    """Multiwindow, multi-burn-rate gate on the candidate's error budget."""

    enabled: StrictBool = Field(default=True, description="Whether the gate runs.")
    required: StrictBool = Field(
        default=True,
        description=(
            "Whether the rollout needs this gate's verdict. Required: while the gate has no "
            "data the step waits, then follows insufficientData. Optional: a gate whose "
            "series do not exist is left out, and the ledger and status say so."
        ),
    )
    windows: tuple[BurnRateWindow, ...] = Field(
        default=DEFAULT_BURN_RATE_WINDOWS,
        min_length=MIN_BURN_RATE_WINDOWS,
        max_length=MAX_BURN_RATE_WINDOWS,
        description=(
            "The burn-rate windows; each fires when the candidate burns error "
            "budget faster than its burnRate in both its long and its short "
            "window."
        ),
    )


class ErrorRateGate(SpecModel):
    """Gate on the candidate's error rate, absolute and relative to the baseline."""

    enabled: StrictBool = Field(default=True, description="Whether the gate runs.")
    required: StrictBool = Field(
        default=True,
        description=(
            "Whether the rollout needs this gate's verdict. Required: while the gate has no "
            "data the step waits, then follows insufficientData. Optional: a gate whose "
            "series do not exist is left out, and the ledger and status say so."
        ),
    )
    max_burn_rate: Number = Field(
        default=1.0,
        gt=0,
        description=("Highest allowed candidate error ratio, in multiples of the error budget."),
    )
    max_ratio_to_baseline: Number = Field(
        default=2.0,
        ge=1,
        description=("Highest allowed candidate error ratio, in multiples of the baseline's."),
    )
    min_requests: StrictInt = Field(
        default=500, ge=1, description="Candidate requests needed before the gate gives a verdict."
    )
    detect_burn_rate: Number = Field(
        default=6.0,
        gt=1,
        le=1000,
        description=(
            "The burn rate (multiples of the error budget) the gate must be able to catch, "
            "with analysis.power, before it may pass on no evidence of harm (the power plan)."
        ),
    )


class LatencyGate(SpecModel):
    """Gate on the candidate's P99 latency: regression against baseline and the SLO ceiling."""

    enabled: StrictBool = Field(default=True, description="Whether the gate runs.")
    required: StrictBool = Field(
        default=True,
        description=(
            "Whether the rollout needs this gate's verdict. Required: while the gate has no "
            "data the step waits, then follows insufficientData. Optional: a gate whose "
            "series do not exist is left out, and the ledger and status say so."
        ),
    )
    max_regression: Number = Field(
        default=DEFAULT_MAX_REGRESSION,
        gt=0,
        le=10,
        description=("The candidate's P99 may be at most baseline P99 x (1 + maxRegression)."),
    )
    min_ticks: StrictInt = Field(
        default=3,
        ge=1,
        description=(
            "Ticks of latency data needed before the gate gives a verdict (without a latency "
            "histogram; with one, a cap on each tick's evidence keeps one tick from deciding)."
        ),
    )
    detect_regression: Number | None = Field(
        default=None,
        gt=0,
        le=1000,
        description=(
            "The P99 regression (candidate over baseline, minus 1) the gate must be able to "
            "catch, with analysis.power, before it may pass on no evidence of harm; above "
            "maxRegression. Default: the larger of 0.5 and 3 x maxRegression."
        ),
    )

    @property
    def detectable_regression(self) -> float:
        """``detect_regression``, or its default."""
        if self.detect_regression is not None:
            return self.detect_regression
        return max(0.5, 3.0 * self.max_regression)

    @model_validator(mode="after")
    def _detectable(self) -> LatencyGate:
        _raise_problems(latency_problems(self.model_dump(by_alias=True), ""))
        return self


class DivergenceGate(SpecModel):
    """Gate on the KL divergence of candidate outputs from baseline outputs."""

    enabled: StrictBool = Field(default=True, description="Whether the gate runs.")
    required: StrictBool = Field(
        default=True,
        description=(
            "Whether the rollout needs this gate's verdict. Required: while the gate has no "
            "data the step waits, then follows insufficientData. Optional: a gate whose "
            "series do not exist is left out, and the ledger and status say so."
        ),
    )
    max_kl: Number = Field(
        default=0.01,
        gt=0,
        alias="maxKL",
        description=(
            "Highest allowed KL divergence of the candidate's output histogram from the baseline's."
        ),
    )
    min_outputs: StrictInt = Field(
        default=2000, ge=1, description="Candidate outputs needed before the gate gives a verdict."
    )
    smoothing: Number = Field(
        default=0.5,
        gt=0,
        description=(
            "Pseudo-count added to every histogram bucket, so empty buckets do "
            "not make the divergence infinite."
        ),
    )


class NonFiniteGate(SpecModel):
    """Gate on NaN / infinite outputs from the candidate."""

    enabled: StrictBool = Field(default=True, description="Whether the gate runs.")
    required: StrictBool = Field(
        default=True,
        description=(
            "Whether the rollout needs this gate's verdict. Required: while the gate has no "
            "data the step waits, then follows insufficientData. Optional: a gate whose "
            "series do not exist is left out, and the ledger and status say so."
        ),
    )
    max_per_million: Number = Field(
        default=0.0,
        ge=0,
        description=(
            "Non-finite outputs allowed per million outputs. At 0, a single one fails the gate."
        ),
    )


class GatesSpec(SpecModel):
    """The promotion gates."""

    burn_rate: BurnRateGate = Field(
        default_factory=BurnRateGate,
        description=("Multiwindow, multi-burn-rate check on the candidate's error budget."),
    )
    error_rate: ErrorRateGate = Field(
        default_factory=ErrorRateGate,
        description=(
            "The candidate's error ratio, against the error budget and against the baseline."
        ),
    )
    latency: LatencyGate = Field(
        default_factory=LatencyGate,
        description=(
            "The candidate's P99 latency, against the baseline and against the SLO ceiling."
        ),
    )
    divergence: DivergenceGate = Field(
        default_factory=DivergenceGate,
        description=(
            "How far the candidate's outputs are from the baseline's, as the KL"
            " divergence between histograms of their output values."
        ),
    )
    non_finite: NonFiniteGate = Field(
        default_factory=NonFiniteGate,
        description="NaN and infinite values among the candidate's outputs.",
    )

    @model_validator(mode="after")
    def _one_enabled(self) -> GatesSpec:
        _raise_problems(gates_problems(self.model_dump(by_alias=True), ""))
        return self


class ProbeSpec(SpecModel):
    """The paired probe: the same inputs to baseline and candidate before any traffic shifts."""

    enabled: StrictBool = Field(default=True, description="Whether the probe runs.")
    max_abs_error: Number = Field(
        default=0.05,
        gt=0,
        description=(
            "Largest allowed absolute difference between baseline and candidate"
            " outputs on the typical inputs. Any non-finite output the baseline"
            " does not also produce fails the probe."
        ),
    )
    max_latency_ratio: Number = Field(
        default=3.0,
        gt=1,
        description=(
            "Highest allowed ratio of the candidate's request time to the baseline's on"
            " the same inputs: the median over batches of the per-batch ratio of median"
            " client-side times, after a warm-up round. Above it the probe fails."
        ),
    )
    rows: StrictInt = Field(default=256, ge=16, le=4096, description="Input rows sent to each arm.")


class OutputSampleSpec(SpecModel):
    """The sampled comparison: during every step the operator sends the same few inputs to
    both arms and feeds the output gates from the answers it computes itself."""

    enabled: StrictBool = Field(
        default=True,
        description=(
            "Whether the operator sends the sample each tick. The output gates (nonFinite, "
            "divergence) use the model's own output metrics where both arms export them, "
            "and the sample's answers otherwise."
        ),
    )
    rows: StrictInt = Field(
        default=8,
        ge=1,
        le=256,
        description=(
            "Input rows sent to each arm per analysis tick, in one request (fewer where the "
            "model's max_batch_size is smaller): one request per arm per intervalSeconds."
        ),
    )
    config_map_name: DnsSubdomain | None = Field(
        default=None,
        description=(
            "A ConfigMap of sample inputs: a key ending in .json holding an object of input "
            "name to rows, or binaryData keys NAME.npy holding each input's rows. Default: a "
            "seeded mix generated from the model's declared inputs."
        ),
    )
    max_abs_error: Number | None = Field(
        default=None,
        gt=0,
        description=(
            "Largest allowed absolute difference between the arms' answers to the same "
            "sampled inputs; above it the divergence gate fails. Default: "
            "analysis.probe.maxAbsError where the probe runs, else no limit (KL only)."
        ),
    )


class LabelMatcher(SpecModel):
    """One label the series must carry with this value."""

    label: StrictStr = Field(pattern=LABEL_NAME, max_length=100, description="The label's name.")
    value: StrictStr = Field(min_length=1, max_length=253, description="Its value.")


class LatencyHistogramSource(SpecModel):
    """A request-duration histogram per arm, as a Gateway or service mesh exports it.

    Where one exists, the latency gates judge counts of requests above its bucket edges
    (docs/analysis.md); without it they fall back on Triton's own counters and summaries.
    """

    metric: StrictStr = Field(
        pattern=METRIC_NAME,
        max_length=200,
        description=(
            "The histogram's _bucket series, e.g. istio_request_duration_milliseconds_bucket "
            "or envoy_cluster_upstream_rq_time_bucket."
        ),
    )
    arm_label: StrictStr = Field(
        pattern=LABEL_NAME,
        max_length=100,
        description="The label whose value tells the arms apart (e.g. destination_service_name).",
    )
    baseline_value: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="That label's value for the baseline (default: the baseline Service's name).",
    )
    candidate_value: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description=(
            "That label's value for the candidate (default: the candidate Service's name)."
        ),
    )
    unit: Literal["seconds", "milliseconds"] = Field(
        default="seconds", description="The unit of the le bucket edges."
    )
    matchers: tuple[LabelMatcher, ...] = Field(
        default=(),
        max_length=20,
        description="More label=value matchers the series must carry (e.g. the namespace).",
    )


class AnalysisSpec(SpecModel):
    """How often and against what the candidate is judged."""

    interval_seconds: StrictInt = Field(
        default=DEFAULT_INTERVAL_SECONDS,
        ge=MIN_INTERVAL_SECONDS,
        le=MAX_INTERVAL_SECONDS,
        description=(
            "How often the gates are evaluated (one evaluation is a tick); at "
            "most every step's analysisSeconds."
        ),
    )
    warmup_seconds: StrictInt = Field(
        default=60,
        ge=0,
        description=(
            "After every weight change, latency samples from this many seconds "
            "are ignored (cold start)."
        ),
    )
    false_rollback_budget: Number = Field(
        default=0.01,
        gt=0,
        le=0.2,
        description=(
            "The accepted chance of rolling back a healthy candidate over a "
            "whole rollout, shared by all gates and all looks."
        ),
    )
    ledger_limit: StrictInt = Field(
        default=50,
        ge=10,
        le=500,
        description="How many decision-ledger entries the status keeps (the newest).",
    )
    insufficient_data: InsufficientDataSpec = Field(
        default_factory=InsufficientDataSpec,
        description="What happens when a step has too little data to decide.",
    )
    slo: SloSpec = Field(
        default_factory=SloSpec,
        description="The service-level objectives the candidate is held to.",
    )
    gates: GatesSpec = Field(
        default_factory=GatesSpec, description="The promotion gates; at least one must be enabled."
    )
    probe: ProbeSpec = Field(
        default_factory=ProbeSpec,
        description=(
            "The paired probe: the same inputs to baseline and candidate before any traffic moves."
        ),
    )
    output_sample: OutputSampleSpec = Field(
        default_factory=OutputSampleSpec,
        description=(
            "The sampled comparison of outputs during every step, for models that export no "
            "output metrics."
        ),
    )
    power: Number = Field(
        default=0.8,
        ge=0.5,
        lt=1,
        description=(
            "With what probability each gate must be able to catch its stated regression "
            "(errorRate.detectBurnRate, latency.detectRegression) before it passes on no "
            "evidence of harm."
        ),
    )
    latency_histogram: LatencyHistogramSource | None = Field(
        default=None,
        description=(
            "A request-duration histogram per arm (a Gateway's or mesh's); without one the "
            "latency gates use Triton's counters and summary quantiles."
        ),
    )


class RolloutSpec(SpecModel):
    """The spec of a GeluModelRollout."""

    model: ModelSpec = Field(description="The Triton model being rolled out.")
    pod: PodSpec = Field(
        default_factory=PodSpec,
        description="Pod settings of both arms; spec.baseline.pod and spec.candidate.pod win.",
    )
    baseline: ArmSpec = Field(description="What serves today.")
    candidate: ArmSpec = Field(description="What is being tried; it must differ from the baseline.")
    traffic: TrafficSpec = Field(
        default_factory=TrafficSpec, description="How traffic moves to the candidate."
    )
    analysis: AnalysisSpec = Field(
        default_factory=AnalysisSpec, description="How the candidate is judged."
    )
    progress_deadline_seconds: StrictInt = Field(
        default=DEFAULT_PROGRESS_DEADLINE_SECONDS,
        ge=1,
        le=MAX_PROGRESS_DEADLINE_SECONDS,
        description=(
            "How long the arms' pods may stay not ready (starting, crash-looping, not "
            "scheduled) before an unfinished rollout is rolled back."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> RolloutSpec:
        _raise_problems(rollout_problems(self.model_dump(by_alias=True), ""))
        return self

    @property
    def error_budget(self) -> float:
        """The SLO error budget: ``1 - availability``."""
        return 1.0 - self.analysis.slo.availability

    @property
    def statistical_gate_count(self) -> int:
        """How many statistical tests run per look (for splitting the false-rollback budget).

        burnRate, errorRate and divergence count one each, latency two (regression and the
        absolute ceiling); nonFinite counts one only when it tolerates some non-finite
        outputs (``maxPerMillion > 0``), since a zero tolerance is a deterministic check.
        """
        gates = self.analysis.gates
        count = 0
        count += 1 if gates.burn_rate.enabled else 0
        count += 1 if gates.error_rate.enabled else 0
        count += 2 if gates.latency.enabled else 0
        count += 1 if gates.divergence.enabled else 0
        count += 1 if gates.non_finite.enabled and gates.non_finite.max_per_million > 0 else 0
        return count

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready camelCase mapping, defaults filled in, nulls left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
