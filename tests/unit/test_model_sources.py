"""Model repositories Triton reads itself (s3://, gs://, pvc://) and the arms' pod settings:
what the operator renders for them (the Kubernetes schema check is in test_resources.py)."""

from __future__ import annotations

from typing import Any

import pytest

from gelu_rollout.resources.desired import desired_resources, repositories_for
from gelu_rollout.resources.pod_settings import arm_pod
from gelu_rollout.spec.status import RolloutStatus, Stage
from tests.unit.test_resources import OWNER, POD, make_spec, stored_spec


def rendered(spec: Any, stage: Stage = Stage.PROGRESSING) -> dict[str, dict[str, Any]]:
    status = RolloutStatus(stage=stage, candidate_weight=25)
    objects = desired_resources(OWNER, spec, status, repositories_for(spec))
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_an_s3_repository_is_read_by_triton_with_the_secrets_credentials() -> None:
    objects = rendered(stored_spec("s3://models/gelu/v2"))
    assert not [k for k in objects if k.startswith("ConfigMap/")]  # nothing to copy
    triton = container(objects["Deployment/demo-candidate"])
    assert "--model-repository=s3://http://minio.storage:9000/models/gelu/v2" in triton["args"]
    assert "--model-control-mode=explicit" in triton["args"]
    assert "--load-model=gelu-mlp" in triton["args"]
    env = {e["name"]: e for e in triton["env"]}
    assert env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-credentials",
        "key": "AWS_ACCESS_KEY_ID",
    }
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert triton["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # The baseline reads its own prefix.
    baseline = container(objects["Deployment/demo-baseline"])
    assert "--model-repository=s3://http://minio.storage:9000/models/gelu/v1" in baseline["args"]


def test_a_pvc_repository_is_mounted_read_only() -> None:
    deployment = rendered(stored_spec("pvc://model-store/gelu/v2"))["Deployment/demo-candidate"]
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"] == {"claimName": "model-store", "readOnly": True}
    mount = next(m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {"name": volume["name"], "mountPath": "/models", "readOnly": True}
    assert "--model-repository=/models/gelu/v2" in container(deployment)["args"]


def test_a_gcs_key_is_mounted_from_its_secret() -> None:
    deployment = rendered(stored_spec("gs://models/gelu/v2"))["Deployment/demo-candidate"]
    triton = container(deployment)
    assert "--model-repository=gs://models/gelu/v2" in triton["args"]
    env = {e["name"]: e.get("value") for e in triton["env"]}
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/run/secrets/gcs/key.json"
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "storage-credentials", "secret": {"secretName": "gcs-key"}} in volumes


def test_a_new_revision_of_the_same_uri_rolls_the_pods() -> None:
    uri = "s3://models/gelu/current"
    specs = [
        make_spec(baseline={"variant": "exact"}, candidate={"storageUri": uri, "revision": r})
        for r in ("v2", "v3")
    ]
    first, second = (rendered(spec)["Deployment/demo-candidate"] for spec in specs)
    label = "gelu.dev/revision"
    assert first["metadata"]["labels"][label] != second["metadata"]["labels"][label]
    assert (
        first["spec"]["template"]["metadata"]["labels"][label]
        == (first["metadata"]["labels"][label])
    )


@pytest.mark.parametrize("field", ["resources", "nodeSelector", "tolerations", "affinity"])
def test_the_candidate_runs_where_its_baseline_runs_unless_told_otherwise(field: str) -> None:
    spec = make_spec(baseline={"variant": "exact", "pod": {field: POD[field]}})
    candidate = arm_pod(spec, "candidate")
    assert candidate.model_dump(by_alias=True)[field] is not None
    assert getattr(candidate, _snake(field)) == getattr(arm_pod(spec, "baseline"), _snake(field))
    own = make_spec(
        baseline={"variant": "exact", "pod": {field: POD[field]}},
        candidate={"variant": "tanh", "pod": {"nodeSelector": {"pool": "canary"}}},
    )
    if field == "nodeSelector":
        assert arm_pod(own, "candidate").node_selector == {"pool": "canary"}
    else:
        assert getattr(arm_pod(own, "candidate"), _snake(field)) is not None


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def test_pod_settings_layer_and_env_merges_by_name() -> None:
    spec = make_spec(
        pod={
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "tritonArgs": ["x"],
        },
        baseline={"variant": "exact", "pod": {"image": "triton:base", "serviceAccountName": "b"}},
        candidate={
            "variant": "tanh",
            "pod": {"env": [{"name": "B", "value": "3"}], "tritonArgs": ["y"]},
        },
    )
    candidate, baseline = arm_pod(spec, "candidate"), arm_pod(spec, "baseline")
    assert [(v.name, v.value) for v in candidate.env or ()] == [("A", "1"), ("B", "3")]
    assert candidate.triton_args == ("x", "y")
    # Not placement: the image and the service account are the baseline's own.
    assert (baseline.image, baseline.service_account_name) == ("triton:base", "b")
    assert (candidate.image, candidate.service_account_name) == (None, None)
    objects = rendered(spec)
    assert container(objects["Deployment/demo-baseline"])["image"] == "triton:base"
    assert container(objects["Deployment/demo-candidate"])["args"][-2:] == ["x", "y"]


def test_promoted_the_baseline_serves_the_candidates_model_as_it_was_tried() -> None:
    spec = make_spec(
        baseline={"variant": "exact"},
        candidate={"storageUri": "s3://models/gelu/v2", "revision": "v2", "pod": {"image": "t:2"}},
    )
    baseline = rendered(spec, Stage.PROMOTED)["Deployment/demo-baseline"]
    assert container(baseline)["image"] == "t:2"
    assert "--model-repository=s3://models/gelu/v2" in container(baseline)["args"]


@pytest.mark.parametrize(
    ("arm", "problem"),
    [
        ({"storageUri": "s3://models/x"}, "revision: is required with storageUri"),
        ({"storageUri": "ftp://models/x", "revision": "1"}, "storageUri"),
        ({"storageUri": "pvc://claim/x", "revision": "1", "storage": {"region": "x"}}, "pvc://"),
        ({"storageUri": "gs://b/x", "revision": "1", "storage": {"region": "x"}}, "s3:// only"),
        ({"variant": "tanh", "storage": {"region": "x"}}, "for storageUri only"),
    ],
)
def test_bad_storage_settings_name_the_field(arm: dict[str, Any], problem: str) -> None:
    from gelu_rollout.spec import SpecError

    with pytest.raises(SpecError, match=problem):
        make_spec(candidate=arm)
