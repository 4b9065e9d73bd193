"""An arm that names a model version: what its pods are rendered with, which pods the
operator must still reload with that version, and the configuration it loads them with."""

from __future__ import annotations

from typing import Any

from gelu_rollout.controller import pod_ip
from gelu_rollout.resources.model_versions import version_policy_config, versions_to_load
from gelu_rollout.resources.names import ANNOTATION_MODEL_VERSION
from gelu_rollout.spec.status import Stage
from tests.unit.test_model_sources import container, rendered
from tests.unit.test_resources import make_spec

URI = "s3://models/gelu"


def versioned_spec(baseline: int | None, candidate: int | None) -> Any:
    def arm(version: int | None) -> dict[str, Any]:
        return {"storageUri": URI, "revision": "r1"} | (
            {} if version is None else {"version": version}
        )

    return make_spec(baseline=arm(baseline), candidate=arm(candidate))


def test_a_versioned_arm_is_ready_only_on_its_version_and_says_which_it_wants() -> None:
    objects = rendered(versioned_spec(1, 2))
    for arm, version in (("baseline", 1), ("candidate", 2)):
        deployment = objects[f"Deployment/demo-{arm}"]
        probe = container(deployment)["readinessProbe"]["httpGet"]["path"]
        assert probe == f"/v2/models/gelu-mlp/versions/{version}/ready"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations[ANNOTATION_MODEL_VERSION] == str(version)
        # Triton loads only this model, so the operator may reload it with another policy.
        assert "--model-control-mode=explicit" in container(deployment)["args"]


def test_without_a_version_the_models_own_policy_decides() -> None:
    deployment = rendered(versioned_spec(None, 2))["Deployment/demo-baseline"]
    assert container(deployment)["readinessProbe"]["httpGet"]["path"] == "/v2/models/gelu-mlp/ready"
    assert ANNOTATION_MODEL_VERSION not in deployment["spec"]["template"]["metadata"]["annotations"]


def test_a_new_version_is_a_new_revision_and_promotion_carries_it() -> None:
    first, second = (rendered(versioned_spec(1, v))["Deployment/demo-candidate"] for v in (2, 3))
    label = "gelu.dev/revision"
    assert first["metadata"]["labels"][label] != second["metadata"]["labels"][label]
    promoted = rendered(versioned_spec(1, 3), Stage.PROMOTED)["Deployment/demo-baseline"]
    assert promoted["spec"]["template"]["metadata"]["annotations"][ANNOTATION_MODEL_VERSION] == "3"


def pod(name: str, version: str | None, **status: Any) -> dict[str, Any]:
    annotations = {} if version is None else {ANNOTATION_MODEL_VERSION: version}
    container = {"name": "tritonserver", "state": {"running": {}}, "started": True, "ready": False}
    container |= status.pop("container", {})
    return {
        "metadata": {
            "name": name,
            "labels": {"gelu.dev/arm": "baseline"},
            "annotations": annotations,
        },
        "status": {"phase": "Running", "podIP": "10.0.0.7", "containerStatuses": [container]}
        | status,
    }


def test_only_pods_whose_server_is_up_and_not_ready_are_reloaded() -> None:
    pods = [
        pod("b-up", "1"),
        pod("a-up", "2"),
        pod("ready", "1", container={"ready": True}),
        pod("starting", "1", container={"started": False}),
        pod("waiting", "1", container={"state": {"waiting": {"reason": "CrashLoopBackOff"}}}),
        pod("pending", "1", phase="Pending"),
        pod("no-ip", "1", podIP=None),
        pod("no-version", None),
        pod("bad-version", "latest"),
    ]
    leaving = pod("leaving", "1")
    leaving["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    loads = versions_to_load([*pods, leaving])
    assert [(load.name, load.arm, load.version) for load in loads] == [
        ("a-up", "baseline", 2),
        ("b-up", "baseline", 1),
    ]


def test_the_reload_keeps_the_models_configuration_and_serves_one_version() -> None:
    config = {"name": "m", "backend": "python", "version_policy": {"latest": {"num_versions": 1}}}
    assert version_policy_config(config, 3) == {
        "name": "m",
        "backend": "python",
        "version_policy": {"specific": {"versions": [3]}},
    }
    assert config["version_policy"] == {"latest": {"num_versions": 1}}  # not changed in place


def test_a_pod_is_reached_on_its_ip() -> None:
    assert pod_ip({"status": {"podIP": "10.0.0.7"}}) == "10.0.0.7:8000"
    assert pod_ip({"status": {"podIP": "fd00::7"}}) == "[fd00::7]:8000"
    assert pod_ip({"status": {}}) is None
