"""Where ``kubectl gelu`` talks to: kubectl's options, the cluster, and how failures read."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kubernetes import config

from gelu_rollout.adapters.kube import KubeClient, KubeError, Object, login_for
from gelu_rollout.adapters.kube.kinds import ROLLOUT
from gelu_rollout.cli.output import fail
from gelu_rollout.spec import PLURAL

SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class CliError(Exception):
    """A failure to report as ``error: <message>`` with exit status 1."""


@dataclass(frozen=True)
class Connection:
    """Where the global options point: a cluster and a namespace."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None

    def merged(self, local: Connection) -> Connection:
        """Options given after the command win over those given before it."""
        return Connection(
            local.kubeconfig or self.kubeconfig,
            local.context or self.context,
            local.namespace or self.namespace,
        )


@dataclass(frozen=True)
class Cluster:
    client: KubeClient
    namespace: str
    """The namespace to use: the option's, else the context's, else ``default``."""


def _kubeconfig_files(kubeconfig: str | None) -> str | None:
    """The kubeconfig path(s) kubectl would read, or None to try the in-cluster account."""
    if kubeconfig:
        if not Path(kubeconfig).expanduser().is_file():
            raise CliError(f"cannot read the kubeconfig {kubeconfig}: no such file")
        return kubeconfig
    from_env = os.environ.get("KUBECONFIG", "")
    if from_env.strip(os.pathsep):
        return from_env
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.is_file() else None


def _context_namespace(files: str, context: str | None) -> str | None:
    contexts, active = config.list_kube_config_contexts(config_file=files)  # type: ignore[no-untyped-call]
    if context is not None:
        chosen = next((c for c in contexts or [] if c.get("name") == context), None)
        if chosen is None:
            raise CliError(f'context "{context}" does not exist')
    else:
        chosen = active
    details = (chosen or {}).get("context") or {}
    namespace = details.get("namespace")
    return str(namespace) if namespace else None


def connect(connection: Connection) -> Cluster:
    """A client for the cluster the options name, and the namespace to use there. The client
    logs in at its first request; close it when done."""
    files = _kubeconfig_files(connection.kubeconfig)
    if files is None:
        namespace = connection.namespace
        if namespace is None and SERVICE_ACCOUNT_NAMESPACE.is_file():
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        if connection.context is not None:
            raise CliError(f'context "{connection.context}" does not exist: no kubeconfig found')
        return Cluster(KubeClient(login_for()), namespace or "default")
    namespace = connection.namespace or _context_namespace(files, connection.context)
    return Cluster(KubeClient(login_for(files, connection.context)), namespace or "default")


EXPECTED_ERRORS: Final = (KubeError, config.ConfigException, OSError)
"""What talking to a cluster can fail with, short of a bug."""


def describe(error: BaseException) -> str:
    """A one-line account of a failure to talk to the API server."""
    if isinstance(error, KubeError | CliError):
        return str(error)
    return f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def kubectl_errors() -> Iterator[None]:
    """Turn every expected failure into ``error: ...`` and exit 1; never a traceback."""
    try:
        yield
    except CliError as error:
        raise fail(str(error)) from None
    except config.ConfigException as error:
        raise fail(f"invalid kubeconfig: {error}") from None
    except EXPECTED_ERRORS as error:
        raise fail(describe(error)) from None


def not_found(name: str) -> CliError:
    return CliError(f'{PLURAL} "{name}" not found')


async def get_rollout(cluster: Cluster, name: str) -> Object:
    rollout = await cluster.client.get(ROLLOUT, cluster.namespace, name)
    if rollout is None:
        raise not_found(name)
    return rollout
