"""Which workloads an Istio policy object is for (AuthorizationPolicy, PeerAuthentication,
EnvoyFilter): one in the root namespace (`istio-system`) is for every namespace, one elsewhere
for its own; a selector (label pairs) narrows it, None selects all."""

from __future__ import annotations

from controller.endpoints import Endpoint

ROOT_NAMESPACE = "istio-system"


def selects(namespace: str, selector: tuple[tuple[str, str], ...] | None, e: Endpoint) -> bool:
    """Whether an object in `namespace` with label `selector` is for workload `e`."""
    if namespace != ROOT_NAMESPACE and e.namespace != namespace:
        return False
    return selector is None or set(selector) <= set(e.labels)
