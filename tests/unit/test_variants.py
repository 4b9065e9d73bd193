"""GELU variants: the rendered model repository, the catalog, and the model's numbers.

``triton_model.py`` runs inside Triton; here it is imported in-process with a stand-in for
``triton_python_backend_utils`` so that each activation can be checked against a float64
reference, and the model class driven the way the Python backend drives it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy.special import erf, erfc

from gelu_rollout.spec.model import VARIANTS
from gelu_rollout.variants import (
    CATALOG,
    HIDDEN,
    INPUTS,
    OUTPUT_BUCKETS,
    REPOSITORY_PATHS,
    WEIGHT_SEED,
    Faults,
    catalog,
    reference_outputs,
    render_repository,
    repository_revision,
    write_repository,
)
from gelu_rollout.variants.repository import render_config

MODEL_FILE = Path(catalog.__file__).with_name("triton_model.py")
F64 = npt.NDArray[np.float64]

# float16 keeps 11 significant bits: each rounding is off by at most 2^-11 relative.
FP16_EPS = 2.0**-11
# The largest slope of exact GELU (at x ≈ 1.5): d/dx x·Φ(x) = Φ(x) + x·φ(x) ≤ 1.1290.
GELU_MAX_SLOPE = 1.1290
LUT_STEP = 6.0 / 127


def parameters(config: str) -> dict[str, str]:
    """The ``parameters`` of a rendered config.pbtxt, as key -> string value."""
    found = re.findall(
        r'parameters: \{ key: "([^"]+)" value: \{ string_value: "([^"]*)" \} \}', config
    )
    return dict(found)


# --- the rendered repository ---------------------------------------------------------------


def test_render_config_declares_the_model() -> None:
    config = render_config("gelu-mlp", "tanh")
    assert 'name: "gelu-mlp"' in config
    assert 'backend: "python"' in config
    assert "max_batch_size: 256" in config
    assert f'name: "INPUT0" data_type: TYPE_FP32 dims: [ {INPUTS} ]' in config
    assert f'name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {INPUTS} ]' in config
    assert "dynamic_batching" in config


def test_render_config_parameters() -> None:
    params = parameters(render_config("gelu-mlp", "int8-lut"))
    assert params["variant"] == "int8-lut"
    assert params["weight_seed"] == str(WEIGHT_SEED)
    assert (params["inputs"], params["hidden"]) == (str(INPUTS), str(HIDDEN))
    # Every bucket bound, in order, and nothing else.
    bounds = tuple(float(b) for b in params["output_buckets"].split(","))
    assert bounds == OUTPUT_BUCKETS
    assert list(bounds) == sorted(bounds)
    assert "inject_error_rate" not in params
    assert "inject_latency_ms" not in params


def test_render_config_fault_parameters_only_when_set() -> None:
    only_errors = parameters(render_config("m", "exact", Faults(error_rate=0.25)))
    assert only_errors["inject_error_rate"] == "0.25"
    assert "inject_latency_ms" not in only_errors
    only_latency = parameters(render_config("m", "exact", Faults(latency_ms=30)))
    assert only_latency["inject_latency_ms"] == "30"
    assert "inject_error_rate" not in only_latency
    both = parameters(render_config("m", "exact", Faults(error_rate=1.0, latency_ms=2.5)))
    assert (both["inject_error_rate"], both["inject_latency_ms"]) == ("1", "2.5")


def test_render_repository_keys() -> None:
    files = render_repository("gelu-mlp", "sigmoid")
    assert set(files) == {"config.pbtxt", "model.py"}
    assert files["model.py"] == MODEL_FILE.read_text()
    assert parameters(files["config.pbtxt"])["variant"] == "sigmoid"


@pytest.mark.parametrize("render", [render_config, render_repository])
def test_unknown_variant_names_the_choices(render: Callable[[str, str], object]) -> None:
    with pytest.raises(ValueError, match="unknown variant 'gelu2'") as error:
        render("m", "gelu2")
    for name in CATALOG:
        assert name in str(error.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"error_rate": -0.1},
        {"error_rate": 1.5},
        {"error_rate": math.nan},
        {"latency_ms": -1.0},
        {"latency_ms": math.nan},
        {"latency_ms": math.inf},
    ],
)
def test_faults_reject_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Faults(**kwargs)


def test_faults_accept_the_bounds() -> None:
    assert Faults(error_rate=0.0, latency_ms=0.0) == Faults()
    assert Faults(error_rate=1.0, latency_ms=500.0).error_rate == 1.0


def test_repository_revision_is_a_short_stable_hash() -> None:
    files = render_repository("gelu-mlp", "tanh")
    revision = repository_revision(files)
    assert re.fullmatch(r"[0-9a-f]{10}", revision)
    assert repository_revision(dict(files)) == revision
    assert repository_revision(dict(reversed(list(files.items())))) == revision
    assert repository_revision(render_repository("gelu-mlp", "tanh")) == revision


@pytest.mark.parametrize(
    "change",
    [
        lambda f: render_repository("gelu-mlp", "exact"),
        lambda f: render_repository("other-name", "tanh"),
        lambda f: render_repository("gelu-mlp", "tanh", faults=Faults(latency_ms=1)),
        lambda f: {**f, "model.py": f["model.py"] + "\n"},
        lambda f: {**f, "extra.txt": ""},
        lambda f: {k: v for k, v in f.items() if k != "model.py"},
    ],
    ids=["variant", "model-name", "faults", "model-text", "extra-file", "missing-file"],
)
def test_repository_revision_changes_with_any_content_change(
    change: Callable[[dict[str, str]], dict[str, str]],
) -> None:
    files = render_repository("gelu-mlp", "tanh")
    assert repository_revision(change(files)) != repository_revision(files)


def test_repository_revision_keeps_keys_and_values_apart() -> None:
    assert repository_revision({"a": "bc"}) != repository_revision({"ab": "c"})
    assert repository_revision({"a": "", "b": "c"}) != repository_revision({"a": "b", "c": ""})


def test_write_repository_layout(tmp_path: Path) -> None:
    files = {**render_repository("gelu-mlp", "fp16"), "lut.txt": "0 1 2"}
    model_dir = write_repository(tmp_path, "gelu-mlp", files)
    assert model_dir == tmp_path / "gelu-mlp"
    assert (model_dir / "config.pbtxt").read_text() == files["config.pbtxt"]
    assert (model_dir / "1" / "model.py").read_text() == files["model.py"]
    # Keys other than config.pbtxt go under the version folder.
    assert (model_dir / "1" / "lut.txt").read_text() == "0 1 2"
    written = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
    assert written == ["1/lut.txt", "1/model.py", "config.pbtxt"]


def test_repository_paths() -> None:
    assert dict(REPOSITORY_PATHS) == {"config.pbtxt": "config.pbtxt", "model.py": "1/model.py"}


def test_catalog_matches_the_spec() -> None:
    assert tuple(CATALOG) == VARIANTS
    for name, info in CATALOG.items():
        assert info.name == name
        assert info.tolerance > 0
    assert [n for n, i in CATALOG.items() if not i.finite_on_extremes] == ["tanh-fp16-naive"]


def test_reference_outputs_shape_and_dtype() -> None:
    rows = np.random.default_rng(0).normal(size=(5, INPUTS))
    out = reference_outputs(rows)
    assert out.shape == (5, INPUTS)
    assert out.dtype == np.float64


# --- the model, in-process ------------------------------------------------------------------


class StubMetric:
    def __init__(self, labels: dict[str, str], buckets: list[float] | None) -> None:
        self.labels = labels
        self.buckets = buckets
        self.observed: list[float] = []
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.observed.append(value)

    def increment(self, value: float) -> None:
        self.total += value


class StubMetricFamily:
    COUNTER = "COUNTER"
    GAUGE = "GAUGE"
    HISTOGRAM = "HISTOGRAM"

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.kind = name, kind
        self.metrics: list[StubMetric] = []

    def Metric(  # noqa: N802 (the Python backend's spelling)
        self, labels: dict[str, str], buckets: list[float] | None = None
    ) -> StubMetric:
        metric = StubMetric(labels, buckets)
        self.metrics.append(metric)
        return metric


class StubTensor:
    def __init__(self, name: str, array: Any) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> Any:
        return self.array


class StubResponse:
    def __init__(self, output_tensors: list[StubTensor] | None = None, error: Any = None) -> None:
        self.output_tensors = output_tensors or []
        self.error = error


class StubModelError(Exception):
    pass


def stub_backend_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.MetricFamily = StubMetricFamily  # type: ignore[attr-defined]
    module.Tensor = StubTensor  # type: ignore[attr-defined]
    module.InferenceResponse = StubResponse  # type: ignore[attr-defined]
    module.TritonModelException = StubModelError  # type: ignore[attr-defined]
    module.TritonError = str  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: request[name]  # type: ignore[attr-defined]
    return module


@pytest.fixture
def tm(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """``triton_model.py`` loaded the way Triton loads it: a file, with pb_utils provided."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stub_backend_utils())
    spec = importlib.util.spec_from_file_location("gelu_triton_model_under_test", MODEL_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with np.errstate(over="ignore", invalid="ignore"):
        yield module


def exact64(x: F64) -> F64:
    result: F64 = 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    return result


def tanh64(x: F64) -> F64:
    result: F64 = 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    return result


def sigmoid64(x: F64) -> F64:
    result: F64 = x / (1.0 + np.exp(-1.702 * x))
    return result


# float32 points over [-8, 8], and the same points in float64 for the references.
GRID32 = np.linspace(-8.0, 8.0, 100_001, dtype=np.float32)
GRID = GRID32.astype(np.float64)


def served(tm: types.ModuleType, variant: str, x: npt.NDArray[np.float32] = GRID32) -> F64:
    y = tm.ACTIVATIONS[variant](x)
    assert y.dtype == np.float32, f"{variant} must return float32"
    assert y.shape == x.shape
    return np.asarray(y, dtype=np.float64)


def test_the_model_knows_every_variant(tm: types.ModuleType) -> None:
    assert tuple(tm.ACTIVATIONS) == VARIANTS


def test_erfc_approximation(tm: types.ModuleType) -> None:
    # Numerical Recipes' erfcc: fractional error below 1.2e-7 everywhere (checked in float64).
    x = np.linspace(-8.0, 8.0, 100_001)
    relative = np.abs(tm._erfc(x) - erfc(x)) / erfc(x)
    assert relative.max() < 1.2e-7


def test_exact(tm: types.ModuleType) -> None:
    error = np.abs(served(tm, "exact") - exact64(GRID))
    # float32 rounding of a value of size up to 8 is ~5e-7; the erfc fit adds ~1e-7 relative.
    assert error.max() < 1e-6
    # Relative to the value, where it is not vanishingly small (float32 exp loses relative
    # accuracy on e^-32): a few float32 roundings and the fit's 1.2e-7.
    moderate = (np.abs(GRID) <= 5.0) & (np.abs(exact64(GRID)) > 1e-30)
    assert (error[moderate] / np.abs(exact64(GRID))[moderate]).max() < 1e-5


def test_tanh(tm: types.ModuleType) -> None:
    y = served(tm, "tanh")
    # Against its own formula: float32 rounding only (an ulp at 8 is 9.5e-7).
    assert np.abs(y - tanh64(GRID)).max() < 2e-6
    # Against exact: the approximation's own gap, at most 4.73e-4 (near |x| = 2).
    assert np.abs(y - exact64(GRID)).max() < 5e-4


def test_sigmoid(tm: types.ModuleType) -> None:
    y = served(tm, "sigmoid")
    assert np.abs(y - sigmoid64(GRID)).max() < 2e-6
    # x·sigmoid(1.702x) is at most 0.0203 away from exact (near |x| = 2.3 ... 2.5).
    assert np.abs(y - exact64(GRID)).max() < 0.021


def test_fp16(tm: types.ModuleType) -> None:
    y = served(tm, "fp16")
    # A handful of float16 roundings (input, the erfc polynomial, the product), each at most
    # 2^-11 relative: within 4·2^-11 of exact, relative to max(|x|, 1).
    assert (np.abs(y - exact64(GRID)) / np.maximum(np.abs(GRID), 1.0)).max() < 4 * FP16_EPS


def test_int8_lut(tm: types.ModuleType) -> None:
    y = served(tm, "int8-lut")
    error = np.abs(y - exact64(GRID))
    inside = np.abs(GRID) <= 6.0
    # Rounding to the nearest of 255 levels moves x by at most half a step; GELU's slope is
    # at most 1.129, so the output moves at most half a step times that (+ the table's
    # float32 rounding).
    assert error[inside].max() <= 0.5 * LUT_STEP * GELU_MAX_SLOPE + 1e-6
    # Outside, it is clipped: GELU(±6) instead of GELU(x).
    outside = ~inside
    np.testing.assert_allclose(y[outside & (GRID > 0)], exact64(np.array(6.0)), atol=1e-5)
    assert np.abs(y[outside & (GRID < 0)]).max() < 1e-8
    assert error[outside].max() > 1.9  # x = 8 answers 6: this is the variant's flaw


def test_tanh_fp16_naive(tm: types.ModuleType) -> None:
    y = served(tm, "tanh-fp16-naive")
    below = GRID < 4.0
    assert np.isfinite(y[below]).all()
    # Where it is finite it is the tanh form in float16.
    relative = np.abs(y[below] - tanh64(GRID[below])) / np.maximum(np.abs(GRID[below]), 1.0)
    assert relative.max() < 4 * FP16_EPS
    # e^(2z) overflows float16 (max 65504) once z > 5.55, i.e. x > 4.03: inf / inf = NaN.
    assert np.isnan(y[GRID >= 5.0]).all()
    large = np.array([5.0, 10.0, 50.0, 100.0, 1000.0], dtype=np.float32)
    assert np.isnan(served(tm, "tanh-fp16-naive", large)).all()
    # Large negative inputs are fine: e^(2z) underflows to 0 and the output is -0.
    assert np.isfinite(served(tm, "tanh-fp16-naive", -large)).all()


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "tanh-fp16-naive"])
def test_finite_on_extremes(tm: types.ModuleType, variant: str) -> None:
    x = np.linspace(-1000.0, 1000.0, 20_001, dtype=np.float32)
    assert np.isfinite(served(tm, variant, x)).all()


