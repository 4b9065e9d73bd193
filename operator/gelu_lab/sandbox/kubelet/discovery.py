"""Every running pod as a scrape target of Prometheus's file-based discovery, labelled
``namespace``, ``rollout``, ``arm`` and ``pod`` as the operator's queries expect."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from gelu_lab.sandbox.kubelet.lifecycle import PodInfo
from gelu_lab.sandbox.prometheus import PrometheusServer, ScrapeTarget
from gelu_rollout.resources.names import LABEL_ARM, LABEL_ROLLOUT

_POD_LABELS = (("rollout", LABEL_ROLLOUT), ("arm", LABEL_ARM))  # target label, pod label


def scrape_targets(pods: Iterable[PodInfo]) -> list[ScrapeTarget]:
    """The targets of the running ones of ``pods``, by namespace and name."""
    targets = []
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        if pod.phase != "Running" or pod.metrics_address is None:
            continue
        labels = {"namespace": pod.namespace, "pod": pod.name}
        for target_label, pod_label in _POD_LABELS:
            if pod.labels.get(pod_label):
                labels[target_label] = pod.labels[pod_label]
        targets.append(ScrapeTarget(pod.metrics_address, labels))
    return targets


class TargetFile:
    """The discovery file of a Prometheus server (if any), rewritten only when it changes."""

    def __init__(self, prometheus: PrometheusServer | None) -> None:
        self.prometheus = prometheus
        self._written: list[ScrapeTarget] | None = None

    def publish(self, targets: list[ScrapeTarget]) -> None:
        if self.prometheus is None or not self.prometheus.running:
            return
        if targets != self._written:
            self.prometheus.set_targets(targets)
            self._written = targets

    def clear(self) -> None:
        """No targets any more; for shutdown, so a failure to write is no error."""
        if self.prometheus is not None and self.prometheus.running and self._written:
            with contextlib.suppress(OSError):
                self.prometheus.set_targets([])
            self._written = []
