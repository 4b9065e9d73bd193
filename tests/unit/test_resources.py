"""The objects a rollout owns: names, labels, stages, traffic and schema validity."""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest

from gelu_rollout.resources.desired import (
    ArmRepositories,
    arm_replicas,
    candidate_traffic_weight,
    desired_resources,
    fingerprinted,
    needs_apply,
    repositories_for,
    repository_problems,
    stale_objects,
)
from gelu_rollout.resources.names import (
    ANNOTATION_RENDERED,
    ARMS,
    OwnerRef,
    arm_name,
    config_map_name,
    dns_label,
    label_value,
    owned_selector,
    service_name,
)
from gelu_rollout.resources.traffic import (
    effective_weight,
    render_services,
    replica_split,
    route_backends_patch,
)
from gelu_rollout.resources.workloads import (
    TRITON_ARGS,
    TRITON_COMMAND,
    ArmSource,
    render_config_map,
    render_deployment,
)
from gelu_rollout.spec import RolloutSpec, parse_spec
from gelu_rollout.spec.model import ArmSpec
from gelu_rollout.spec.status import RolloutStatus, Stage
from gelu_rollout.variants.repository import render_repository, repository_revision

OWNER = OwnerRef(name="demo", namespace="models", uid="0b0e6a54-3c1f-4d5e-9a7b-1f2e3d4c5b6a")
USER_REPOSITORY = {
    "config.pbtxt": 'name: "gelu-mlp"\nbackend: "python"\n',
    "model.py": "class TritonPythonModel:\n    pass\n",
    "helpers.py": "X = 1\n",
}

DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
SCHEMA_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())


def make_spec(**overrides: Any) -> RolloutSpec:
    raw: dict[str, Any] = {
        "model": {"name": "gelu-mlp"},
        "baseline": {"variant": "exact", "replicas": 3},
        "candidate": {"variant": "tanh", "replicas": 2},
    }
    raw.update(overrides)
    return parse_spec(raw)


def route_spec() -> RolloutSpec:
    return make_spec(traffic={"mode": "HTTPRoute", "httpRouteName": "gelu"})


def status(stage: Stage = Stage.PROGRESSING, weight: int = 10) -> RolloutStatus:
    return RolloutStatus(stage=stage, candidate_weight=weight)


def repositories(spec: RolloutSpec) -> ArmRepositories:
    return repositories_for(spec)


def render(
    spec: RolloutSpec | None = None, state: RolloutStatus | None = None
) -> list[dict[str, Any]]:
    spec = spec or make_spec()
    return desired_resources(OWNER, spec, state or status(), repositories(spec))


