"""Kubernetes API-server semantics as pure functions: patches, server-side apply, selectors.

Nothing here knows this project, keeps state or does I/O, and only the standard library is
used: each function takes JSON values (dicts, lists, scalars, as ``json.loads`` returns them),
returns new ones and leaves its arguments untouched. It is written so that it could be offered
to kmock, whose ``KubernetesEmulator`` merges plain dicts and has none of it.

**Patches.** ``merge_patch`` is RFC 7386; ``strategic_merge_patch`` is Kubernetes' own without
the OpenAPI schema (lists of objects merge by a guessed key).

**Server-side apply.** ``apply_intent`` applies a field manager's full intent to a live object;
``record_update`` records what any other write (create, update, patch) changed. Both work on
the entries of ``metadata.managedFields`` (``ManagedFieldsEntry``, read and written by
``decode_managed_fields`` and ``encode_managed_fields``, with field sets in the real
``FieldsV1`` trie format: ``fields_v1`` and ``parse_fields_v1``). As on a real API server
(structured-merge-diff):

- a field set holds an object's leaf fields (``field_set``): scalars and lists; a map is no
  field of its own, and an empty map is none. ``apiVersion``, ``kind`` and the server's
  metadata (``UNOWNED_METADATA``) are nobody's (``managed_part`` drops them);
- apply: the intent merges into the live object (maps recursively, lists and scalars
  replaced); the fields the manager applied last time and no longer names are removed from the
  object unless another manager owns them too; the manager then owns exactly its intent;
- a field that an apply adds or changes and that another manager owns (even the same manager
  through an ``Update``) is a conflict (``ApplyConflict``) unless the apply is forced, when the
  applier takes it; a field set to the value it already has is shared, not a conflict;
- an update takes every field it adds or changes from the other managers, and a field it
  removes leaves every set; a manager whose set is empty loses its entry;
- entries are keyed as the server keys them (manager, operation, apiVersion for updates only,
  subresource) and listed in its order; an entry's ``time`` moves only when its manager
  changed something, so that a write that changes nothing stays no write.

Simplifications: every list is atomic, one leaf (``"f:containers": {}``), never merged by its
items (no ``k:``, ``v:`` or ``i:`` elements; when reading them, they count as the whole
list). There is no schema, so no defaulting, unions or conversion between versions (a path is
the same field in every apiVersion). A ``null`` in an intent leaves the field out of the
intent (it is not a removal). A map that a removal empties goes too, unless the intent names
it. Update entries are not capped (the server folds the oldest past ten).

**Selectors.** ``label_selector``, ``field_selector`` and ``selector`` parse the selectors of
list and watch requests into predicates (``SelectorError`` if they cannot be parsed).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple

JsonObject = dict[str, Any]
FieldPath = tuple[str, ...]  # the keys from the object's root down to a field
FieldSet = frozenset[FieldPath]
Predicate = Callable[[Mapping[str, Any]], bool]
Operation = Literal["Apply", "Update"]

APPLY: Final = "Apply"
UPDATE: Final = "Update"
FIELDS_V1: Final = "FieldsV1"

# What the real server strips before it computes field sets: identity and server-set metadata.
UNOWNED_METADATA: Final = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "resourceVersion",
        "selfLink",
        "managedFields",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)
UNKNOWN_MANAGER: Final = "unknown"
_MANAGER_MAX_LENGTH: Final = 128


# -- patches --------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch without the OpenAPI schema: lists of objects merge by their key.

    The merge key is guessed (``name``, then ``containerPort``, ``port``, ``mountPath``,
    ``type``, ``uid``); lists without one are replaced, as merge patch does. The directives
    kubectl sends (``$patch``, ``$setElementOrder/...``, ``$deleteFromPrimitiveList/...``,
    ``$retainKeys``) are honoured or dropped, never stored.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {
            key: copy.deepcopy(value) for key, value in patch.items() if not key.startswith("$")
        }
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
        elif key.startswith("$"):
            continue
        elif value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_lists(result[key], value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_lists(old: list[Any], new: list[Any]) -> list[Any]:
    merge_key = _merge_key(old, new)
    if merge_key is None:
        return [strategic_merge_patch(None, item) for item in new if not _is_directive(item)]
    merged = [copy.deepcopy(item) for item in old]
    for item in new:
        position = next(
            (i for i, have in enumerate(merged) if have[merge_key] == item[merge_key]), None
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del merged[position]
        elif position is not None:
            merged[position] = strategic_merge_patch(merged[position], item)
        else:
            merged.append(strategic_merge_patch({}, item))
    return merged


def _merge_key(old: list[Any], new: list[Any]) -> str | None:
    items = old + new
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in ("name", "containerPort", "port", "mountPath", "type", "uid"):
        if all(key in item for item in items):
            return key
    return None


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and "$patch" in item


# -- server-side apply: field sets --------------------------------------------------------


class Comparison(NamedTuple):
    """The leaf fields that a write added, modified (to another value) and removed."""

    added: FieldSet
    modified: FieldSet
    removed: FieldSet

    @property
    def same(self) -> bool:
        return not (self.added or self.modified or self.removed)


def managed_part(
    obj: Mapping[str, Any], *, only: str | None = None, exclude: Collection[str] = ()
) -> JsonObject:
    """The part of ``obj`` that field managers own: no apiVersion, kind or server metadata.

    ``only`` keeps one top-level field (a subresource's, e.g. ``status``); ``exclude`` drops
    top-level fields (those that a subresource owns).
    """
    part = {
        key: copy.deepcopy(value)
        for key, value in obj.items()
        if key not in ("apiVersion", "kind")
        and key not in exclude
        and (only is None or key == only)
    }
    if isinstance(part.get("metadata"), Mapping):
        part["metadata"] = {
            key: value for key, value in part["metadata"].items() if key not in UNOWNED_METADATA
        }
    return part


def leaves(value: Any, prefix: FieldPath = ()) -> dict[FieldPath, Any]:
    """Every leaf field of ``value`` (scalars and lists, lists being atomic) with its value."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    found: dict[FieldPath, Any] = {}
    for key, child in value.items():
        found.update(leaves(child, (*prefix, str(key))))
    return found


def field_set(value: Any) -> FieldSet:
    """The leaf fields of ``value``: what a manager owns once it has applied ``value``."""
    return frozenset(leaves(value))


def compare(old: Any, new: Any) -> Comparison:
    """What changed between two versions of an object, field by field."""
    before, after = leaves(old), leaves(new)
    return Comparison(
        added=frozenset(after.keys() - before.keys()),
        modified=frozenset(
            path
            for path in before.keys() & after.keys()
            if not _same_json(before[path], after[path])
        ),
        removed=frozenset(before.keys() - after.keys()),
    )


def _same_json(left: Any, right: Any) -> bool:
    # Python's == takes true for 1 and 1 for 1.0; JSON values of another type are other values.
    if type(left) is not type(right):
        return False
    if isinstance(left, Mapping):
        return left.keys() == right.keys() and all(_same_json(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_same_json, left, right))
    return bool(left == right)


def format_path(path: FieldPath) -> str:
    """A field path as the server prints it in conflicts: ``.spec.selector.app``."""
    return "".join(f".{step}" for step in path)


def fields_v1(fields: Iterable[FieldPath]) -> JsonObject:
    """A field set in the ``FieldsV1`` trie format: ``{"f:spec": {"f:replicas": {}}}``."""
    members = set(fields)
    root: JsonObject = {}
    for path in members:
        node = root
        for step in path:
            node = node.setdefault(f"f:{step}", {})
    # A field that is a member and has members below it too says so with ".".
    for path in members:
        node = root
        for step in path:
            node = node[f"f:{step}"]
        if path and node:
            node["."] = {}
    return root


def parse_fields_v1(tree: Mapping[str, Any], prefix: FieldPath = ()) -> FieldSet:
    """The field set of a ``FieldsV1`` trie (``k:``, ``v:``, ``i:`` items count as their list)."""
    found: set[FieldPath] = set()
    for key, child in tree.items():
        if key.startswith("f:"):
            path = (*prefix, key[2:])
            if isinstance(child, Mapping) and child:
                found |= parse_fields_v1(child, path)
            else:
                found.add(path)
        elif prefix:  # ".", or an item of a list, which is atomic here
            found.add(prefix)
    return frozenset(found)


@dataclasses.dataclass(frozen=True)
class ManagedFieldsEntry:
    """One entry of ``metadata.managedFields``: the fields one manager owns by one operation."""

    manager: str
    operation: Operation
    api_version: str
    fields: FieldSet
    time: str
    subresource: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The server's manager identifier: an applier keeps one entry across apiVersions."""
        version = "" if self.operation == APPLY else self.api_version
        return (self.manager, self.operation, version, self.subresource)

    def describe(self) -> str:
        """The manager as conflict messages name it: ``"kubectl" using apps/v1``."""
        text = f'"{self.manager}"'
        if self.operation == UPDATE:
            text += f" using {self.api_version}"
        if self.subresource:
            text += f' with subresource "{self.subresource}"'
        return text

    def to_json(self) -> JsonObject:
        entry: JsonObject = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": FIELDS_V1,
            "fieldsV1": fields_v1(self.fields),
        }
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry

    @classmethod
    def from_json(cls, entry: Any) -> ManagedFieldsEntry | None:
        """The entry, or None if it is not one (another fields type, a missing manager)."""
        if not isinstance(entry, Mapping) or entry.get("fieldsType", FIELDS_V1) != FIELDS_V1:
            return None
        operation, manager = entry.get("operation"), entry.get("manager")
        if operation not in (APPLY, UPDATE) or not isinstance(manager, str):
            return None
        tree = entry.get("fieldsV1")
        return cls(
            manager=manager,
            operation=APPLY if operation == APPLY else UPDATE,
            api_version=str(entry.get("apiVersion") or ""),
            fields=parse_fields_v1(tree) if isinstance(tree, Mapping) else frozenset(),
            time=str(entry.get("time") or ""),
            subresource=str(entry.get("subresource") or ""),
        )


