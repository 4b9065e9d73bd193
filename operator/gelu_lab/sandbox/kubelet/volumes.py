"""A pod's model repository, laid out from the ConfigMap volumes its Triton container mounts.

The pure part reads a pod template and ConfigMap objects and returns the files (path under
the repository root -> content), as the kubelet would project them; :func:`write_files` puts
them on disk.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from gelu_lab.sandbox.kubelet.fields import mapping, sequence
from gelu_rollout.resources.workloads import CONTAINER_NAME, MODEL_ROOT


class PodSpecError(ValueError):
    """A pod template the sandbox cannot run (a missing ConfigMap or key, an unsafe path)."""


def main_container(template: Mapping[str, Any]) -> Mapping[str, Any]:
    """The Triton container of a pod template: the one named ``tritonserver``, else the first."""
    containers = [
        c for c in map(mapping, sequence(mapping(template.get("spec")).get("containers"))) if c
    ]
    if not containers:
        raise PodSpecError("the pod template has no containers")
    named = [c for c in containers if c.get("name") == CONTAINER_NAME]
    return dict(named[0] if named else containers[0])


def model_root(container: Mapping[str, Any]) -> PurePosixPath:
    """The container's ``--model-repository`` (``/models`` unless its args say otherwise)."""
    for arg in [*sequence(container.get("command")), *sequence(container.get("args"))]:
        if isinstance(arg, str) and arg.startswith("--model-repository="):
            return PurePosixPath(arg.split("=", 1)[1])
    return PurePosixPath(MODEL_ROOT)


def _safe_relative(path: str, what: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if not path or relative.is_absolute() or ".." in relative.parts:
        raise PodSpecError(f"{what} must be a relative path without '..', got {path!r}")
    return relative


def _model_mounts(
    template: Mapping[str, Any],
) -> Iterator[tuple[PurePosixPath, Mapping[str, Any], Mapping[str, Any]]]:
    """``(place under the repository root, mount, volume)`` of each ConfigMap volume the Triton
    container mounts at or under its ``--model-repository`` (other volumes hold no models)."""
    container = main_container(template)
    root = model_root(container)
    volumes = {
        v.get("name"): v
        for v in map(mapping, sequence(mapping(template.get("spec")).get("volumes")))
        if v
    }
    for mount in map(mapping, sequence(container.get("volumeMounts"))):
        mount_path = PurePosixPath(str(mount.get("mountPath", "")))
        if mount_path != root and root not in mount_path.parents:
            continue
        volume = mapping(volumes.get(mount.get("name")))
        if "configMap" in volume:
            yield mount_path.relative_to(root), mount, volume


def config_map_names(template: Mapping[str, Any]) -> list[str]:
    """The ConfigMaps the Triton container mounts under its model repository, sorted."""
    names = {
        str(mapping(volume["configMap"]).get("name") or "")
        for _, _, volume in _model_mounts(template)
    }
    return sorted(names - {""})


def _config_map_files(
    volume: Mapping[str, Any], config_map: Mapping[str, Any] | None
) -> dict[PurePosixPath, bytes]:
    """The files a ConfigMap volume shows (path inside the volume -> content)."""
    source = mapping(volume.get("configMap"))
    name, optional = source.get("name"), bool(source.get("optional"))
    if config_map is None:
        if optional:
            return {}
        raise PodSpecError(f'configmap "{name}" not found')
    contents: dict[str, bytes] = {
        str(key): str(value).encode() for key, value in mapping(config_map.get("data")).items()
    }
    for key, value in mapping(config_map.get("binaryData")).items():
        contents[str(key)] = base64.b64decode(str(value))
    items = sequence(source.get("items"))
    if not items:
        return {_safe_relative(key, "a ConfigMap key"): text for key, text in contents.items()}
    files = {}
    for item in map(mapping, items):
        key, path = str(item.get("key", "")), str(item.get("path", ""))
        if key not in contents:
            if optional:
                continue
            raise PodSpecError(f'configmap "{name}" has no key "{key}"')
        files[_safe_relative(path, "a ConfigMap item path")] = contents[key]
    return files


def repository_files(
    template: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, Any] | None]
) -> dict[PurePosixPath, bytes]:
    """The model repository a pod template serves: path under the repository root -> content.

    Only the ConfigMap volumes the Triton container mounts at or under its
    ``--model-repository`` count; ``items`` put keys at their paths, a ``subPath`` mount takes
    one path of its volume. ``config_maps`` holds the ConfigMap objects by name (None: not
    found).
    """
    files: dict[PurePosixPath, bytes] = {}
    for at, mount, volume in _model_mounts(template):
        name = str(mapping(volume["configMap"]).get("name", ""))
        shown = _config_map_files(volume, config_maps.get(name))
        sub_path = str(mount.get("subPath") or "")
        if sub_path:
            wanted = _safe_relative(sub_path, "a subPath")
            if wanted in shown:
                files[at] = shown[wanted]
            continue
        for path, content in shown.items():
            files[at / path] = content
    return files


def write_files(root: Path, files: Mapping[PurePosixPath, bytes]) -> Path:
    """Write ``files`` under ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = root.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root
