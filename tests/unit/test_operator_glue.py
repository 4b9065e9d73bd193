"""The operator's glue that needs no server: merge patches, status patches, manual requests."""

from __future__ import annotations

import pytest

from gelu_rollout.adapters.kube import _with_removals, resource_path
from gelu_rollout.controller import _request, _status_patch
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION, RequestKind
from gelu_rollout.spec.status import RolloutStatus, Stage


def service(selector: dict[str, str]) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "spec": {"selector": selector}}


def test_a_service_selector_key_no_longer_wanted_is_deleted_by_the_patch() -> None:
    live = service({"gelu.dev/rollout": "r", "gelu.dev/arm": "baseline"})
    desired = service({"gelu.dev/rollout": "r"})
    patch = _with_removals(desired, live)
    assert patch["spec"] == {"selector": {"gelu.dev/rollout": "r", "gelu.dev/arm": None}}
    assert desired["spec"] == {"selector": {"gelu.dev/rollout": "r"}}  # not mutated


def test_other_objects_and_unchanged_selectors_are_patched_as_they_are() -> None:
    same = service({"gelu.dev/rollout": "r"})
    assert _with_removals(same, service({"gelu.dev/rollout": "r"})) is same
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}}
    assert _with_removals(config_map, {**config_map, "data": {"a": "1", "b": "2"}}) is config_map


def test_resource_paths() -> None:
    assert resource_path("v1", "Service", "ns", "x") == "/api/v1/namespaces/ns/services/x"
    assert resource_path("apps/v1", "Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    with pytest.raises(ValueError, match="does not manage"):
        resource_path("v1", "Secret", "ns")


def test_status_patch_nulls_fields_that_went_away_but_keeps_foreign_ones() -> None:
    old = {"stage": "RolledBack", "finishedAt": "2026-11-25T00:00:00Z", "kopf": {"x": 1}}
    patch = _status_patch(old, RolloutStatus(stage=Stage.PENDING))
    assert patch["finishedAt"] is None
    assert patch["stage"] == "Pending"
    assert "kopf" not in patch


def test_requests_are_read_from_the_annotation_once() -> None:
    meta = {"annotations": {REQUEST_ANNOTATION: "promote/42"}}
    request, problem = _request(meta, RolloutStatus())
    assert problem is None
    assert request is not None
    assert (request.kind, request.id) == (RequestKind.PROMOTE, "42")
    handled = RolloutStatus(handled_request="42")
    assert _request(meta, handled) == (None, None)
    assert _request({}, RolloutStatus()) == (None, None)


def test_a_bad_request_annotation_is_reported_not_acted_on() -> None:
    request, problem = _request({"annotations": {REQUEST_ANNOTATION: "ship-it/1"}}, RolloutStatus())
    assert request is None
    assert problem is not None
    assert REQUEST_ANNOTATION in problem
    assert "ship-it" in problem