def decode_managed_fields(raw: Any) -> tuple[ManagedFieldsEntry, ...]:
    """The entries of a ``metadata.managedFields`` value (what is not an entry is skipped)."""
    if not isinstance(raw, list):
        return ()
    entries = (ManagedFieldsEntry.from_json(item) for item in raw)
    return tuple(entry for entry in entries if entry is not None)


def encode_managed_fields(entries: Iterable[ManagedFieldsEntry]) -> list[JsonObject]:
    """``metadata.managedFields`` in the server's order: appliers first, then oldest first."""
    ordered = sorted(
        entries,
        key=lambda e: (e.operation, e.time, e.manager, e.api_version, e.subresource),
    )
    return [entry.to_json() for entry in ordered]


@dataclasses.dataclass(frozen=True)
class Conflict:
    """A field that an apply would change and that another manager owns."""

    owner: ManagedFieldsEntry
    path: FieldPath


class ApplyConflict(Exception):  # noqa: N818 - the server's own name for the failure
    """An apply changes fields that other managers own; the message is the server's."""

    def __init__(self, conflicts: Sequence[Conflict]) -> None:
        self.conflicts = tuple(conflicts)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if len(self.conflicts) == 1:
            (only,) = self.conflicts
            return (
                f"Apply failed with 1 conflict: conflict with {only.owner.describe()}: "
                f"{format_path(only.path)}"
            )
        by_owner: dict[tuple[str, str, str, str], list[Conflict]] = {}
        for conflict in self.conflicts:
            by_owner.setdefault(conflict.owner.key, []).append(conflict)
        lines: list[str] = []
        for key in sorted(by_owner):
            lines.append(f"conflicts with {by_owner[key][0].owner.describe()}:")
            lines.extend(f"- {format_path(conflict.path)}" for conflict in by_owner[key])
        return f"Apply failed with {len(self.conflicts)} conflicts: " + "\n".join(lines)

    @property
    def causes(self) -> list[JsonObject]:
        """The ``details.causes`` of the server's 409 Status."""
        return [
            {
                "type": "FieldManagerConflict",
                "message": f"conflict with {conflict.owner.describe()}",
                "field": format_path(conflict.path),
            }
            for conflict in self.conflicts
        ]