def by_name(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
    return found[0]


def deployment(objects: list[dict[str, Any]], arm: str) -> dict[str, Any]:
    return by_name(objects, "Deployment", f"demo-{arm}")


def pod_spec(objects: list[dict[str, Any]], arm: str) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(objects, arm)["spec"]["template"]["spec"]
    return spec


def container(objects: list[dict[str, Any]], arm: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(objects, arm)["containers"]
    assert len(containers) == 1
    return containers[0]


def mounted_config_map(objects: list[dict[str, Any]], arm: str) -> dict[str, Any]:
    volume = next(v for v in pod_spec(objects, arm)["volumes"] if "configMap" in v)
    config_map: dict[str, Any] = volume["configMap"]
    return config_map


def canonical(objects: list[dict[str, Any]]) -> str:
    return json.dumps(objects, sort_keys=False, separators=(",", ":"))


# --- names and labels ---------------------------------------------------------------------


def test_object_names_follow_the_rollout_name() -> None:
    objects = render()
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    baseline_rev = repository_revision(render_repository("gelu-mlp", "exact"))
    candidate_rev = repository_revision(render_repository("gelu-mlp", "tanh"))
    assert names == {
        ("ConfigMap", f"demo-baseline-{baseline_rev}"),
        ("ConfigMap", f"demo-candidate-{candidate_rev}"),
        ("Deployment", "demo-baseline"),
        ("Deployment", "demo-candidate"),
        ("Service", "demo"),
        ("Service", "demo-baseline"),
        ("Service", "demo-candidate"),
    }
    assert [o["kind"] for o in objects] == ["ConfigMap"] * 2 + ["Deployment"] * 2 + ["Service"] * 3


def test_pod_labels_and_selectors() -> None:
    objects = render()
    for arm in ARMS:
        deploy = deployment(objects, arm)
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        revision = repository_revision(repositories(make_spec()).of(arm))
        assert labels == {
            "app.kubernetes.io/name": "triton-inference-server",
            "app.kubernetes.io/managed-by": "gelu-rollout",
            "gelu.dev/rollout": "demo",
            "gelu.dev/arm": arm,
            "gelu.dev/revision": revision,
        }
        selector = deploy["spec"]["selector"]["matchLabels"]
        assert "gelu.dev/revision" not in selector  # a Deployment's selector is immutable
        assert selector.items() <= labels.items()
        assert deploy["metadata"]["labels"]["gelu.dev/revision"] == revision
    source = deployment(objects, "candidate")["spec"]["template"]["metadata"]["annotations"]
    assert source["gelu.dev/source"] == "variant/tanh"
    assert source["prometheus.io/scrape"] == "true"
    assert source["prometheus.io/port"] == "8002"
    assert source["prometheus.io/path"] == "/metrics"


def test_every_owned_object_carries_the_rollout_labels_namespace_and_owner() -> None:
    for obj in render():
        metadata = obj["metadata"]
        assert metadata["namespace"] == "models"
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "gelu-rollout"
        assert metadata["labels"]["gelu.dev/rollout"] == "demo"
        assert metadata["ownerReferences"] == [
            {
                "apiVersion": "gelu.dev/v1alpha1",
                "kind": "GeluModelRollout",
                "name": "demo",
                "uid": OWNER.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert (
        owned_selector("demo") == "app.kubernetes.io/managed-by=gelu-rollout,gelu.dev/rollout=demo"
    )


def test_owner_ref_from_a_rollout_body() -> None:
    body = {
        "apiVersion": "gelu.dev/v1alpha1",
        "kind": "GeluModelRollout",
        "metadata": {"name": "demo", "namespace": "models", "uid": OWNER.uid},
    }
    assert OwnerRef.from_body(body) == OWNER


@pytest.mark.parametrize(
    "rollout",
    ["demo", "9lives", "team.gelu.v2", "a" * 60, "b" * 253, "x-" * 40 + "y"],
)
def test_names_are_valid_for_any_rollout_name(rollout: str) -> None:
    owner = OwnerRef(name=rollout, namespace="models", uid=OWNER.uid)
    spec = make_spec()
    objects = desired_resources(owner, spec, status(), repositories(spec))
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj["kind"] in {"Service", "Deployment"}:
            assert len(name) <= 63
            assert DNS_1035.fullmatch(name), name
        else:
            assert len(name) <= 253
            assert DNS_1123_SUBDOMAIN.fullmatch(name), name
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63
            assert LABEL_VALUE.fullmatch(value), value
    assert arm_name(rollout, "baseline") != arm_name(rollout, "candidate")
    assert arm_name(rollout, "candidate").endswith("-candidate")
    assert len({(o["kind"], o["metadata"]["name"]) for o in objects}) == len(objects)


def test_shortened_names_stay_distinct() -> None:
    long_a, long_b = "a" * 70 + "x", "a" * 70 + "y"
    assert dns_label(long_a) != dns_label(long_b)
    assert label_value(long_a) != label_value(long_b)
    assert service_name(long_a) != service_name(long_b)
    assert dns_label("demo") == "demo"
    assert label_value("team.gelu.v2") == "team.gelu.v2"


# --- revisions ----------------------------------------------------------------------------


def test_unchanged_inputs_give_byte_identical_objects() -> None:
    first = canonical(render())
    second = canonical(render())
    assert first == second
    spec = make_spec()
    reordered = ArmRepositories(
        baseline=dict(reversed(list(repositories(spec).baseline.items()))),
        candidate=repositories(spec).candidate,
    )
    assert canonical(desired_resources(OWNER, spec, status(), reordered)) == first


def test_repository_content_change_is_a_new_config_map_and_revision() -> None:
    spec = make_spec()
    repos = repositories(spec)
    before = desired_resources(OWNER, spec, status(), repos)
    changed = dict(repos.candidate)
    changed["config.pbtxt"] += "# one more line\n"
    after = desired_resources(
        OWNER, spec, status(), ArmRepositories(baseline=repos.baseline, candidate=changed)
    )
    old_name = mounted_config_map(before, "candidate")["name"]
    new_name = mounted_config_map(after, "candidate")["name"]
    assert old_name != new_name
    assert new_name == config_map_name("demo", "candidate", repository_revision(changed))
    old_labels = deployment(before, "candidate")["spec"]["template"]["metadata"]["labels"]
    new_labels = deployment(after, "candidate")["spec"]["template"]["metadata"]["labels"]
    assert old_labels["gelu.dev/revision"] != new_labels["gelu.dev/revision"]
    by_name(after, "ConfigMap", new_name)  # the new content is rendered under the new name
    # The baseline is untouched.
    assert canonical([deployment(before, "baseline")]) == canonical([deployment(after, "baseline")])


def test_config_map_holds_the_repository_and_is_immutable() -> None:
    files = render_repository("gelu-mlp", "tanh")
    config_map = render_config_map(OWNER, "candidate", files, source="variant/tanh")
    assert config_map["data"] == files
    assert config_map["immutable"] is True
    assert config_map["metadata"]["labels"]["gelu.dev/revision"] == repository_revision(files)
    assert config_map["metadata"]["annotations"] == {"gelu.dev/source": "variant/tanh"}


# --- the pod ------------------------------------------------------------------------------


def test_triton_container() -> None:
    objects = render()
    main = container(objects, "candidate")
    assert main["image"] == "nvcr.io/nvidia/tritonserver:24.09-py3"
    assert main["command"] == ["tritonserver"] == list(TRITON_COMMAND)
    assert main["args"] == list(TRITON_ARGS)
    assert "--model-repository=/models" in main["args"]
    assert "--metrics-config=summary_latencies=true" in main["args"]
    assert {(p["name"], p["containerPort"]) for p in main["ports"]} == {
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    }
    assert main["readinessProbe"]["httpGet"] == {
        "path": "/v2/models/gelu-mlp/ready",
        "port": "http",
    }
    assert main["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert main["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }


def test_security_context_is_non_root_and_locked_down() -> None:
    objects = render()
    for arm in ("baseline", "candidate"):
        pod = pod_spec(objects, arm)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        context = container(objects, arm)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 1000
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        # A read-only root needs writable /tmp and /dev/shm for Triton's Python backend.
        mounts = {m["mountPath"]: m for m in container(objects, arm)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"


def test_variant_repository_is_mounted_in_the_model_directory() -> None:
    objects = render()
    mount = next(
        m for m in container(objects, "baseline")["volumeMounts"] if m["name"] == "model-repository"
    )
    assert mount == {"name": "model-repository", "mountPath": "/models/gelu-mlp", "readOnly": True}
    assert mounted_config_map(objects, "baseline")["items"] == [
        {"key": "config.pbtxt", "path": "config.pbtxt"},
        {"key": "model.py", "path": "1/model.py"},
    ]


def test_user_repository_is_copied_into_an_owned_config_map_and_mounted() -> None:
    spec = make_spec(candidate={"repository": {"configMapName": "my-model"}, "replicas": 2})
    repos = repositories_for(spec, {"my-model": USER_REPOSITORY})
    objects = desired_resources(OWNER, spec, status(), repos)
    revision = repository_revision(USER_REPOSITORY)
    config_map = by_name(objects, "ConfigMap", f"demo-candidate-{revision}")
    assert config_map["data"] == USER_REPOSITORY
    assert config_map["metadata"]["annotations"]["gelu.dev/source"] == "configMap/my-model"
    mounted = mounted_config_map(objects, "candidate")
    assert mounted["name"] == f"demo-candidate-{revision}"
    assert mounted["items"] == [
        {"key": "config.pbtxt", "path": "config.pbtxt"},
        {"key": "helpers.py", "path": "1/helpers.py"},
        {"key": "model.py", "path": "1/model.py"},
    ]
    labels = deployment(objects, "candidate")["spec"]["template"]["metadata"]["labels"]
    assert labels["gelu.dev/revision"] == revision


def test_missing_user_config_map_is_an_error() -> None:
    spec = make_spec(candidate={"repository": {"configMapName": "my-model"}})
    with pytest.raises(KeyError):
        repositories_for(spec, {})


def test_repository_problems() -> None:
    assert repository_problems(USER_REPOSITORY) == []
    assert repository_problems(render_repository("gelu-mlp", "exact")) == []
    assert repository_problems({"model.py": "x"}) == ["has no config.pbtxt key"]
    assert repository_problems({"config.pbtxt": "x"}) == [
        "has no model file (a key besides config.pbtxt, served from 1/)"
    ]
    assert (
        "more than a ConfigMap holds"
        in repository_problems({"config.pbtxt": "x", "model.py": "#" * 1_100_000})[0]
    )


# --- traffic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "baseline", "expected", "effective"),
    [
        (10, 1, (1, 1), 50.0),
        (25, 1, (1, 1), 50.0),
        (50, 1, (1, 1), 50.0),
        (10, 3, (3, 1), 25.0),
        (25, 3, (3, 1), 25.0),
        (50, 3, (3, 3), 50.0),
        (10, 10, (10, 2), 100 * 2 / 12),
        (25, 10, (10, 4), 100 * 4 / 14),
        (50, 10, (10, 10), 50.0),
    ],
)
def test_replica_split_table(
    weight: int, baseline: int, expected: tuple[int, int], effective: float
) -> None:
    split = replica_split(weight, baseline)
    assert split == expected
    assert effective_weight(*split) == pytest.approx(effective)
    assert effective_weight(*split) >= weight  # never less than asked for


def test_replica_split_edges() -> None:
    assert replica_split(0, 4) == (4, 0)
    assert replica_split(1, 4) == (4, 1)
    assert replica_split(99, 1) == (1, 99)
    assert replica_split(100, 4) == (0, 4)
    assert effective_weight(0, 0) == 0.0
    assert effective_weight(3, 0) == 0.0
    assert effective_weight(0, 2) == 100.0
    with pytest.raises(ValueError, match="weight"):
        replica_split(101, 1)
    with pytest.raises(ValueError, match="baseline_replicas"):
        replica_split(10, 0)


def test_replica_split_is_the_smallest_candidate_reaching_the_weight() -> None:
    for baseline in range(1, 30):
        for weight in range(1, 100):
            base, candidate = replica_split(weight, baseline)
            assert base == baseline
            assert effective_weight(base, candidate) >= weight - 1e-9
            if candidate > 1:
                assert effective_weight(base, candidate - 1) < weight


def test_services_in_replica_ratio_mode() -> None:
    services = render_services(OWNER, replica_ratio=True, candidate_weight=10)
    assert [s["metadata"]["name"] for s in services] == ["demo", "demo-baseline", "demo-candidate"]
    both, baseline, candidate = (s["spec"]["selector"] for s in services)
    assert "gelu.dev/arm" not in both
    assert baseline["gelu.dev/arm"] == "baseline"
    assert candidate["gelu.dev/arm"] == "candidate"
    for service in services:
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
            "http": 8000,
            "grpc": 8001,
            "metrics": 8002,
        }
    # Before the first step the candidate runs (for the probe) but gets no traffic.
    idle = render_services(OWNER, replica_ratio=True, candidate_weight=0)
    assert idle[0]["spec"]["selector"]["gelu.dev/arm"] == "baseline"


def test_services_in_http_route_mode_are_the_two_backends() -> None:
    services = render_services(OWNER, replica_ratio=False, candidate_weight=10)
    assert [s["metadata"]["name"] for s in services] == ["demo-baseline", "demo-candidate"]


def test_route_patch_weights_every_rule_and_keeps_the_rest() -> None:
    route: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "gelu", "namespace": "models"},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                    "backendRefs": [{"name": "old", "port": 80}],
                    "timeouts": {"request": "5s"},
                },
                {"matches": [{"path": {"type": "Exact", "value": "/healthz"}}]},
            ],
        },
    }
    original = json.dumps(route)
    patch = route_backends_patch(route, "demo", 25)
    assert json.dumps(route) == original  # the input is not modified
    assert set(patch) == {"spec"}
    assert set(patch["spec"]) == {"rules"}
    rules = patch["spec"]["rules"]
    assert len(rules) == 2
    for rule, before in zip(rules, route["spec"]["rules"], strict=True):
        refs = rule["backendRefs"]
        assert [(r["name"], r["port"], r["weight"]) for r in refs] == [
            ("demo-baseline", 8000, 75),
            ("demo-candidate", 8000, 25),
        ]
        assert sum(r["weight"] for r in refs) == 100
        assert all(r["kind"] == "Service" and r["group"] == "" for r in refs)
        assert {k: v for k, v in rule.items() if k != "backendRefs"} == {
            k: v for k, v in before.items() if k != "backendRefs"
        }


