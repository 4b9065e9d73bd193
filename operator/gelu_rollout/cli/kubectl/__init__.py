"""``kubectl gelu``, installed as the executable ``kubectl-gelu`` (the app is in :mod:`.app`)."""

from gelu_rollout.cli.kubectl.app import app
from gelu_rollout.cli.kubectl.connection import CliError, Cluster, Connection, connect
from gelu_rollout.cli.kubectl.requests import refusal, request_id
from gelu_rollout.cli.kubectl.watch import watch_rollout

__all__ = [
    "CliError",
    "Cluster",
    "Connection",
    "app",
    "connect",
    "refusal",
    "request_id",
    "watch_rollout",
]