def strip_nulls(value: Any) -> Any:
    """``value`` without the map entries whose value is ``null`` (lists are left as they are)."""
    if not isinstance(value, Mapping):
        return copy.deepcopy(value)
    return {key: strip_nulls(child) for key, child in value.items() if child is not None}


def merge_intent(live: Any, intent: Any) -> Any:
    """The live object with the intent set: maps merge recursively, the rest is replaced."""
    if not isinstance(live, Mapping) or not isinstance(intent, Mapping):
        return copy.deepcopy(intent)
    merged = {key: copy.deepcopy(value) for key, value in live.items()}
    for key, value in intent.items():
        merged[key] = merge_intent(live.get(key), value)
    return merged


def _names(intent: Any, path: FieldPath) -> bool:
    node = intent
    for step in path:
        if not isinstance(node, Mapping) or step not in node:
            return False
        node = node[step]
    return True


def _remove_field(obj: JsonObject, path: FieldPath, intent: Any) -> None:
    """Remove one leaf field, and the maps it leaves empty that the intent does not name."""
    chain: list[tuple[dict[str, Any], str]] = []
    node: Any = obj
    for step in path:
        if not isinstance(node, dict) or step not in node:
            return  # gone already
        chain.append((node, step))
        node = node[step]
    if isinstance(node, Mapping) and node:
        return  # a map with fields of its own now: they are not this field
    for depth in range(len(chain), 0, -1):
        parent, step = chain[depth - 1]
        if depth < len(chain) and (parent[step] or _names(intent, path[:depth])):
            return
        del parent[step]


