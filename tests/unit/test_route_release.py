"""Giving a deleted rollout's HTTPRoute back its backends (pure parts and the controller)."""

from __future__ import annotations

from typing import Any

from gelu_rollout.resources.traffic import (
    backend_refs,
    is_rollouts_own,
    route_backends,
    route_backends_patch,
    route_restore_patch,
)

ORIGINAL = [{"name": "gelu-v1", "port": 8000, "weight": 1}]


def route(*rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "spec": {
            "rules": [
                {"matches": [{"path": {"value": f"/r{i}"}}], "backendRefs": refs}
                for i, refs in enumerate(rules)
            ]
        }
    }


def test_the_original_backends_come_back_and_the_rest_of_each_rule_stays() -> None:
    before = route(ORIGINAL, [{"name": "other", "port": 80}])
    originals = route_backends(before)
    assert not is_rollouts_own(originals, "gelu")
    during = {"spec": route_backends_patch(before, "gelu", 25)["spec"]}
    assert is_rollouts_own(route_backends(during), "gelu")
    patch = route_restore_patch(during, originals)
    assert patch is not None
    assert route_backends(patch) == originals
    assert [r["matches"] for r in patch["spec"]["rules"]] == [
        r["matches"] for r in before["spec"]["rules"]
    ]
    # Nothing to do once restored.
    assert route_restore_patch(before, originals) is None


def test_a_rule_added_since_gets_the_first_rules_backends() -> None:
    during = route(backend_refs("gelu", 25), backend_refs("gelu", 25))
    patch = route_restore_patch(during, [ORIGINAL])
    assert patch is not None
    assert route_backends(patch) == [ORIGINAL, ORIGINAL]
