"""The watch cache of the operator's own objects, against the sandbox's API emulator over HTTP:
reads from memory once synced, the server's changes and the operator's own writes seen, a
version too old to resume from listed again, a broken watch sending reads to the server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from gelu_lab.sandbox.emulator import SandboxEmulator
from gelu_lab.sandbox.emulator_server import EmulatorServer, serve_emulator
from gelu_lab.sandbox.login import emulator_login
from gelu_rollout.adapters.kube import KubeClient, KubeError
from gelu_rollout.adapters.kube.cache import CachedKubeClient, parse_equalities
from gelu_rollout.adapters.kube.kinds import CONFIG_MAP, SERVICE

OURS = {"app.kubernetes.io/managed-by": "gelu-rollout"}
SELECTOR = "app.kubernetes.io/managed-by=gelu-rollout"


def config_map(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
        "data": data,
    }


class Counted(CachedKubeClient):
    """The cache, counting what it asks the server (its own watches' lists included)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        self.sent.append(f"{method} {path}")
        return await super().request(method, path, **kwargs)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    # A short event log: a watch that resumes from an old version is told 410.
    async with serve_emulator(emulator=SandboxEmulator(event_log_limit=4)) as served:
        yield served


@pytest_asyncio.fixture
async def writer(server: EmulatorServer) -> AsyncIterator[KubeClient]:
    async with KubeClient(emulator_login(server.url)) as client:
        yield client


def cache_for(
    server: EmulatorServer, *, namespaces: tuple[str, ...] = (), **kwargs: Any
) -> Counted:
    return Counted(
        emulator_login(server.url),
        kinds=(CONFIG_MAP,),
        selector=SELECTOR,
        namespaces=namespaces,
        **kwargs,
    )


async def until(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.02)


def names(objects: list[dict[str, Any]]) -> set[str]:
    return {obj["metadata"]["name"] for obj in objects}


@pytest.mark.parametrize("namespaces", [(), ("default",)], ids=["cluster-wide", "namespaced"])
@pytest.mark.asyncio
async def test_reads_come_from_the_watch_once_synced(
    server: EmulatorServer, writer: KubeClient, namespaces: tuple[str, ...]
) -> None:
    await writer.create(config_map("ours-1", OURS, a="1"))
    await writer.create(config_map("theirs", {"team": "x"}))
    async with cache_for(server, namespaces=namespaces) as cache:
        first = await cache.list(CONFIG_MAP, "default", SELECTOR)  # the server, and a watch
        assert names(first) == {"ours-1"}
        await until(lambda: cache.cached(CONFIG_MAP, "default") is not None, "synced")
        cache.sent.clear()

        await writer.create(config_map("ours-2", OURS, a="2"))
        await writer.merge_patch(CONFIG_MAP, "default", "ours-1", {"data": {"a": "changed"}})

        async def listed() -> list[dict[str, Any]]:
            return await cache.list(CONFIG_MAP, "default", SELECTOR)

        seen: list[dict[str, Any]] = []

        async def poll() -> None:
            while True:
                seen[:] = await listed()
                if names(seen) == {"ours-1", "ours-2"} and any(
                    obj["data"].get("a") == "changed" for obj in seen
                ):
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(poll(), 5)
        assert all(obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1" for obj in seen)
        # A narrower selector is answered from the store too; an unlabelled object is not held.
        narrower = await cache.list(CONFIG_MAP, "default", f"{SELECTOR},missing=label")
        assert narrower == []
        assert (await cache.get(CONFIG_MAP, "default", "ours-2") or {})["data"] == {"a": "2"}
        assert cache.sent == [], cache.sent
        assert (await cache.get(CONFIG_MAP, "default", "theirs")) is not None
        assert cache.sent == ["GET /api/v1/namespaces/default/configmaps/theirs"]
        # Another selector, or a kind not cached, goes to the server.
        cache.sent.clear()
        assert names(await cache.list(CONFIG_MAP, "default", "team=x")) == {"theirs"}
        await cache.list(SERVICE, "default", SELECTOR)
        assert len(cache.sent) == 2

        await writer.delete(CONFIG_MAP, "default", "ours-2")
        await until(
            lambda: names(cache.cached(CONFIG_MAP, "default") or []) == {"ours-1"}, "deletion"
        )


@pytest.mark.asyncio
async def test_its_own_writes_are_read_back_before_the_watch_brings_them(
    server: EmulatorServer,
) -> None:
    async with cache_for(server) as cache:
        await cache.list(CONFIG_MAP, "default", SELECTOR)
        await until(lambda: cache.cached(CONFIG_MAP, "default") is not None, "synced")
        written = await cache.apply(config_map("applied", OURS, a="1"))
        held = cache.cached(CONFIG_MAP, "default") or []
        assert [obj["metadata"]["resourceVersion"] for obj in held] == [
            written["metadata"]["resourceVersion"]
        ]
        # Its label taken off by the operator's own patch: no longer held.
        await cache.merge_patch(CONFIG_MAP, "default", "applied", {"metadata": {"labels": None}})
        assert cache.cached(CONFIG_MAP, "default") == []
        await cache.apply(config_map("gone", OURS))
        assert await cache.delete(CONFIG_MAP, "default", "gone")
        assert "gone" not in names(cache.cached(CONFIG_MAP, "default") or [])
        assert not await cache.delete(CONFIG_MAP, "default", "gone")


class GatedWatch:
    """Stands in for the client's watch: each call waits for ``open`` (``entered`` says one
    is waiting), then fails if ``failure`` is set, else watches the server."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = asyncio.Event()
        self.entered = asyncio.Event()
        self.failure: KubeError | None = None
        self.versions: list[str | None] = []
        real = CachedKubeClient.watch
        gate = self

        def watch(client: CachedKubeClient, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async def stream() -> AsyncIterator[Any]:
                gate.versions.append(args[3] if len(args) > 3 else None)
                gate.entered.set()
                await gate.open.wait()
                if gate.failure is not None:
                    raise gate.failure
                async for event in real(client, *args, **kwargs):
                    yield event

            return stream()

        monkeypatch.setattr(CachedKubeClient, "watch", watch)


def lists_sent(cache: Counted) -> int:
    return cache.sent.count("GET /api/v1/configmaps")


@pytest.mark.asyncio
async def test_a_version_too_old_to_resume_from_is_listed_again(
    server: EmulatorServer, writer: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cache_for(server, watch_seconds=1) as cache:
        await cache.list(CONFIG_MAP, "default", SELECTOR)
        await until(lambda: cache.cached(CONFIG_MAP, "default") is not None, "synced")
        # The next watch waits (its one-second predecessor ends) while the writes push the
        # version it resumes from out of the server's log of four.
        gate = GatedWatch(monkeypatch)
        await asyncio.wait_for(gate.entered.wait(), 5)
        before = lists_sent(cache)
        for index in range(12):
            await writer.create(config_map(f"burst-{index}", OURS))
        assert cache.cached(CONFIG_MAP, "default") == []  # nothing seen yet
        gate.open.set()
        await until(lambda: len(cache.cached(CONFIG_MAP, "default") or []) == 12, "the burst")
        assert lists_sent(cache) == before + 1  # told 410, it listed again


@pytest.mark.asyncio
async def test_a_broken_watch_sends_reads_to_the_server_until_it_is_back(
    server: EmulatorServer, writer: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await writer.create(config_map("ours", OURS))
    async with cache_for(server, watch_seconds=1) as cache:
        await cache.list(CONFIG_MAP, "default", SELECTOR)
        await until(lambda: cache.cached(CONFIG_MAP, "default") is not None, "synced")
        gate = GatedWatch(monkeypatch)
        gate.failure = KubeError(None, "the connection to the server failed")
        gate.open.set()
        await until(lambda: cache.cached(CONFIG_MAP, "default") is None, "unsynced")
        # Checked at once, before any await: this read finds the store not current.
        assert cache.cached(CONFIG_MAP, "default") is None
        cache.sent.clear()
        assert names(await cache.list(CONFIG_MAP, "default", SELECTOR)) == {"ours"}
        assert cache.sent[0] == "GET /api/v1/namespaces/default/configmaps"
        gate.failure = None
        await until(lambda: cache.cached(CONFIG_MAP, "default") is not None, "synced again", 5)
        await writer.create(config_map("later", OURS))
        await until(
            lambda: names(cache.cached(CONFIG_MAP, "default") or []) == {"ours", "later"},
            "watched again",
        )


@pytest.mark.asyncio
async def test_a_list_of_one_rollouts_objects_comes_from_its_index(
    server: EmulatorServer, writer: KubeClient
) -> None:
    for rollout in ("a", "b"):
        for index in range(3):
            labels = {**OURS, "gelu.dev/rollout": rollout}
            await writer.create(config_map(f"{rollout}-{index}", labels))
    async with cache_for(server, index_label="gelu.dev/rollout") as cache:
        await cache.list(CONFIG_MAP, "default", SELECTOR)
        await until(lambda: cache.cached(CONFIG_MAP, "default") is not None, "synced")
        cache.sent.clear()
        of_a = await cache.list(CONFIG_MAP, "default", f"{SELECTOR},gelu.dev/rollout=a")
        assert names(of_a) == {"a-0", "a-1", "a-2"}
        assert names(cache.cached(CONFIG_MAP, "default", "b") or []) == {"b-0", "b-1", "b-2"}
        # Relabelled to the other rollout by the operator's own patch: moved in the index.
        await cache.merge_patch(
            CONFIG_MAP, "default", "a-0", {"metadata": {"labels": {"gelu.dev/rollout": "b"}}}
        )
        assert names(cache.cached(CONFIG_MAP, "default", "a") or []) == {"a-1", "a-2"}
        assert "a-0" in names(cache.cached(CONFIG_MAP, "default", "b") or [])
        await cache.delete(CONFIG_MAP, "default", "a-1")
        assert names(cache.cached(CONFIG_MAP, "default", "a") or []) == {"a-2"}
        assert len(cache.sent) == 2  # the patch and the delete


def test_only_equalities_are_evaluated_in_memory() -> None:
    assert parse_equalities("a=b, c=d") == {"a": "b", "c": "d"}
    assert parse_equalities("a==b") is None
    assert parse_equalities("a!=b") is None
    assert parse_equalities("a in (b)") is None
    assert parse_equalities("!a") is None
    assert parse_equalities("") == {}
    with pytest.raises(ValueError, match="key=value"):
        CachedKubeClient(lambda: None, kinds=(), selector="")  # type: ignore[arg-type,return-value]