def apply_intent(
    live: Mapping[str, Any],
    intent: Mapping[str, Any],
    manager: str,
    entries: Iterable[ManagedFieldsEntry],
    *,
    api_version: str,
    force: bool,
    now: str,
    subresource: str = "",
) -> tuple[JsonObject, tuple[ManagedFieldsEntry, ...]]:
    """Server-side apply of ``manager``'s ``intent`` to ``live``: the result and the new entries.

    ``live`` and ``intent`` are the managed parts of the objects (``managed_part``), ``entries``
    the live object's. Raises ``ApplyConflict`` if the apply would change fields that others
    own and ``force`` is false. If nothing changes, ``live`` and ``entries`` come back equal.
    """
    entries = tuple(entries)
    intent = strip_nulls(intent)
    applier = ManagedFieldsEntry(manager, APPLY, api_version, field_set(intent), now, subresource)
    previous = next((entry for entry in entries if entry.key == applier.key), None)
    others = [entry for entry in entries if entry.key != applier.key]

    merged = merge_intent(live, intent)
    if previous is not None:
        shared = frozenset().union(*(entry.fields for entry in others))
        for path in sorted(previous.fields - applier.fields - shared):
            _remove_field(merged, path, intent)

    change = compare(live, merged)
    changed = change.added | change.modified
    conflicts = [
        Conflict(entry, path) for entry in others for path in sorted(entry.fields & changed)
    ]
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    unchanged_set = (previous.fields if previous else frozenset()) == applier.fields
    unchanged_version = previous is None or previous.api_version == api_version
    if change.same and unchanged_set and unchanged_version:
        return copy.deepcopy(dict(live)), entries

    # Forced: the applier takes what it changed (without conflicts, nobody else owned it).
    result = [
        dataclasses.replace(entry, fields=entry.fields - changed - change.removed)
        for entry in others
    ]
    result.append(applier)
    return merged, tuple(entry for entry in result if entry.fields)