@pytest.mark.parametrize("weight", [0, 1, 50, 99, 100])
def test_route_weights_sum_to_100(weight: int) -> None:
    route: dict[str, Any] = {"spec": {"rules": [{}, {}, {}]}}
    rules = route_backends_patch(route, "demo", weight)["spec"]["rules"]
    assert len(rules) == 3
    for rule in rules:
        assert [r["weight"] for r in rule["backendRefs"]] == [100 - weight, weight]


def test_route_without_rules_gets_one() -> None:
    rules = route_backends_patch({"spec": {}}, "demo", 10)["spec"]["rules"]
    assert len(rules) == 1
    assert [r["weight"] for r in rules[0]["backendRefs"]] == [90, 10]


# --- stages -------------------------------------------------------------------------------


def replicas(objects: list[dict[str, Any]]) -> tuple[int, int]:
    return (
        deployment(objects, "baseline")["spec"]["replicas"],
        deployment(objects, "candidate")["spec"]["replicas"],
    )


def test_replica_ratio_replicas_follow_the_weight() -> None:
    assert replicas(render(state=status(Stage.PROGRESSING, 10))) == (3, 1)
    assert replicas(render(state=status(Stage.PROGRESSING, 50))) == (3, 3)
    assert replicas(render(state=status(Stage.PAUSED, 25))) == (3, 1)


