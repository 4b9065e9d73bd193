"""Names, labels and owner references of the objects a rollout owns.

Every name is derived from the rollout's name, so the same rollout always owns the same objects:

* Deployments ``<rollout>-baseline`` and ``<rollout>-candidate``;
* ConfigMaps ``<rollout>-<arm>-<revision>``, one per model-repository content, so that new
  content is a new ConfigMap name, hence a new pod template, hence a new ReplicaSet;
* Services ``<rollout>-baseline`` and ``<rollout>-candidate`` (one arm each: the paired probe and
  the HTTPRoute backends) and, in ReplicaRatio mode, ``<rollout>`` (both arms).

A rollout's name is a DNS-1123 subdomain of up to 253 characters, but a Service name must be a
DNS-1035 label (at most 63 characters, starting with a letter, no dots) and a label value at most
63 characters. A name that does not fit is shortened deterministically: invalid characters become
``-``, the name is cut, and a hash of the full name keeps it unique.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from gelu_rollout.spec.resource import API_VERSION, KIND

Arm = Literal["baseline", "candidate"]
ARMS: Final[tuple[Arm, ...]] = get_args(Arm)

# Label and annotation keys.
LABEL_APP_NAME: Final = "app.kubernetes.io/name"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_ROLLOUT: Final = "gelu.dev/rollout"
LABEL_ARM: Final = "gelu.dev/arm"
LABEL_REVISION: Final = "gelu.dev/revision"
ANNOTATION_SOURCE: Final = "gelu.dev/source"
"""Where an arm's repository came from: ``variant/<name>`` or ``configMap/<name>``."""
ANNOTATION_RENDERED: Final = "gelu.dev/rendered"
"""On every owned object: a digest of the object as the operator rendered and applied it."""
ANNOTATION_MODEL_VERSION: Final = "gelu.dev/model-version"
"""On an arm's pods: the model version they must serve (``spec.<arm>.version``)."""

APP_NAME: Final = "triton-inference-server"
MANAGED_BY: Final = "gelu-rollout"

_MAX_LABEL: Final = 63
_HASH_CHARS: Final = 8
_DNS_1035_RE: Final = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE_RE: Final = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def dns_label(name: str, max_length: int = _MAX_LABEL) -> str:
    """``name`` if it is a DNS-1035 label (a Service name), else a stable label made from it.

    The result is at most ``max_length`` characters of lowercase letters, digits and ``-``,
    starts with a letter and ends with a letter or digit; different inputs give different
    results (up to a 32-bit hash).
    """
    if len(name) <= max_length and _DNS_1035_RE.fullmatch(name):
        return name
    cleaned = re.sub(r"[^a-z0-9-]", "-", name.lower())
    if not cleaned[:1].isalpha():
        cleaned = "r-" + cleaned
    keep = max_length - _HASH_CHARS - 1
    return f"{cleaned[:keep].rstrip('-')}-{_short_hash(name)}"


def label_value(value: str) -> str:
    """``value`` if it is a valid label value, else a stable valid one made from it."""
    if len(value) <= _MAX_LABEL and _LABEL_VALUE_RE.fullmatch(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)
    keep = _MAX_LABEL - _HASH_CHARS - 1
    head = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned[:keep])
    return f"{head}-{_short_hash(value)}" if head else _short_hash(value)


def arm_name(rollout: str, arm: Arm) -> str:
    """Name of an arm's Deployment and Service: ``<rollout>-<arm>``.

    When that is not a valid Service name, the rollout part is shortened and the arm kept.
    """
    name = f"{rollout}-{arm}"
    if len(name) <= _MAX_LABEL and _DNS_1035_RE.fullmatch(name):
        return name
    return f"{dns_label(rollout, _MAX_LABEL - len(arm) - 1)}-{arm}"


def service_name(rollout: str, arm: Arm | None = None) -> str:
    """``<rollout>-<arm>`` for one arm, ``<rollout>`` for the Service in front of both."""
    return arm_name(rollout, arm) if arm is not None else dns_label(rollout)


def deployment_name(rollout: str, arm: Arm) -> str:
    """Name of an arm's Deployment: ``<rollout>-<arm>``."""
    return arm_name(rollout, arm)


def config_map_name(rollout: str, arm: Arm, revision: str) -> str:
    """Name of the ConfigMap holding one revision of an arm's model repository."""
    return f"{arm_name(rollout, arm)}-{revision}"


def selector_labels(rollout: str, arm: Arm | None = None) -> dict[str, str]:
    """Labels that select a rollout's pods (one arm's, or both arms' when ``arm`` is None).

    A Deployment's selector is immutable: it never includes the revision.
    """
    labels = {LABEL_APP_NAME: APP_NAME, LABEL_ROLLOUT: label_value(rollout)}
    if arm is not None:
        labels[LABEL_ARM] = arm
    return labels


def object_labels(
    rollout: str, arm: Arm | None = None, revision: str | None = None
) -> dict[str, str]:
    """Labels of every object a rollout owns (and of its pods, with ``revision``)."""
    labels = {
        LABEL_APP_NAME: APP_NAME,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_ROLLOUT: label_value(rollout),
    }
    if arm is not None:
        labels[LABEL_ARM] = arm
    if revision is not None:
        labels[LABEL_REVISION] = revision
    return labels


def owned_selector(rollout: str) -> str:
    """Label selector (``key=value,...``) listing every object the rollout owns."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ROLLOUT}={label_value(rollout)}"


@dataclass(frozen=True)
class OwnerRef:
    """The rollout that owns the objects: where they live and what they point back to."""

    name: str
    namespace: str
    uid: str
    api_version: str = API_VERSION
    kind: str = KIND

    @staticmethod
    def from_body(body: Mapping[str, Any]) -> OwnerRef:
        """From a GeluModelRollout object (as Kopf passes it); raises KeyError if incomplete."""
        metadata = body["metadata"]
        return OwnerRef(
            name=str(metadata["name"]),
            namespace=str(metadata["namespace"]),
            uid=str(metadata["uid"]),
            api_version=str(body.get("apiVersion", API_VERSION)),
            kind=str(body.get("kind", KIND)),
        )

    def reference(self) -> dict[str, Any]:
        """The ``metadata.ownerReferences`` entry: the rollout controls the object."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(
        self,
        name: str,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``metadata`` of an owned object."""
        meta: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": dict(labels),
        }
        if annotations:
            meta["annotations"] = dict(annotations)
        meta["ownerReferences"] = [self.reference()]
        return meta