def record_update(
    live: Mapping[str, Any],
    new: Mapping[str, Any],
    manager: str,
    entries: Iterable[ManagedFieldsEntry],
    *,
    api_version: str,
    now: str,
    subresource: str = "",
) -> tuple[ManagedFieldsEntry, ...]:
    """The entries after ``manager`` wrote ``new`` over ``live`` by anything but an apply.

    Updates never conflict: the writer takes every field it added or changed, and a field it
    removed leaves every set. If nothing changed, ``entries`` come back as they were.
    """
    entries = tuple(entries)
    change = compare(live, new)
    if change.same:
        return entries
    changed = change.added | change.modified
    key = (manager, UPDATE, api_version, subresource)
    own: FieldSet = frozenset()
    result: list[ManagedFieldsEntry] = []
    for entry in entries:
        if entry.key == key:
            own = entry.fields
        else:
            result.append(
                dataclasses.replace(entry, fields=entry.fields - changed - change.removed)
            )
    result.append(
        ManagedFieldsEntry(
            manager, UPDATE, api_version, (own - change.removed) | changed, now, subresource
        )
    )
    return tuple(entry for entry in result if entry.fields)


def default_field_manager(user_agent: str | None) -> str:
    """The manager of a write that names none: its User-Agent up to the first ``/``.

    As the real server derives it (``kubectl/v1.30 (linux/amd64)`` is ``kubectl``): printable
    characters only, at most 128; ``unknown`` when nothing is left.
    """
    prefix = (user_agent or "").split("/", 1)[0]
    # Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space.
    printable = "".join(
        char for char in prefix if char == " " or unicodedata.category(char)[0] not in "CZ"
    )
    return printable[:_MANAGER_MAX_LENGTH] or UNKNOWN_MANAGER


def query_flag(value: str | None) -> bool:
    """A boolean query parameter as the server reads it: absent, ``false`` and ``0`` are false."""
    return value is not None and value != "0" and value.lower() != "false"


# -- selectors ----------------------------------------------------------------------------

_LABEL_REQUIREMENT: Final = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)"
    r"|\s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*"
)
_FIELD_REQUIREMENT: Final = re.compile(
    r"\s*(?P<path>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*?)\s*"
)


class SelectorError(ValueError):
    """A label or field selector that cannot be parsed (the server answers 400)."""


def _split_requirements(text: str) -> list[str]:
    """Split a selector on the commas that are not inside a set's parentheses."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def _label_requirement(text: str) -> Predicate:
    match = _LABEL_REQUIREMENT.fullmatch(text)
    if match is None or (match["neg"] and (match["op"] or match["setop"])):
        raise SelectorError(f"unable to parse requirement: {text!r}")
    key, op, setop = match["key"], match["op"], match["setop"]
    value = match["value"] or ""
    values = {item.strip() for item in (match["values"] or "").split(",") if item.strip()}
    if match["neg"]:
        return lambda labels: key not in labels
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    if setop == "in":
        return lambda labels: labels.get(key) in values
    if setop == "notin":
        return lambda labels: labels.get(key) not in values
    return lambda labels: key in labels


def _field_requirement(text: str) -> Predicate:
    match = _FIELD_REQUIREMENT.fullmatch(text)
    if match is None:
        raise SelectorError(f"invalid field selector: {text!r}")
    path, negated, value = match["path"].split("."), match["op"] == "!=", match["value"]

    def check(obj: Mapping[str, Any]) -> bool:
        found: Any = obj
        for step in path:
            found = found.get(step) if isinstance(found, Mapping) else None
        text = (
            "" if found is None else str(found).lower() if isinstance(found, bool) else str(found)
        )
        return (text == value) != negated

    return check


def label_selector(text: str) -> Predicate:
    """A predicate on a label map: ``a=b``, ``a!=b``, ``a in (b,c)``, ``a notin (b)``, ``!a``."""
    checks = [_label_requirement(part) for part in _split_requirements(text)]
    return lambda labels: all(check(labels) for check in checks)


def field_selector(text: str) -> Predicate:
    """A predicate on an object: ``metadata.name=x``, ``status.phase!=Running``, comma-joined."""
    checks = [_field_requirement(part) for part in _split_requirements(text)]
    return lambda obj: all(check(obj) for check in checks)


def selector(labels: str = "", fields: str = "") -> Predicate:
    """The predicate of a request's ``labelSelector`` and ``fieldSelector`` (both must hold)."""
    label_check, field_check = label_selector(labels), field_selector(fields)

    def select(obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata")
        obj_labels = (meta.get("labels") if isinstance(meta, Mapping) else None) or {}
        return label_check(obj_labels) and field_check(obj)

    return select