def test_candidate_runs_before_the_first_step_without_traffic() -> None:
    spec = make_spec(traffic={"steps": [{"weight": 50}]})
    objects = desired_resources(OWNER, spec, RolloutStatus(), repositories(spec))
    assert replicas(objects) == (3, 3)  # warmed at the first step's size
    assert by_name(objects, "Service", "demo")["spec"]["selector"]["gelu.dev/arm"] == "baseline"
    assert candidate_traffic_weight(RolloutStatus()) == 0


def test_http_route_mode_runs_the_candidate_at_its_replicas() -> None:
    spec = route_spec()
    for state in (RolloutStatus(), status(Stage.PROGRESSING, 10), status(Stage.PAUSED, 50)):
        objects = desired_resources(OWNER, spec, state, repositories(spec))
        assert replicas(objects) == (3, 2)
        assert {o["metadata"]["name"] for o in objects if o["kind"] == "Service"} == {
            "demo-baseline",
            "demo-candidate",
        }


@pytest.mark.parametrize("spec", [make_spec(), route_spec()], ids=["ReplicaRatio", "HTTPRoute"])
def test_promoted_baseline_serves_the_candidate_repository(spec: RolloutSpec) -> None:
    repos = repositories(spec)
    progressing = desired_resources(OWNER, spec, status(Stage.PROGRESSING, 50), repos)
    promoted_status = status(Stage.PROMOTED, 100)
    promoted = desired_resources(OWNER, spec, promoted_status, repos)
    assert replicas(promoted) == (3, 0)
    candidate_revision = repository_revision(repos.candidate)
    baseline = deployment(promoted, "baseline")
    template = baseline["spec"]["template"]
    assert template["metadata"]["labels"]["gelu.dev/revision"] == candidate_revision
    assert template["metadata"]["labels"]["gelu.dev/arm"] == "baseline"
    assert template["metadata"]["annotations"]["gelu.dev/source"] == "variant/tanh"
    new_config_map = by_name(promoted, "ConfigMap", f"demo-baseline-{candidate_revision}")
    assert new_config_map["data"] == dict(repos.candidate)
    assert mounted_config_map(promoted, "baseline")["name"] == f"demo-baseline-{candidate_revision}"
    # The candidate Deployment keeps its template (no new ReplicaSet), scaled to 0.
    assert (
        deployment(promoted, "candidate")["spec"]["template"]
        == deployment(progressing, "candidate")["spec"]["template"]
    )
    # All traffic to the baseline's pods.
    assert candidate_traffic_weight(promoted_status) == 0
    if spec.traffic.mode == "ReplicaRatio":
        selector = by_name(promoted, "Service", "demo")["spec"]["selector"]
        assert selector["gelu.dev/arm"] == "baseline"
    # Rolling in the new revision never drops below the asked-for ready pods.
    assert baseline["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("spec", [make_spec(), route_spec()], ids=["ReplicaRatio", "HTTPRoute"])
def test_rolled_back_is_the_baseline_only(spec: RolloutSpec) -> None:
    repos = repositories(spec)
    before = desired_resources(OWNER, spec, status(Stage.PROGRESSING, 25), repos)
    rolled_back = status(Stage.ROLLED_BACK, 0)
    after = desired_resources(OWNER, spec, rolled_back, repos)
    assert replicas(after) == (3, 0)
    assert arm_replicas(spec, rolled_back) == (3, 0)
    assert canonical([deployment(after, "baseline")]) == canonical([deployment(before, "baseline")])
    assert candidate_traffic_weight(rolled_back) == 0
    assert (
        route_backends_patch({"spec": {"rules": [{}]}}, "demo", 0)["spec"]["rules"][0][
            "backendRefs"
        ][1]["weight"]
        == 0
    )
    # The same objects exist in every stage: nothing to delete but old ConfigMaps.
    assert [(o["kind"], o["metadata"]["name"]) for o in after] == [
        (o["kind"], o["metadata"]["name"]) for o in before
    ]


def test_stale_objects_are_owned_ones_no_longer_desired() -> None:
    spec = make_spec()
    repos = repositories(spec)
    progressing = desired_resources(OWNER, spec, status(), repos)
    promoted = desired_resources(OWNER, spec, status(Stage.PROMOTED, 100), repos)
    foreign = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "someone-elses",
            "ownerReferences": [{"uid": "another", "controller": True}],
        },
    }
    stale = stale_objects(OWNER, [*progressing, foreign], promoted)
    old_baseline = mounted_config_map(progressing, "baseline")["name"]
    assert [(o["kind"], o["metadata"]["name"]) for o in stale] == [("ConfigMap", old_baseline)]
    assert stale_objects(OWNER, progressing, progressing) == []