def test_block_weights_match_the_catalog(tm: types.ModuleType) -> None:
    for served_w, reference_w in zip(
        tm.block_weights(WEIGHT_SEED, INPUTS, HIDDEN), catalog.block_weights(), strict=True
    ):
        np.testing.assert_array_equal(served_w, reference_w)
    other = tm.block_weights(WEIGHT_SEED + 1, INPUTS, HIDDEN)[0]
    assert not np.array_equal(other, catalog.block_weights()[0])


def model_args(
    variant: str, faults: Faults | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """What the Python backend passes to initialize(), from the rendered config."""
    rendered = render_config("gelu-test", variant, faults or Faults())
    params = {**parameters(rendered), **(extra or {})}
    config = {"parameters": {k: {"string_value": v} for k, v in params.items()}}
    return {"model_config": json.dumps(config), "model_name": "gelu-test"}


def run_model(model: Any, batches: list[npt.NDArray[np.float32]]) -> list[StubResponse]:
    responses: list[StubResponse] = model.execute(
        [{"INPUT0": StubTensor("INPUT0", x)} for x in batches]
    )
    return responses


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_reads_the_rendered_config(tm: types.ModuleType, variant: str) -> None:
    model = tm.TritonPythonModel()
    model.initialize(model_args(variant))
    assert model.variant == variant
    assert model.error_rate == 0.0
    assert model.latency_s == 0.0
    histogram = model.value_family.metrics[0]
    assert histogram.labels == {"model": "gelu-test", "variant": variant}
    assert tuple(histogram.buckets) == OUTPUT_BUCKETS
    assert model.value_family.kind == "HISTOGRAM"
    assert model.nonfinite_family.kind == "COUNTER"
    assert model.nonfinite_family.name == "gelu_nonfinite_outputs_total"


def test_model_block_matches_the_reference(tm: types.ModuleType) -> None:
    model = tm.TritonPythonModel()
    model.initialize(model_args("exact"))
    x = np.random.default_rng(1).normal(0.0, 3.0, (64, INPUTS)).astype(np.float32)
    [response] = run_model(model, [x])
    [tensor] = response.output_tensors
    assert tensor.name == "OUTPUT0"
    assert tensor.array.dtype == np.float32
    assert tensor.array.shape == (64, INPUTS)
    assert np.abs(tensor.array - reference_outputs(x)).max() < CATALOG["exact"].tolerance


def test_model_samples_16_outputs_per_batch_and_counts_nonfinite(tm: types.ModuleType) -> None:
    model = tm.TritonPythonModel()
    model.initialize(model_args("tanh-fp16-naive"))
    histogram = model.value_family.metrics[0]
    counter = model.nonfinite_family.metrics[0]
    typical = np.random.default_rng(2).normal(0.0, 1.0, (8, INPUTS)).astype(np.float32)
    extreme = np.full((2, INPUTS), 100.0, dtype=np.float32)
    responses = run_model(model, [typical, extreme])
    outputs = np.concatenate([r.output_tensors[0].array for r in responses])
    nonfinite = int((~np.isfinite(outputs)).sum())
    assert nonfinite == 2 * INPUTS  # every output of an all-100 row is NaN
    assert counter.total == nonfinite
    # One execute() is one batch: 16 of its finite outputs are observed, not all 160.
    assert len(histogram.observed) == 16
    assert set(histogram.observed) <= set(outputs[np.isfinite(outputs)].tolist())


def test_model_observes_every_output_of_a_small_batch(tm: types.ModuleType) -> None:
    model = tm.TritonPythonModel()
    model.initialize(model_args("exact", extra={"observed_outputs_per_batch": "64"}))
    x = np.zeros((3, INPUTS), dtype=np.float32)
    run_model(model, [x])
    assert len(model.value_family.metrics[0].observed) == 3 * INPUTS


def test_model_injected_failure_fails_the_batch(tm: types.ModuleType) -> None:
    model = tm.TritonPythonModel()
    model.initialize(model_args("exact", Faults(error_rate=1.0)))
    assert model.error_rate == 1.0
    # Raised, so that Triton counts it in nv_inference_request_failure.
    with pytest.raises(StubModelError, match="injected failure"):
        run_model(model, [np.zeros((1, INPUTS), dtype=np.float32)])


def test_model_injected_latency(tm: types.ModuleType) -> None:
    model = tm.TritonPythonModel()
    model.initialize(model_args("exact", Faults(latency_ms=30)))
    assert model.latency_s == pytest.approx(0.030)


def test_model_rejects_an_unknown_variant(tm: types.ModuleType) -> None:
    args = model_args("exact")
    args["model_config"] = args["model_config"].replace('"exact"', '"gelu2"')
    with pytest.raises(StubModelError, match="gelu2"):
        tm.TritonPythonModel().initialize(args)
