"""Kubernetes label selectors, and Cilium's view of an endpoint's labels.

Shared by microsegmentation (NetworkPolicy, CiliumNetworkPolicy) and the services app's waypoint
(CiliumNetworkPolicy L7 rules), so both read a selector the same way.

>>> sel = Selector.parse({"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a"]}]})
>>> sel.matches({"pod": "a"}), sel.matches({"pod": "b"}), Selector().matches({})
(True, False, True)

Source: Kubernetes API (meta/v1 LabelSelector); Cilium's "Endpoints based" policy docs
(namespace and namespace labels as labels, source prefixes such as `k8s:`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.endpoints import Labels

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # every namespace has its name as a label
CILIUM_NAMESPACE_KEY = "io.kubernetes.pod.namespace"
CILIUM_NS_LABEL_PREFIX = "io.cilium.k8s.namespace.labels."


@dataclass(frozen=True)
class Selector:
    """A Kubernetes LabelSelector: every matchLabels pair and every expression must hold.

    The empty selector matches everything. `NotIn` and `DoesNotExist` match objects that lack
    the key, as in Kubernetes.
    """

    labels: Labels = ()
    expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, spec: Mapping | None, key_map=None) -> Selector:
        """From a checked LabelSelector; `key_map` rewrites keys (Cilium's source prefixes)."""
        spec = spec or {}
        fix = key_map or (lambda k: k)
        labels = tuple(sorted((fix(str(k)), v) for k, v in (spec.get("matchLabels") or {}).items()))
        exprs = tuple(
            (fix(str(e["key"])), e["operator"], tuple(e.get("values") or ()))
            for e in spec.get("matchExpressions") or ()
        )
        return cls(labels, exprs)

    def label_keys(self) -> set[str]:
        """The label keys it looks at."""
        return {k for k, _ in self.labels} | {k for k, _, _ in self.expressions}

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with `labels` (key -> value) is selected."""
        for key, value in self.labels:
            if labels.get(key) != value:
                return False
        for key, op, values in self.expressions:
            present = key in labels
            if op == "In" and not (present and labels[key] in values):
                return False
            if op == "NotIn" and present and labels[key] in values:
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True


def cilium_key(key: str) -> str:
    """Cilium label keys may carry a source prefix (k8s:, any:); endpoints here have none."""
    for prefix in ("k8s:", "any:"):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def cilium_view(labels: Labels, namespace: str, namespace_labels: Labels) -> dict[str, str]:
    """An endpoint's labels as Cilium's selectors see them: its own, its namespace, and its
    namespace's labels."""
    return {
        **dict(labels),
        CILIUM_NAMESPACE_KEY: namespace,
        **{CILIUM_NS_LABEL_PREFIX + k: v for k, v in namespace_labels},
    }