def test_needs_apply_ignores_what_the_server_adds() -> None:
    objects = render()
    for obj in objects:
        assert needs_apply(obj, None)
        assert not needs_apply(obj, json.loads(json.dumps(obj)))
    live = json.loads(json.dumps(deployment(objects, "candidate")))
    live["metadata"] |= {"resourceVersion": "7", "generation": 3, "uid": "x"}
    live["metadata"]["labels"]["team"] = "ml"
    live["status"] = {"readyReplicas": 1}
    live["spec"]["progressDeadlineSeconds"] = 600
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    desired = deployment(objects, "candidate")
    assert not needs_apply(desired, live)
    live["spec"]["replicas"] = 5
    assert needs_apply(desired, live)
    live["spec"]["replicas"] = desired["spec"]["replicas"]
    live["spec"]["template"]["spec"]["volumes"].append({"name": "extra", "emptyDir": {}})
    assert needs_apply(desired, live)


# --- schema validity ----------------------------------------------------------------------


STORAGE_URIS = ("s3://models/gelu/v2", "gs://models/gelu/v2", "pvc://model-store/gelu/v2")
POD = {
    "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"nvidia.com/gpu": "1"}},
    "nodeSelector": {"nvidia.com/gpu.product": "H100"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app": "triton"}},
                    },
                }
            ]
        }
    },
    "env": [
        {"name": "OMP_NUM_THREADS", "value": "4"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "t"}}},
    ],
    "serviceAccountName": "triton",
    "imagePullSecrets": [{"name": "registry"}],
    "tritonArgs": ["--log-verbose=1"],
}


