"""The sandbox's kubelet: Deployments in the API emulator become ``tritonserver`` processes.

:class:`PodRunner` polls the Kubernetes API (every ``poll_interval_s``, and at once when a pod
it started becomes ready) for the Deployments the operator manages, and keeps, for each, as
many pods of its *current* pod template as ``spec.replicas`` asks for. A pod is a real Triton
server on free loopback ports, serving a model repository laid out from the ConfigMap volumes
the template mounts under ``--model-repository``.

It does what the deployment controller, the kubelet and kube-proxy do, in the small, one job
per module:

- :mod:`.deployments`: rollouts under the Deployment's ``RollingUpdate`` strategy (at most
  ``maxSurge`` extra pods; old pods stopped only while ``replicas - maxUnavailable`` stay
  ready; the operator asks for ``maxUnavailable: 0``) or ``Recreate``, and the status
  subresource (``observedGeneration``, the replica counts, ``Available`` and ``Progressing``);
- :mod:`.volumes`: the model repository, from the ConfigMaps (``items`` mapping keys to paths,
  as the kubelet does);
- :mod:`.lifecycle`: servers started and stopped in a thread pool (so that many pods start at
  once and the event loop, which may serve the emulator itself, never waits), the readiness
  probe (unready after ``failureThreshold`` failures in a row; a server whose process died is
  replaced), and the backoff of a Deployment whose pods fail to start;
- :mod:`.objects`: one Pod object per pod, named ``<deployment>-<template hash>-<n>``, owned
  by the Deployment, annotated ``sandbox.gelu.dev/http``, ``sandbox.gelu.dev/metrics``
  (``127.0.0.1:PORT``) and ``sandbox.gelu.dev/pid``. Deleting a Pod object stops its server;
  the Deployment gets a new pod, as a ReplicaSet would;
- :mod:`.services`: a Service resolved to the HTTP addresses of the ready pods its selector
  matches, as cluster DNS and kube-proxy would (the operator's probe and the traffic
  generator go through it);
- :mod:`.discovery`: every running pod a file-SD scrape target of Prometheus;
- :mod:`.runner`: the loop that reads the API and applies all of the above.

:meth:`PodRunner.stop` stops every server, whatever state it is in; the process registry of
:mod:`gelu_lab.sandbox.processes` is the last safety net.

Simplifications: the container's ``args`` other than ``--model-repository`` are not passed on
(the launcher sets the ports, ``--metrics-config=summary_latencies=true`` and loads every model
at startup, like ``--model-control-mode=none``); probes run every tick instead of every
``periodSeconds``; ``minReadySeconds`` and ``paused`` are ignored; a crashed server is replaced
by a new pod rather than restarted in place.
"""

from gelu_lab.sandbox.kubelet.lifecycle import PodInfo
from gelu_lab.sandbox.kubelet.runner import PodRunner

__all__ = ["PodInfo", "PodRunner"]
