"""The chart grants the operator exactly what it calls the API for: the rule set is built here
from the operator's table of kinds and a short, explicit list of what Kopf itself needs, and
compared with the rendered ClusterRole and Roles."""

from __future__ import annotations

import ast
import re
from typing import Final

import pytest

from gelu_rollout.adapters.kube import kinds
from gelu_rollout.adapters.kube.kinds import (
    CUSTOM_RESOURCE_DEFINITION,
    HTTP_ROUTE,
    NAMESPACE,
    OWNED_KINDS,
    POD,
    ROLLOUT,
    Kind,
)
from gelu_rollout.run import CLUSTER_PEERING, NAMESPACED_PEERING
from tests.chart.rendering import CHART, FULLNAME, Object, of_kind, one, render
from tests.chart.rendering import NAMESPACE as RELEASE_NAMESPACE

Rules = dict[tuple[str, str], frozenset[str]]


def group(kind: Kind) -> str:
    """The API group of a kind ("" for the core group)."""
    return kind.api_version.rpartition("/")[0]


def rule(kind: Kind, verbs: str, subresource: str = "") -> Rules:
    resource = f"{kind.plural}/{subresource}" if subresource else kind.plural
    return {(group(kind), resource): frozenset(verbs.split())}


# What the operator's own code does (controller.py, handlers.py, adapters/kube/cache.py): to
# each owned kind, get (the user's ConfigMaps, the arms' Deployments), list and watch by label
# (the cache), server-side apply (patch, and create where the object is new: the API server
# authorizes that apply as a create), prune (delete).
OPERATOR: Final[Rules] = {
    **{
        key: verbs
        for k in OWNED_KINDS
        for key, verbs in rule(k, "get list watch create patch delete").items()
    },
    # The arms' pods: listed and watched by label, read while a Deployment is not ready.
    **rule(POD, "list watch"),
    # The user's HTTPRoute: read, and its backends' weights merge-patched.
    **rule(HTTP_ROUTE, "get patch"),
    # The rollouts: Kopf lists and watches them and patches annotations and finalizers;
    # the status goes to the status subresource.
    **rule(ROLLOUT, "get list watch patch"),
    **rule(ROLLOUT, "patch", "status"),
}

# What Kopf needs besides: Events posted about the rollouts, the CRDs listed and watched to
# find its resources (cluster-scoped in every mode), and, when namespaced, the namespaces listed
# and watched to match the names it is given (Kopf 1.37+ lists none in cluster-wide mode).
KOPF_EVENTS: Final[Rules] = {("", "events"): frozenset({"create"})}
KOPF_CLUSTER: Final[Rules] = rule(CUSTOM_RESOURCE_DEFINITION, "list watch")
KOPF_NAMESPACED_MODE: Final[Rules] = rule(NAMESPACE, "list watch")
# Peering: Kopf watches the peering objects and patches its keep-alive into its own; the
# operator creates that object where it is missing (run.py: ensure_peering).
PEERING_VERBS: Final = "get list watch patch create"


def rules_of(role: Object) -> Rules:
    """A role's rules as (group, resource) -> verbs, each pair granted by one rule only."""
    found: Rules = {}
    for entry in role["rules"]:
        assert set(entry) == {"apiGroups", "resources", "verbs"}, entry  # no names, no URLs
        for api_group in entry["apiGroups"]:
            for resource in entry["resources"]:
                assert (api_group, resource) not in found, f"{resource} granted twice"
                found[(api_group, resource)] = frozenset(entry["verbs"])
    return found


def assert_least_privilege(rules: Rules) -> None:
    for (api_group, resource), verbs in rules.items():
        assert "*" not in api_group
        assert "*" not in resource
        assert "*" not in verbs
        assert resource != "secrets", "the operator reads no Secret"


def bound_to_the_service_account(binding: Object, role: Object) -> None:
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role["kind"],
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NAMESPACE}
    ]


@pytest.mark.parametrize("peering", [False, True])
def test_cluster_wide_rbac_is_what_the_operator_and_kopf_need(peering: bool) -> None:
    objects = render({"peering": {"enabled": peering}})
    role = one(objects, "ClusterRole")
    expected = OPERATOR | KOPF_EVENTS | KOPF_CLUSTER
    if peering:
        expected |= rule(CLUSTER_PEERING, PEERING_VERBS)
    assert rules_of(role) == expected
    assert_least_privilege(rules_of(role))
    assert not of_kind(objects, "Role")
    bound_to_the_service_account(one(objects, "ClusterRoleBinding"), role)


@pytest.mark.parametrize("peering", [False, True])
def test_namespaced_rbac_is_a_role_per_namespace_and_kopfs_cluster_reads(peering: bool) -> None:
    namespaces = ["team-a", "team-b"]
    objects = render({"watchNamespaces": namespaces, "peering": {"enabled": peering}})
    cluster_role = one(objects, "ClusterRole")
    assert rules_of(cluster_role) == KOPF_CLUSTER | KOPF_NAMESPACED_MODE
    bound_to_the_service_account(one(objects, "ClusterRoleBinding"), cluster_role)
    expected = OPERATOR | KOPF_EVENTS
    if peering:
        expected |= rule(NAMESPACED_PEERING, PEERING_VERBS)
    roles = {r["metadata"]["namespace"]: r for r in of_kind(objects, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in of_kind(objects, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == namespaces
    for namespace in namespaces:
        assert rules_of(roles[namespace]) == expected
        assert_least_privilege(rules_of(roles[namespace]))
        bound_to_the_service_account(bindings[namespace], roles[namespace])


def test_every_kind_the_controller_touches_is_in_the_expected_rules() -> None:
    # A kind the controller starts using must show up here, and so in the chart.
    source = (CHART.parents[1] / "operator" / "gelu_rollout" / "controller.py").read_text()
    imported = {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module == "gelu_rollout.adapters.kube.kinds"
        for alias in node.names
    }
    used: list[Kind] = [getattr(kinds, name) for name in imported]
    used_kinds = [k for k in used if isinstance(k, Kind)]
    assert used_kinds, "the controller imports no kind; the test is out of date"
    for kind in [*used_kinds, *OWNED_KINDS]:
        assert (group(kind), kind.plural) in OPERATOR, kind


def test_rbac_off_renders_no_role() -> None:
    objects = render({"rbac": {"create": False}, "watchNamespaces": ["team-a"]})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not of_kind(objects, kind)


def test_the_service_account_is_the_pods_and_can_be_an_existing_one() -> None:
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    objects = render({"serviceAccount": {"create": False, "name": "ops-operator"}})
    assert not of_kind(objects, "ServiceAccount")
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == (
        "ops-operator"
    )
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "ops-operator"


def test_every_rule_in_the_templates_says_why() -> None:
    for path in (CHART / "templates" / "_helpers.tpl", CHART / "templates" / "rbac.yaml"):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if re.match(r"\s*- apiGroups:", line):
                before = lines[number - 1].strip()
                assert before.startswith("#"), f"{path.name}:{number + 1}: rule without comment"
