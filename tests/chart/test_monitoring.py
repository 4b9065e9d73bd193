"""The chart's optional objects around the operator: the ServiceMonitor or PodMonitor of its
metrics, the PrometheusRule (the rule files of monitoring/rules, copied into files/rules), the
Grafana dashboards' ConfigMaps and the NetworkPolicy. All off by default."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import helm_python as helm
import pytest
import yaml

from tests.chart.rendering import (
    CHART,
    FULLNAME,
    MATRIX,
    NAMESPACE,
    ROOT,
    Object,
    chart_copy,
    notes,
    of_kind,
    one,
    render,
    render_manifests,
)

OPTIONAL: Final = ("Service", "ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy")
RUNBOOKS: Final = "https://github.com/gelu-rollout/gelu-rollout/blob/main/docs/runbooks/"
JOB: Final = f"{FULLNAME}-metrics"  # the ServiceMonitor's job: its Service's name
RULES: Final = """\
groups:
  - name: gelu-rollout-rollouts
    rules:
      - alert: GeluRolloutRolledBack
        expr: increase(gelu_rollout_rolled_back_total[10m]) > 0
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.namespace }}: a rollout rolled back"
"""


def pod_labels(objects: list[Object]) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def container_ports(objects: list[Object]) -> dict[str, int]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_all_off_by_default() -> None:
    objects = render()
    for kind in OPTIONAL:
        assert not of_kind(objects, kind), kind
    assert {o["kind"] for o in objects} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    }


def test_the_service_monitor_scrapes_the_metrics_port_of_the_operators_pods() -> None:
    objects = render({"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}})
    service, monitor = one(objects, "Service"), one(objects, "ServiceMonitor")
    assert service["spec"]["selector"].items() <= pod_labels(objects).items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    assert port["port"] == container_ports(objects)["metrics"]
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "honorLabels": True,  # the series' own namespace label, the rollout's, wins
        "interval": "30s",
        "scrapeTimeout": "10s",
    }


def test_the_pod_monitor_scrapes_the_pods_directly() -> None:
    objects = render({"podMonitor": {"enabled": True, "labels": {"release": "kps"}}})
    monitor = one(objects, "PodMonitor")
    assert not of_kind(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels(objects).items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["honorLabels"] is True
    assert "metrics" in container_ports(objects)


def rendered_rules(values: dict[str, Any], chart: Path = CHART) -> list[dict[str, Any]]:
    rule = one(render({"prometheusRule": {"enabled": True}, **values}, chart), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def alert_expression(values: dict[str, Any]) -> str:
    (alert,) = [r for r in rendered_rules(values) if r.get("alert") == "GeluRolloutOperatorDown"]
    expr: str = alert["expr"]
    return expr


def test_the_operator_down_alert_follows_the_scrape_job() -> None:
    # A ServiceMonitor's job is its Service's name, a PodMonitor's NAMESPACE/NAME.
    service = f'job="{FULLNAME}-metrics",namespace="{NAMESPACE}"'
    assert (
        alert_expression({"serviceMonitor": {"enabled": True}}) == f"absent(up{{{service}}} == 1)"
    )
    pod = f'job="{NAMESPACE}/{FULLNAME}",namespace="{NAMESPACE}"'
    assert alert_expression({"podMonitor": {"enabled": True}}) == f"absent(up{{{pod}}} == 1)"
    assert 'job="custom"' in alert_expression(
        {"prometheusRule": {"enabled": True, "job": "custom"}}
    )


def promtool_check(groups: list[dict[str, Any]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package, scripts/setup.sh) is missing"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("case", ["toggles", "toggles-podmonitor"])
def test_the_rendered_rules_pass_promtool(case: str, tmp_path: Path) -> None:
    rule = one(render(MATRIX[case]), "PrometheusRule")
    promtool_check(rule["spec"]["groups"], tmp_path)


def shipped_groups(runbooks: str = RUNBOOKS) -> list[dict[str, Any]]:
    """The groups of monitoring/rules/*.yaml, in file order, with the two things the chart
    sets: the runbooks' base URL and the operator's exact scrape job."""
    groups: list[dict[str, Any]] = []
    for path in sorted((ROOT / "monitoring" / "rules").glob("*.yaml")):
        text = path.read_text().replace(RUNBOOKS, runbooks)
        text = text.replace(
            'job=~".*gelu-rollout.*-metrics"', f'job="{JOB}",namespace="{NAMESPACE}"'
        )
        groups += yaml.safe_load(text)["groups"]
    return groups


def test_the_prometheus_rule_holds_the_rule_files_as_written() -> None:
    rule = one(render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    assert rule["spec"]["groups"] == shipped_groups()


def test_prometheus_templates_in_the_annotations_survive_helm() -> None:
    # The files are read with .Files.Get, not templated: Helm leaves {{ $labels.x }} alone.
    (rolled_back,) = [r for r in rendered_rules({}) if r.get("alert") == "GeluRolloutRolledBack"]
    assert "{{ $labels.rollout }}" in rolled_back["annotations"]["summary"]
    assert "{{ $labels.reason }}" in rolled_back["annotations"]["summary"]


def test_the_runbook_base_url_replaces_the_projects() -> None:
    base = "https://git.example.com/ops/gelu-rollout/-/blob/main/docs/runbooks/"
    alerts = [
        r
        for r in rendered_rules({"prometheusRule": {"enabled": True, "runbookBaseUrl": base}})
        if "alert" in r
    ]
    assert len(alerts) >= 10
    for alert in alerts:
        assert alert["annotations"]["runbook_url"] == f"{base}{alert['alert']}.md"
    rule = one(
        render({"prometheusRule": {"enabled": True, "runbookBaseUrl": base}}), "PrometheusRule"
    )
    assert rule["spec"]["groups"] == shipped_groups(base)
    assert RUNBOOKS not in yaml.safe_dump(rule)


def test_a_rule_file_added_to_the_chart_is_rendered_as_written(tmp_path: Path) -> None:
    chart = chart_copy(tmp_path, {"files/rules/rollouts.yaml": RULES})
    rule = one(render({"prometheusRule": {"enabled": True}}, chart), "PrometheusRule")
    added = yaml.safe_load(RULES)["groups"]
    assert [g for g in rule["spec"]["groups"] if g["name"] == "gelu-rollout-rollouts"] == added
    promtool_check(rule["spec"]["groups"], tmp_path)


def test_a_chart_without_rule_files_is_refused(tmp_path: Path) -> None:
    chart = chart_copy(tmp_path, {})
    shutil.rmtree(chart / "files" / "rules")
    with pytest.raises(helm.HelmError, match=r"files/rules"):
        render({"prometheusRule": {"enabled": True}}, chart)
    assert not of_kind(render({}, chart), "PrometheusRule")  # nothing asked, nothing refused


def test_a_rule_file_without_groups_is_refused_by_name(tmp_path: Path) -> None:
    chart = chart_copy(tmp_path, {"files/rules/broken.yaml": "rules: []\n"})
    with pytest.raises(helm.HelmError, match=r"files/rules/broken\.yaml"):
        render({"prometheusRule": {"enabled": True}}, chart)


def chart_with_dashboards(tmp: Path, files: dict[str, str]) -> Path:
    """A copy of the chart whose files/dashboards holds ``files`` (name: text) only."""
    chart = chart_copy(tmp, {})
    shutil.rmtree(chart / "files" / "dashboards", ignore_errors=True)
    (chart / "files" / "dashboards").mkdir(parents=True)
    for name, text in files.items():
        (chart / "files" / "dashboards" / name).write_text(text)
    return chart


def test_no_dashboard_file_no_config_map(tmp_path: Path) -> None:
    chart = chart_with_dashboards(tmp_path, {})
    manifests = render_manifests({"dashboards": {"enabled": True}}, chart)
    assert not of_kind(render({"dashboards": {"enabled": True}}, chart), "ConfigMap")
    chart_notes = next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))
    assert "no dashboard was installed" in chart_notes


def test_the_shipped_dashboards_are_config_maps_the_sidecar_finds_by_default() -> None:
    shipped = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert [p.name for p in shipped] == [
        "gelu-debug.json",
        "gelu-executive.json",
        "gelu-oncall.json",
    ]
    assert "no dashboard was installed" not in notes({"dashboards": {"enabled": True}})
    maps = of_kind(render({"dashboards": {"enabled": True}}), "ConfigMap")
    by_file = {name: m for m in maps for name in m["data"]}
    assert sorted(by_file) == [p.name for p in shipped]
    for path in shipped:
        config_map = by_file[path.name]
        assert config_map["data"][path.name] == path.read_text().rstrip("\n")
        assert config_map["metadata"]["namespace"] == NAMESPACE
        # The label kube-prometheus-stack's Grafana sidecar looks for, unless told otherwise.
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_each_dashboard_file_is_a_config_map_for_the_sidecar(tmp_path: Path) -> None:
    dashboard = json.dumps({"title": "gelu-rollout", "panels": []}, indent=2)
    chart = chart_with_dashboards(tmp_path, {"Gelu_Overview.json": dashboard, "gates.json": "{}"})
    assert not of_kind(render({}, chart), "ConfigMap")  # off unless asked for
    values = {
        "dashboards": {
            "enabled": True,
            "labels": {"grafana_dashboard": "1", "team": "ml"},
            "annotations": {"grafana_folder": "Rollouts"},
            "namespace": "monitoring",
        }
    }
    maps = {m["metadata"]["name"]: m for m in of_kind(render(values, chart), "ConfigMap")}
    assert sorted(maps) == [f"{FULLNAME}-dashboard-gates", f"{FULLNAME}-dashboard-gelu-overview"]
    overview = maps[f"{FULLNAME}-dashboard-gelu-overview"]
    assert overview["data"] == {"Gelu_Overview.json": dashboard}
    assert overview["metadata"]["namespace"] == "monitoring"
    assert overview["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert overview["metadata"]["labels"]["team"] == "ml"
    assert overview["metadata"]["annotations"] == {"grafana_folder": "Rollouts"}


def egress_rule(policy: Object, port: int) -> dict[str, Any]:
    rule: dict[str, Any] = next(
        r for r in policy["spec"]["egress"] if any(p["port"] == port for p in r["ports"])
    )
    return rule


def test_the_network_policy_lets_in_scrapes_only_and_out_what_the_operator_calls() -> None:
    objects = render(MATRIX["toggles"])
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels(objects).items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"] == MATRIX["toggles"]["networkPolicy"]["metricsFrom"]
    assert egress_rule(policy, 53)["ports"][0]["protocol"] == "UDP"
    assert egress_rule(policy, 443)["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert egress_rule(policy, 9090)["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    triton = egress_rule(policy, 8000)["to"][0]
    assert triton["podSelector"]["matchExpressions"] == [
        {"key": "gelu.dev/rollout", "operator": "Exists"}
    ]
    assert triton["namespaceSelector"] == {}  # cluster-wide: the rollouts' pods anywhere


def test_a_namespaced_network_policy_reaches_the_watched_namespaces_only() -> None:
    policy = one(render(MATRIX["toggles-podmonitor"]), "NetworkPolicy")
    selector = egress_rule(policy, 8000)["to"][0]["namespaceSelector"]
    assert selector["matchExpressions"][0]["values"] == ["team-a"]


def test_ingress_only_unless_egress_is_asked_for() -> None:
    policy = one(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in policy["spec"]
    assert "from" not in policy["spec"]["ingress"][0]  # anyone may scrape
