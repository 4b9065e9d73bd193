"""The API server's pure semantics: patches, server-side apply's field sets, selectors."""

from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gelu_lab.sandbox import api_semantics
from gelu_lab.sandbox.api_semantics import (
    APPLY,
    UPDATE,
    ApplyConflict,
    FieldPath,
    ManagedFieldsEntry,
    SelectorError,
    apply_intent,
    compare,
    decode_managed_fields,
    default_field_manager,
    encode_managed_fields,
    field_selector,
    field_set,
    fields_v1,
    label_selector,
    leaves,
    managed_part,
    merge_patch,
    parse_fields_v1,
    query_flag,
    record_update,
    selector,
    strategic_merge_patch,
    strip_nulls,
)

Json = dict[str, Any]
T0, T1, T2 = "2030-01-01T00:00:00Z", "2030-01-01T00:00:01Z", "2030-01-01T00:00:02Z"


def apply(
    live: Json,
    intent: Json,
    manager: str,
    entries: tuple[ManagedFieldsEntry, ...] = (),
    *,
    force: bool = False,
    now: str = T1,
) -> tuple[Json, tuple[ManagedFieldsEntry, ...]]:
    return apply_intent(live, intent, manager, entries, api_version="v1", force=force, now=now)


def owned(entries: tuple[ManagedFieldsEntry, ...]) -> dict[tuple[str, str], set[FieldPath]]:
    return {(entry.manager, entry.operation): set(entry.fields) for entry in entries}


# -- patches ----------------------------------------------------------------------------------


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "s": "x"}
    patch = {"a": {"b": None, "d": 3}, "l": [3], "s": {"now": "object"}}
    assert merge_patch(target, patch) == {"a": {"c": 2, "d": 3}, "l": [3], "s": {"now": "object"}}
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2], "s": "x"}  # untouched


def test_strategic_merge_patch_merges_lists_by_key_and_drops_directives() -> None:
    target = {
        "containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}],
        "args": ["x", "y"],
        "finalizers": ["f1", "f2"],
    }
    patch = {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "c"}],
        "containers": [
            {"name": "a", "image": "2"},
            {"name": "b", "$patch": "delete"},
            {"name": "c"},
        ],
        "args": ["z"],
        "$deleteFromPrimitiveList/finalizers": ["f1"],
    }
    assert strategic_merge_patch(target, patch) == {
        "containers": [{"name": "a", "image": "2"}, {"name": "c"}],
        "args": ["z"],
        "finalizers": ["f2"],
    }


# -- selectors --------------------------------------------------------------------------------


def test_label_selectors() -> None:
    labels = {"app": "one", "tier": "web"}
    assert label_selector("app=one")(labels)
    assert label_selector("app==one,tier")(labels)
    assert not label_selector("app!=one")(labels)
    assert label_selector("app in (one, two),tier notin (db)")(labels)
    assert not label_selector("!tier")(labels)
    assert label_selector("")(labels)
    for bad in ("!app=one", "app in one", "=x"):
        with pytest.raises(SelectorError):
            label_selector(bad)


def test_field_selectors_and_both_together() -> None:
    obj = {"metadata": {"name": "p1", "labels": {"app": "one"}}, "spec": {"on": True}}
    assert field_selector("metadata.name=p1")(obj)
    assert field_selector("spec.on=true,metadata.namespace=")(obj)
    assert not field_selector("metadata.name!=p1")(obj)
    assert selector("app=one", "metadata.name=p1")(obj)
    assert not selector("app=two", "metadata.name=p1")(obj)
    with pytest.raises(SelectorError):
        field_selector("metadata.name")


# -- field sets -------------------------------------------------------------------------------


def test_field_sets_hold_leaves_and_lists_are_atomic() -> None:
    obj = {
        "metadata": {"labels": {"app": "a"}, "annotations": {}},
        "spec": {"containers": [{"name": "c", "image": "i"}], "replicas": 1, "paused": None},
    }
    assert field_set(obj) == {
        ("metadata", "labels", "app"),
        ("spec", "containers"),
        ("spec", "replicas"),
        ("spec", "paused"),
    }
    assert fields_v1(field_set(strip_nulls(obj))) == {
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {"f:containers": {}, "f:replicas": {}},
    }


def test_fields_v1_marks_a_member_with_members_below_and_reads_list_items() -> None:
    fields = {("spec",), ("spec", "replicas")}
    assert fields_v1(fields) == {"f:spec": {".": {}, "f:replicas": {}}}
    assert parse_fields_v1(fields_v1(fields)) == fields
    # A server with a schema writes the items of associative lists; here a list is atomic.
    real: Json = {"f:spec": {"f:containers": {'k:{"name":"c"}': {".": {}, "f:image": {}}}}}
    assert parse_fields_v1(real) == {("spec", "containers")}


