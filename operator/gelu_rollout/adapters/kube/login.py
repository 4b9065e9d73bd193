"""Credentials for the Kubernetes API, shared by Kopf and the operator's own client.

One function both log in with: Kopf calls it as its login handler (at start and whenever its
credentials stop working), and :class:`~gelu_rollout.adapters.kube.client.KubeClient` calls it
when the API answers 401. It reads the configuration afresh with the official client's loaders
(the in-cluster service account, or a kubeconfig with its exec plugins, auth providers and
token files), and asks that configuration for its key, which runs the client's refresh hook:
a rotated service-account token or an expired exec token is renewed, never cached for good.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import kopf
from kubernetes import client as k8s
from kubernetes import config

Login = Callable[[], kopf.ConnectionInfo]


def connection_info(
    kubeconfig: str | None = None, context: str | None = None
) -> kopf.ConnectionInfo:
    """How to reach and authenticate to the cluster: the in-cluster service account when no
    kubeconfig or context is named and the process runs in a pod, else the kubeconfig
    (``kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``) at ``context``."""
    configuration = k8s.Configuration()
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    # The key is asked for, not read: asking runs the refresh hook of tokens that expire.
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").partition(" ")
    if not token:  # a bare token, no scheme
        scheme, token = "", scheme
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def login_for(kubeconfig: str | None = None, context: str | None = None) -> Login:
    """A login function for the cluster a kubeconfig and context name."""
    return partial(connection_info, kubeconfig, context)
