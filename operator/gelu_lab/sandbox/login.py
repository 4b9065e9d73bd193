"""How the lab reaches its API emulator with the operator's own client.

The emulator asks for no credentials, so a login for it names the server and nothing else;
every client in the lab is a :class:`~gelu_rollout.adapters.kube.KubeClient` given one.
"""

from __future__ import annotations

import kopf

from gelu_rollout.adapters.kube import Login


def emulator_login(url: str) -> Login:
    """The login for the API emulator at ``url``."""
    return lambda: kopf.ConnectionInfo(server=url)
