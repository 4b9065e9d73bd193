"""The operator's Deployment: the restricted Pod Security profile in every value set, the
command line `gelu-rollout run` accepts, the image, probes, scheduling and replicas."""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import pytest
import typer

from gelu_rollout.cli.main import app
from tests.chart.rendering import DIGEST, MATRIX, Object, Values, one, render

# Volume types the restricted profile allows.
RESTRICTED_VOLUMES: Final = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_problems(pod: dict[str, Any]) -> list[str]:
    """What keeps a pod spec out of the restricted Pod Security profile (and the chart's own
    demands beyond it: numeric user and group, a read-only root file system)."""
    problems: list[str] = []
    pod_context = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{field} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']} is {sorted(kinds)}")
    containers = [*(pod.get("initContainers") or []), *pod["containers"]]
    for container in containers:
        name = container["name"]
        context = container.get("securityContext") or {}

        def setting(field: str, context: dict[str, Any] = context) -> Any:
            return context.get(field, pod_context.get(field))

        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added")
        if setting("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        for field in ("runAsUser", "runAsGroup"):
            value = setting(field)
            if not isinstance(value, int) or isinstance(value, bool) or value == 0:
                problems.append(f"{name}: {field} is {value!r}, not a numeric non-root id")
        seccomp = (setting("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp!r}")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: the root file system is writable")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems


@cache
def deployment(case: str) -> Object:
    return one(render(MATRIX[case]), "Deployment")


def pod_of(obj: Object) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def container_of(obj: Object) -> dict[str, Any]:
    (container,) = pod_of(obj)["containers"]
    return dict(container)


@pytest.mark.parametrize("case", MATRIX)
def test_the_pod_meets_the_restricted_pod_security_profile(case: str) -> None:
    pod = pod_of(deployment(case))
    assert restricted_problems(pod) == []
    mounts = {m["mountPath"]: m["name"] for m in container_of(deployment(case))["volumeMounts"]}
    tmp = next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
    assert "emptyDir" in tmp  # the one writable place


def test_the_restricted_check_finds_what_breaks_the_profile() -> None:
    pod = pod_of(deployment("defaults"))
    broken = {
        **pod,
        "hostNetwork": True,
        "securityContext": {},
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [{"name": "operator", "securityContext": {"runAsUser": 0}}],
    }
    problems = restricted_problems(broken)
    for expected in (
        "hostNetwork",
        "volume host",
        "allowPrivilegeEscalation",
        "drop ALL",
        "runAsNonRoot",
        "runAsUser is 0",
        "seccompProfile",
        "root file system",
    ):
        assert any(expected in p for p in problems), (expected, problems)


def test_the_user_and_group_are_settable_numbers() -> None:
    obj = one(render({"securityContext": {"runAsUser": 2000, "runAsGroup": 3000}}), "Deployment")
    assert pod_of(obj)["securityContext"]["runAsUser"] == 2000
    assert container_of(obj)["securityContext"]["runAsGroup"] == 3000


def parse_run(container: dict[str, Any]) -> dict[str, Any]:
    """The parameters `gelu-rollout run` reads from the container's command line: the real
    command's parser, so a flag it does not know fails here."""
    assert container["command"] == ["gelu-rollout", "run"]
    group: Any = typer.main.get_command(app)
    parent = group.make_context("gelu-rollout", ["run"])
    run = group.get_command(parent, "run")
    assert run is not None
    context = run.make_context("run", list(container["args"]), parent=parent)
    return dict(context.params)


@pytest.mark.parametrize("case", MATRIX)
def test_the_command_line_is_one_gelu_rollout_run_accepts(case: str) -> None:
    values: Values = MATRIX[case]
    container = container_of(deployment(case))
    params = parse_run(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert params["metrics_port"] == ports["metrics"]
    assert params["liveness_port"] == ports["health"]
    assert list(params["namespace"] or []) == values.get("watchNamespaces", [])
    peering = values.get("peering", {}).get("enabled", False)
    assert params["peering"] == ("gelu-rollout" if peering else None)
    assert params["peering_priority"] is None  # each replica derives its own
    assert params["prometheus_url"] == "http://prometheus-operated.monitoring.svc:9090"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_operator_settings_reach_the_command_line() -> None:
    operator = {
        "prometheusUrl": "https://prometheus.example:9443/prom",
        "tickSeconds": 2.5,
        "scrapeIntervalSeconds": 30,
        "metricsPort": 9100,
        "healthPort": 9101,
        "verbose": True,
        "extraArgs": ["--bind-address=0.0.0.0"],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    }
    container = container_of(one(render({"operator": operator}), "Deployment"))
    params = parse_run(container)
    assert params["prometheus_url"] == operator["prometheusUrl"]
    assert params["tick_seconds"] == 2.5
    assert params["scrape_interval_seconds"] == 30
    assert (params["metrics_port"], params["liveness_port"]) == (9100, 9101)
    assert params["verbose"] is True
    assert params["bind_address"] == "0.0.0.0"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_probes_ask_kopfs_health_endpoint() -> None:
    container = container_of(deployment("defaults"))
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert container[probe]["periodSeconds"] > 0


def test_the_image_is_by_tag_or_by_digest() -> None:
    assert container_of(deployment("defaults"))["image"] == "gelu-rollout:0.1.0"
    image = {"repository": "registry.example/ml/gelu-rollout", "tag": "0.2.0"}
    assert container_of(one(render({"image": image}), "Deployment"))["image"] == (
        "registry.example/ml/gelu-rollout:0.2.0"
    )
    pinned = {**image, "digest": DIGEST}
    assert container_of(one(render({"image": pinned}), "Deployment"))["image"] == (
        f"registry.example/ml/gelu-rollout@{DIGEST}"
    )


def test_one_replica_recreated_by_default_and_standbys_with_peering() -> None:
    spec = deployment("defaults")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    spec = deployment("ha")["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate"}


def test_scheduling_values_reach_the_pod() -> None:
    pod = pod_of(deployment("toggles"))
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "ops"}]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    preferred: list[dict[str, Any]] = []
    affinity = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}}
    spread = [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}]
    pod = pod_of(
        one(render({"affinity": affinity, "topologySpreadConstraints": spread}), "Deployment")
    )
    assert pod["affinity"] == affinity
    assert pod["topologySpreadConstraints"] == spread
    assert container_of(deployment("defaults"))["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }


def test_a_budget_only_with_standby_replicas() -> None:
    assert not [o for o in render() if o["kind"] == "PodDisruptionBudget"]
    objects = render(MATRIX["ha"])
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_parser_refuses_a_flag_run_does_not_know() -> None:
    container = container_of(deployment("defaults"))
    with pytest.raises(Exception, match="No such option"):  # click's, as Typer bundles it
        parse_run({**container, "args": [*container["args"], "--peering-name=x"]})
