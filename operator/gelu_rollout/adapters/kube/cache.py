"""The operator's own objects read from memory: a client whose reads of them come from a watch.

Every tick reads the rollout's Deployments, Services and ConfigMaps (and its pods while an arm
is not ready). Against the API server that is three or four LISTs and two GETs per rollout per
tick, most of the operator's load on the server. :class:`CachedKubeClient` serves those reads
from a store that one watch per kind keeps current, as client-go's informers do: a LIST of
everything the operator manages (one label selector, matched by the server), then a WATCH from
that list's ``resourceVersion``, and a new LIST when the server says that version is too old
(410) or the stream breaks.

- Only objects with the selector's labels are kept. A read of anything else goes to the
  server, and so does every read before the first LIST or while the watch is broken: a store
  nobody keeps current must not pass for the world.
- What the operator writes goes into the store as the server answered it, so the next tick
  sees its own writes even before the watch brings them back.
- Otherwise the store trails the server by the watch's delay. The tick is made for that:
  applies are idempotent, deleting what is gone is a no-op, readiness is read again next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gelu_rollout.adapters.kube.client import KubeClient, KubeError, Object
from gelu_rollout.adapters.kube.kinds import Kind, kind_of
from gelu_rollout.adapters.kube.login import Login

log = logging.getLogger(__name__)

WATCH_SECONDS: Final = 300
"""How long the server keeps one watch open before the cache opens the next (where the last
left off)."""
RETRY_MAX_SECONDS: Final = 30.0
"""The longest wait between attempts to list and watch again after a failure."""


def parse_equalities(selector: str) -> dict[str, str] | None:
    """``a=b,c=d`` as ``{"a": "b", "c": "d"}``; None for a selector with any other operator
    (``!=``, ``in``, ``!key``), which the store does not evaluate."""
    wanted: dict[str, str] = {}
    for term in filter(None, (part.strip() for part in selector.split(","))):
        key, equals, value = term.partition("=")
        if not equals or "!" in key or value.startswith("=") or " " in key.strip():
            return None
        wanted[key.strip()] = value.strip()
    return wanted


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _matches(obj: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    labels = _labels(obj)
    return all(labels.get(key) == value for key, value in wanted.items())


def _address(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _newer(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether ``new`` is at least as recent as ``old``. Resource versions are opaque to
    clients; where both are numbers (as etcd's are) a smaller one is an older write, arrived
    late from the watch after the operator's own; otherwise the last seen wins."""
    if old is None:
        return True
    versions = [str((obj.get("metadata") or {}).get("resourceVersion") or "") for obj in (new, old)]
    if all(version.isdigit() for version in versions):
        return int(versions[0]) >= int(versions[1])
    return True


@dataclass
class _Store:
    """One kind's objects with the selector's labels, in one namespace or in all of them,
    also indexed by the pair (namespace, value of ``index_label``): one rollout's objects."""

    kind: Kind
    namespace: str | None
    index_label: str | None = None
    synced: bool = False
    task: asyncio.Task[None] | None = None
    objects: dict[tuple[str, str], Object] = field(default_factory=dict)
    _index: dict[tuple[str, str | None], dict[str, Object]] = field(default_factory=dict)

    def _bucket(self, obj: Mapping[str, Any]) -> tuple[str, str | None]:
        value = _labels(obj).get(self.index_label) if self.index_label else None
        return _address(obj)[0], None if value is None else str(value)

    def get(self, address: tuple[str, str]) -> Object | None:
        return self.objects.get(address)

    def put(self, obj: Object) -> None:
        address = _address(obj)
        if _newer(obj, self.objects.get(address)):
            self.pop(address)
            self.objects[address] = obj
            self._index.setdefault(self._bucket(obj), {})[address[1]] = obj

    def pop(self, address: tuple[str, str]) -> None:
        old = self.objects.pop(address, None)
        if old is not None:
            bucket = self._bucket(old)
            self._index.get(bucket, {}).pop(address[1], None)
            if not self._index.get(bucket):
                self._index.pop(bucket, None)

    def replace(self, items: list[Object]) -> None:
        self.objects.clear()
        self._index.clear()
        for obj in items:
            self.put(obj)

    def select(self, namespace: str | None, indexed: str | None) -> list[Object]:
        """The objects in ``namespace`` (all when None) whose ``index_label`` is ``indexed``
        (any when None)."""
        if namespace is not None and indexed is not None:
            return list(self._index.get((namespace, indexed), {}).values())
        return [
            obj
            for (where, _), obj in self.objects.items()
            if namespace is None or where == namespace
        ]