def stored_spec(uri: str) -> RolloutSpec:
    """A candidate from ``uri`` with every pod setting; a baseline from another prefix."""
    storage: dict[str, Any] = {}
    if uri.startswith("s3://"):
        storage = {"endpoint": "http://minio.storage:9000", "region": "eu-west-1"}
        storage["credentialsSecretName"] = "s3-credentials"
    elif uri.startswith("gs://"):
        storage = {"credentialsSecretName": "gcs-key"}
    arm: dict[str, Any] = {"storageUri": uri, "revision": "v2"}
    if storage:
        arm["storage"] = storage
    baseline = {**arm, "storageUri": uri.replace("/v2", "/v1"), "revision": "v1"}
    return make_spec(pod=POD, baseline=baseline, candidate=arm)


def all_rendered() -> list[dict[str, Any]]:
    user_spec = make_spec(candidate={"repository": {"configMapName": "my-model"}})
    user_repos = repositories_for(user_spec, {"my-model": USER_REPOSITORY})
    objects: list[dict[str, Any]] = []
    stored = [stored_spec(uri) for uri in STORAGE_URIS]
    for spec, repos in (
        (make_spec(), repositories(make_spec())),
        (route_spec(), repositories(route_spec())),
        (user_spec, user_repos),
        *((spec, repositories(spec)) for spec in stored),
    ):
        for state in (
            RolloutStatus(),
            status(Stage.PROGRESSING, 25),
            status(Stage.PAUSED, 50),
            status(Stage.PROMOTED, 100),
            status(Stage.ROLLED_BACK, 0),
        ):
            objects += desired_resources(OWNER, spec, state, repos)
    return objects


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_rendered_object_validates_against_the_kubernetes_schema(version: str) -> None:
    objects = all_rendered()
    assert {o["kind"] for o in objects} == {"ConfigMap", "Deployment", "Service"}
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def EXACT_SOURCE(files: dict[str, str]) -> ArmSource:  # noqa: N802
    return ArmSource(ArmSpec(variant="exact"), files)


