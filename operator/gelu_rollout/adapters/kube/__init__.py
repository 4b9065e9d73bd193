"""The Kubernetes adapter: one asynchronous client, one table of kinds, one login."""

from gelu_rollout.adapters.kube.client import FIELD_MANAGER, KubeClient, KubeError, Object
from gelu_rollout.adapters.kube.kinds import KINDS, OWNED_KINDS, Kind, kind_of
from gelu_rollout.adapters.kube.login import Login, connection_info, login_for

__all__ = [
    "FIELD_MANAGER",
    "KINDS",
    "OWNED_KINDS",
    "Kind",
    "KubeClient",
    "KubeError",
    "Login",
    "Object",
    "connection_info",
    "kind_of",
    "login_for",
]