def test_managed_part_drops_type_and_server_metadata() -> None:
    obj: Json = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "uid": "u", "resourceVersion": "3", "labels": {"a": "b"}},
        "spec": {"x": 1},
        "status": {"y": 2},
    }
    assert managed_part(obj) == {
        "metadata": {"labels": {"a": "b"}},
        "spec": {"x": 1},
        "status": {"y": 2},
    }
    assert managed_part(obj, exclude=("status",)) == {
        "metadata": {"labels": {"a": "b"}},
        "spec": {"x": 1},
    }
    assert managed_part(obj, only="status") == {"status": {"y": 2}}
    assert obj["metadata"]["uid"] == "u"  # untouched


def test_compare_tells_json_types_apart() -> None:
    change = compare({"a": 1, "b": True, "c": [1], "d": 0}, {"a": 1.0, "b": 1, "c": [1], "e": 0})
    assert change.modified == {("a",), ("b",)}
    assert change.added == {("e",)}
    assert change.removed == {("d",)}
    assert compare({"a": {"b": [1, {"c": 2}]}}, {"a": {"b": [1, {"c": 2}]}}).same


def test_managed_fields_round_trip_in_the_servers_order() -> None:
    entries = (
        ManagedFieldsEntry("b", UPDATE, "v1", frozenset({("data", "x")}), T0),
        ManagedFieldsEntry("z", APPLY, "v1", frozenset({("data", "y")}), T2),
        ManagedFieldsEntry("a", UPDATE, "v1", frozenset({("status", "s")}), T1, "status"),
        ManagedFieldsEntry("a", APPLY, "v1", frozenset({("data", "z")}), T1),
    )
    encoded = encode_managed_fields(entries)
    assert [(e["manager"], e["operation"]) for e in encoded] == [
        ("a", "Apply"),
        ("z", "Apply"),
        ("b", "Update"),
        ("a", "Update"),
    ]
    assert encoded[3] == {
        "manager": "a",
        "operation": "Update",
        "apiVersion": "v1",
        "time": T1,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:s": {}}},
        "subresource": "status",
    }
    assert set(decode_managed_fields(encoded)) == set(entries)
    assert decode_managed_fields([{"manager": "m", "operation": "Other"}, "junk"]) == ()


# -- apply ------------------------------------------------------------------------------------


def test_apply_creates_and_a_second_apply_changes_nothing() -> None:
    intent = {"metadata": {"labels": {"app": "a"}}, "spec": {"selector": {"app": "a"}}}
    obj, entries = apply({}, intent, "op")
    assert obj == intent
    assert owned(entries) == {
        ("op", APPLY): {("metadata", "labels", "app"), ("spec", "selector", "app")}
    }
    again, same = apply(obj, intent, "op", entries, now=T2)
    assert (again, same) == (obj, entries)  # nor does the time move


def test_apply_removes_what_the_manager_dropped_unless_someone_else_owns_it() -> None:
    first = {"spec": {"selector": {"app": "a", "track": "canary"}, "type": "ClusterIP"}}
    obj, entries = apply({}, first, "op")
    # Another manager shares one field (same value: no conflict) and adds one of its own.
    obj, entries = apply(obj, {"spec": {"type": "ClusterIP", "extra": 1}}, "other", entries)

    obj, entries = apply(obj, {"spec": {"selector": {"app": "a"}}}, "op", entries)
    assert obj == {"spec": {"selector": {"app": "a"}, "type": "ClusterIP", "extra": 1}}
    assert owned(entries)[("op", APPLY)] == {("spec", "selector", "app")}

    # Dropping the whole selector removes the emptied map too; the other's fields stay.
    obj, entries = apply(obj, {"spec": {}}, "op", entries)
    assert obj == {"spec": {"type": "ClusterIP", "extra": 1}}
    assert ("op", APPLY) not in owned(entries)
    # ...unless the intent names the map itself.
    obj, entries = apply(obj, {"spec": {"selector": {"k": "v"}}}, "op", entries)
    obj, entries = apply(obj, {"spec": {"selector": {}}}, "op", entries)
    assert obj["spec"]["selector"] == {}


def test_apply_conflicts_with_other_owners_unless_forced() -> None:
    obj, entries = apply({}, {"data": {"k": "v", "j": "v"}}, "op")
    with pytest.raises(ApplyConflict) as raised:
        apply(obj, {"data": {"k": "other"}}, "helm", entries)
    assert raised.value.message == 'Apply failed with 1 conflict: conflict with "op": .data.k'
    assert raised.value.causes == [
        {"type": "FieldManagerConflict", "message": 'conflict with "op"', "field": ".data.k"}
    ]

    obj, entries = apply(obj, {"data": {"k": "other"}}, "helm", entries, force=True)
    assert obj == {"data": {"k": "other", "j": "v"}}
    assert owned(entries) == {("op", APPLY): {("data", "j")}, ("helm", APPLY): {("data", "k")}}


def test_many_conflicts_are_listed_by_manager() -> None:
    entries = (
        ManagedFieldsEntry("b", UPDATE, "apps/v1", frozenset({("x",), ("y",)}), T0),
        ManagedFieldsEntry("a", APPLY, "apps/v1", frozenset({("z",)}), T0),
    )
    with pytest.raises(ApplyConflict) as raised:
        apply({"x": 1, "y": 1, "z": 1}, {"x": 2, "y": 2, "z": 2}, "m", entries)
    assert str(raised.value) == (
        "Apply failed with 3 conflicts: "
        'conflicts with "a":\n- .z\n'
        'conflicts with "b" using apps/v1:\n- .x\n- .y'
    )


