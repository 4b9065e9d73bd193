"""The operator's glue that needs no server: kinds and paths, status patches, manual requests."""

from __future__ import annotations

import pytest

from gelu_rollout.adapters.kube.kinds import (
    CUSTOM_RESOURCE_DEFINITION,
    DEPLOYMENT,
    ROLLOUT,
    SERVICE,
    kind_of,
)
from gelu_rollout.controller import _request, _status_patch
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION, RequestKind
from gelu_rollout.spec.status import RolloutStatus, Stage


def test_kind_paths() -> None:
    assert SERVICE.path("ns", "x") == "/api/v1/namespaces/ns/services/x"
    assert DEPLOYMENT.path("ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert (
        DEPLOYMENT.path("ns", "d", "status") == "/apis/apps/v1/namespaces/ns/deployments/d/status"
    )
    assert ROLLOUT.path(None) == "/apis/gelu.dev/v1alpha1/gelumodelrollouts"
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x"
    assert CUSTOM_RESOURCE_DEFINITION.path(None, "x") == crds
    with pytest.raises(ValueError, match="within a namespace"):
        SERVICE.path(None, "x")


def test_the_kind_table_names_what_objects_say_they_are() -> None:
    assert kind_of({"apiVersion": "apps/v1", "kind": "Deployment"}) is DEPLOYMENT
    with pytest.raises(ValueError, match="does not manage Secret"):
        kind_of({"apiVersion": "v1", "kind": "Secret"})


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