class CachedKubeClient(KubeClient):
    """:class:`KubeClient`, with ``get`` and ``list`` of ``kinds`` served from a watch of the
    objects that carry ``selector`` (equalities, ``key=value,...``). A list that names
    ``index_label`` (the rollout's label) is answered from that label's index, not by a scan.

    A watch per kind covers ``namespaces``, one each, or every namespace when none are given
    (what the operator's RBAC lets it watch). It starts with the first read of its kind.
    """

    def __init__(
        self,
        login: Login,
        *,
        kinds: Iterable[Kind],
        selector: str,
        index_label: str | None = None,
        namespaces: Sequence[str] = (),
        timeout_seconds: float = 10.0,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        super().__init__(login, timeout_seconds=timeout_seconds)
        wanted = parse_equalities(selector)
        if not wanted:
            raise ValueError(f"the cache's selector must be key=value terms, not {selector!r}")
        self.selector = selector
        self.kinds = frozenset(kinds)
        self.watch_seconds = watch_seconds
        self.index_label = index_label
        self._wanted = wanted
        self._per_namespace = bool(namespaces)
        self._stores: dict[tuple[Kind, str | None], _Store] = {}

    async def close(self) -> None:
        tasks = [store.task for store in self._stores.values() if store.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stores.clear()
        await super().close()

    def cached(
        self, kind: Kind, namespace: str | None, indexed: str | None = None
    ) -> list[Object] | None:
        """What the store holds of ``kind`` in ``namespace`` (with ``index_label`` at
        ``indexed``, where given); None where it holds nothing current (not synced yet, or
        its watch broken): such reads go to the server."""
        store = self._store(kind, namespace)
        if store is None or not store.synced:
            return None
        return store.select(namespace, indexed)

    # -- reads -------------------------------------------------------------------------------

    async def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> list[Object]:
        wanted = parse_equalities(label_selector or "")
        indexed = (wanted or {}).get(self.index_label) if self.index_label else None
        held = self.cached(kind, namespace, indexed)
        # Within the cache's own selector only: anything else the store may not hold.
        if held is None or wanted is None or not wanted.items() >= self._wanted.items():
            return await super().list(kind, namespace, label_selector)
        # Copies: a caller's change to what it read must not change the store.
        return [copy.deepcopy(obj) for obj in held if _matches(obj, wanted)]

    async def get(
        self, kind: Kind, namespace: str | None, name: str, *, subresource: str | None = None
    ) -> Object | None:
        store = self._store(kind, namespace) if subresource is None else None
        if store is not None and store.synced:
            found = store.get((namespace or "", name))
            if found is not None:
                return copy.deepcopy(found)
        # Not the operator's (a name it is about to take, say), or not held yet: the server.
        return await super().get(kind, namespace, name, subresource=subresource)

    # -- writes, remembered as the server answered them --------------------------------------

    async def create(self, obj: Mapping[str, Any]) -> Object:
        return self._remember(await super().create(obj))

    async def merge_patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> Object:
        written = await super().merge_patch(kind, namespace, name, patch, subresource=subresource)
        return self._remember(written, kind)

    async def apply(self, obj: Mapping[str, Any], *, force: bool = True) -> Object:
        return self._remember(await super().apply(obj, force=force))

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        deleted = await super().delete(kind, namespace, name)
        store = self._store(kind, namespace, start=False)
        if store is not None:
            store.pop((namespace or "", name))
        return deleted

    def _remember(self, written: Object, kind: Kind | None = None) -> Object:
        try:
            kind = kind or kind_of(written)
        except ValueError:
            return written
        store = self._store(kind, _address(written)[0] or None, start=False)
        if store is not None:
            if _matches(written, self._wanted):
                store.put(copy.deepcopy(written))
            else:  # its labels were taken off: no longer the operator's to hold
                store.pop(_address(written))
        return written

    # -- the watches -------------------------------------------------------------------------

    def _store(self, kind: Kind, namespace: str | None, *, start: bool = True) -> _Store | None:
        """The store for reads of ``kind`` in ``namespace``, its watch started on first use;
        None for a kind not cached, or a read across namespaces when each has its own."""
        if kind not in self.kinds or (namespace is None and self._per_namespace):
            return None
        scope = namespace if self._per_namespace else None
        store = self._stores.get((kind, scope))
        if store is None and start:
            store = self._stores[(kind, scope)] = _Store(kind, scope, self.index_label)
            store.task = asyncio.get_running_loop().create_task(
                self._keep(store), name=f"watch {kind.plural} in {scope or 'all namespaces'}"
            )
        return store

    async def _keep(self, store: _Store) -> None:
        """List, then watch from the list's version, for as long as the client lives."""
        failures = 0
        where = f"in {store.namespace}" if store.namespace else "in all namespaces"
        while True:
            try:
                version: str | None = await self._relist(store)
                if failures:
                    log.info("watching %s %s again", store.kind.plural, where)
                failures = 0
                while version is not None:
                    version = await self._follow(store, version)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure: reads go to the server meanwhile
                store.synced = False
                failures += 1
                delay = min(2.0 ** (failures - 1), RETRY_MAX_SECONDS)
                log.warning(
                    "the cache of %s %s failed (%s); reads go to the server, retrying in %gs",
                    store.kind.plural,
                    where,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _relist(self, store: _Store) -> str:
        items, version = await super().list_versioned(store.kind, store.namespace, self.selector)
        store.replace(items)
        store.synced = True
        return version

    async def _follow(self, store: _Store, version: str) -> str | None:
        """Apply one watch's events to the store; the version to go on from, or None when
        the server says to list again."""
        async for kind, changed in self.watch(
            store.kind,
            store.namespace,
            self.selector,
            version,
            timeout_seconds=self.watch_seconds,
        ):
            if kind == "ERROR":
                if changed.get("code") == 410:
                    return None  # too old to resume from: list again
                raise KubeError(changed.get("code"), f"the watch failed: {changed.get('message')}")
            version = str((changed.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            obj = {"apiVersion": store.kind.api_version, "kind": store.kind.kind, **changed}
            if kind != "DELETED" and _matches(obj, self._wanted):
                store.put(obj)
            elif _newer(obj, store.get(_address(obj))):
                # Not if the operator wrote it again since (deleted and created anew).
                store.pop(_address(obj))
        return version