def test_schema_validation_is_not_vacuous() -> None:
    files = render_repository("gelu-mlp", "exact")
    bad = render_deployment(OWNER, make_spec().model, "baseline", EXACT_SOURCE(files), 1)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)
    wrong_type = render_deployment(OWNER, make_spec().model, "baseline", EXACT_SOURCE(files), 1)
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, kubernetes_validate.latest_version(), strict=True)


def test_negative_replicas_are_refused() -> None:
    files = render_repository("gelu-mlp", "exact")
    with pytest.raises(ValueError, match="replicas"):
        render_deployment(OWNER, make_spec().model, "baseline", EXACT_SOURCE(files), -1)


# -- the fingerprint that makes an unchanged object cost no apply ----------------------------


def test_each_rendered_object_carries_a_fingerprint_of_its_own_rendering() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "labels": {"a": "1"}},
        "spec": {"selector": {"app": "x", "arm": "baseline"}, "ports": [{"port": 8000}]},
    }
    first = fingerprinted(service)
    assert (
        first["metadata"]["annotations"][ANNOTATION_RENDERED]
        == (
            fingerprinted(json.loads(json.dumps(service)))["metadata"]["annotations"][
                ANNOTATION_RENDERED
            ]
        )
    )
    assert "annotations" not in service["metadata"]  # the rendering itself is left alone
    # Live as the API server keeps it: the same, plus fields of its own.
    live = json.loads(json.dumps(first))
    live["metadata"]["resourceVersion"] = "7"
    live["spec"]["clusterIP"] = "10.0.0.1"
    live["spec"]["ports"][0]["protocol"] = "TCP"
    assert not needs_apply(first, live)
    # The rendering drops a selector key: the live object still covers every rendered field,
    # but not the new fingerprint, so the apply that drops the key is not skipped.
    narrower = json.loads(json.dumps(service))
    del narrower["spec"]["selector"]["arm"]
    assert not needs_apply(narrower, live)
    assert needs_apply(fingerprinted(narrower), live)
    # Drift by another hand on a rendered field: applied again.
    live["spec"]["ports"][0]["port"] = 9000
    assert needs_apply(first, live)