def test_an_update_takes_fields_so_a_later_apply_conflicts_even_for_the_same_manager() -> None:
    obj, entries = apply({}, {"spec": {"replicas": 1, "paused": False}}, "op")
    new = {"spec": {"replicas": 5, "paused": False, "minReadySeconds": 3}}
    entries = record_update(obj, new, "hpa", entries, api_version="apps/v1", now=T2)
    assert owned(entries) == {
        ("op", APPLY): {("spec", "paused")},
        ("hpa", UPDATE): {("spec", "replicas"), ("spec", "minReadySeconds")},
    }
    with pytest.raises(ApplyConflict, match=r'conflict with "hpa" using apps/v1: \.spec\.replicas'):
        apply(new, {"spec": {"replicas": 1, "paused": False}}, "op", entries)

    # The same manager's own update is another owner to its apply, as on the real server.
    entries = record_update(
        new, {"spec": {"paused": True}}, "op", entries, api_version="v1", now=T2
    )
    assert owned(entries) == {("op", UPDATE): {("spec", "paused")}}  # removals leave every set
    with pytest.raises(ApplyConflict, match=r'"op" using v1'):
        apply({"spec": {"paused": True}}, {"spec": {"paused": False}}, "op", entries)


def test_an_update_that_changes_nothing_records_nothing() -> None:
    entries = (ManagedFieldsEntry("op", APPLY, "v1", frozenset({("a",)}), T0),)
    assert record_update({"a": 1}, {"a": 1}, "x", entries, api_version="v1", now=T2) == entries


def test_a_null_in_the_intent_is_no_field() -> None:
    obj, entries = apply({}, {"a": 1, "b": 2}, "op")
    obj, entries = apply(obj, {"a": 1, "b": None}, "op", entries)
    assert obj == {"a": 1}
    assert owned(entries) == {("op", APPLY): {("a",)}}


def test_default_field_manager_and_query_flags() -> None:
    assert default_field_manager("kubectl/v1.30.0 (linux/amd64) kubernetes/abc") == "kubectl"
    assert default_field_manager("Python/3.11 aiohttp/3.9") == "Python"
    assert default_field_manager("my tool\x07/1") == "my tool"
    assert default_field_manager("x" * 200) == "x" * 128
    assert default_field_manager(None) == default_field_manager("") == "unknown"
    assert [query_flag(v) for v in (None, "false", "False", "0", "true", "1", "")] == [
        False,
        False,
        False,
        False,
        True,
        True,
        True,
    ]


def test_the_module_needs_only_the_standard_library() -> None:
    tree = ast.parse(Path(api_semantics.__file__).read_text(encoding="utf-8"))
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }
    assert imported
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


# -- properties -------------------------------------------------------------------------------

_keys = st.sampled_from(["a", "b", "c", "d"])
_scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["x", "y"])
_values = st.recursive(
    _scalars | st.lists(st.integers(0, 3), max_size=3),
    lambda inner: st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_objects = st.dictionaries(_keys, _values, max_size=4)


@given(
    st.sets(st.lists(st.sampled_from(["a", "b", "f:c", "."]), min_size=1, max_size=4).map(tuple))
)
def test_fields_v1_round_trips_any_field_set(fields: set[FieldPath]) -> None:
    assert parse_fields_v1(fields_v1(fields)) == fields


@settings(max_examples=60, deadline=None)
@given(_objects, _objects)
def test_apply_sets_the_intent_owns_it_and_is_idempotent(live: Json, intent: Json) -> None:
    before = copy.deepcopy((live, intent))
    obj, entries = apply(live, intent, "op", force=True)
    assert (live, intent) == before  # arguments untouched
    for path, value in leaves(strip_nulls(intent)).items():
        assert leaves(obj)[path] == value
    assert owned(entries).get(("op", APPLY), set()) == field_set(strip_nulls(intent))
    assert apply(obj, intent, "op", entries, now=T2) == (obj, entries)


@settings(max_examples=60, deadline=None)
@given(_objects, _objects)
def test_a_sole_manager_ends_with_exactly_its_latest_intent(first: Json, second: Json) -> None:
    obj, entries = apply({}, first, "op")
    obj, entries = apply(obj, second, "op", entries)
    assert leaves(obj) == leaves(strip_nulls(second))


@settings(max_examples=60, deadline=None)
@given(_objects, _objects, _objects)
def test_an_update_owns_what_it_changed_alone(first: Json, other: Json, new: Json) -> None:
    obj, entries = apply({}, first, "op")
    obj, entries = apply(obj, other, "helm", entries, force=True)
    after = record_update(obj, new, "kubectl", entries, api_version="v1", now=T2)
    change = compare(obj, new)
    for entry in after:
        assert entry.fields, "empty entries are dropped"
        assert entry.fields <= field_set(new)  # nobody owns a field that is gone
        if entry.manager != "kubectl":
            assert not entry.fields & (change.added | change.modified)
