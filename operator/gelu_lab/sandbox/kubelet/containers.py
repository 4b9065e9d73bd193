"""What a pod's Triton container runs with, as the kubelet would resolve it (pure).

:func:`server_setup` reads a pod template and returns where the server's model repository is
(the ConfigMap files the runner lays out, a URL Triton reads itself such as ``s3://...``, or
the folder that stands for a PersistentVolumeClaim), the container's own arguments the sandbox
passes on, and its environment with ``valueFrom`` resolved from Secrets and ConfigMaps.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

from gelu_lab.sandbox.kubelet.fields import mapping, sequence
from gelu_lab.sandbox.kubelet.volumes import PodSpecError, main_container, model_root

OWN_FLAGS: Final = ("--model-repository=", "--metrics-config=")
"""Flags the sandbox sets itself (where the repository is, summaries on); other arguments of
the container are passed on."""
REMOTE_SCHEMES: Final = ("s3://", "gs://", "as://")

Lookup = Callable[[str, str], Mapping[str, Any] | None]
"""(kind, name) -> the object in the pod's namespace, or None when it does not exist."""


@dataclass(frozen=True)
class ServerSetup:
    """``repository``: None to lay out the pod's ConfigMap files, else a URL or a folder."""

    repository: str | Path | None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def _claim_folder(
    template: Mapping[str, Any], root: PurePosixPath, volumes_root: Path, namespace: str
) -> Path | None:
    """The folder standing for the PersistentVolumeClaim mounted at or above the model
    repository (``volumes_root/<namespace>/<claim>``), or None."""
    spec = mapping(template.get("spec"))
    volumes = {v.get("name"): v for v in map(mapping, sequence(spec.get("volumes"))) if v}
    for mount in map(mapping, sequence(main_container(template).get("volumeMounts"))):
        at = PurePosixPath(str(mount.get("mountPath", "")))
        claim = mapping(mapping(volumes.get(mount.get("name"))).get("persistentVolumeClaim"))
        if not claim or (at != root and at not in root.parents):
            continue
        folder = volumes_root / namespace / str(claim.get("claimName", ""))
        if not folder.is_dir():
            raise PodSpecError(f'persistentvolumeclaim "{claim.get("claimName")}" not found')
        return folder.joinpath(*root.relative_to(at).parts)
    return None


def _key_of(kind: str, ref: Mapping[str, Any], lookup: Lookup) -> str | None:
    name, key = str(ref.get("name", "")), str(ref.get("key", ""))
    found = lookup(kind, name)
    if found is None:
        if ref.get("optional"):
            return None
        raise PodSpecError(f'{kind.lower()} "{name}" not found')
    if kind == "Secret":
        string_data = mapping(found.get("stringData"))
        if key in string_data:
            return str(string_data[key])
        data = mapping(found.get("data"))
        if key in data:
            try:
                return base64.b64decode(str(data[key]), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as error:
                raise PodSpecError(f'secret "{name}" key "{key}": {error}') from error
    else:
        data = mapping(found.get("data"))
        if key in data:
            return str(data[key])
    if ref.get("optional"):
        return None
    raise PodSpecError(f"couldn't find key {key} in {kind} {name}")


def env_references(template: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The (kind, name) of every Secret and ConfigMap the container's env reads."""
    refs = set()
    for var in map(mapping, sequence(main_container(template).get("env"))):
        source = mapping(var.get("valueFrom"))
        for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if key in source:
                refs.add((kind, str(mapping(source[key]).get("name", ""))))
    return refs


def container_env(template: Mapping[str, Any], lookup: Lookup) -> dict[str, str]:
    """The container's environment: plain values, and ``secretKeyRef`` / ``configMapKeyRef``
    resolved (a missing object or key fails the pod, unless ``optional``); other sources
    (``fieldRef``, ``resourceFieldRef``) are left out."""
    env: dict[str, str] = {}
    for var in map(mapping, sequence(main_container(template).get("env"))):
        name = str(var.get("name", ""))
        if "value" in var:
            env[name] = str(var["value"])
            continue
        source = mapping(var.get("valueFrom"))
        value = None
        if "secretKeyRef" in source:
            value = _key_of("Secret", mapping(source["secretKeyRef"]), lookup)
        elif "configMapKeyRef" in source:
            value = _key_of("ConfigMap", mapping(source["configMapKeyRef"]), lookup)
        if value is not None:
            env[name] = value
    return env


def server_setup(
    template: Mapping[str, Any], lookup: Lookup, *, volumes_root: Path, namespace: str
) -> ServerSetup:
    """Where the pod's server finds its models, its passed-on arguments and environment."""
    container = main_container(template)
    args = tuple(
        str(a)
        for a in sequence(container.get("args"))
        if isinstance(a, str) and not a.startswith(OWN_FLAGS)
    )
    env = container_env(template, lookup)
    flag = next(
        (
            str(a).split("=", 1)[1]
            for a in sequence(container.get("args"))
            if isinstance(a, str) and a.startswith("--model-repository=")
        ),
        None,
    )
    if flag is not None and flag.startswith(REMOTE_SCHEMES):
        return ServerSetup(flag, args, env)
    claim = _claim_folder(template, model_root(container), volumes_root, namespace)
    return ServerSetup(claim, args, env)
