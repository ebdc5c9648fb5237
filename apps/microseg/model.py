"""Who is who: namespaces, endpoints, label selectors and security identities.

An identity is what policies can tell apart: an endpoint's namespace and its labels. Endpoints
that share both are indistinguishable to every selector, so they share one identity, and policy
is compiled per identity (as Cilium and Antrea do), never per pair of endpoints.

Label selectors are controller/labelselectors.py's (shared with the services app's waypoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.endpoints import Endpoint, Labels, labels_of
from controller.labelselectors import (
    NAMESPACE_NAME_LABEL,
    Selector,  # noqa: F401  (the selectors policies hold)
)

NAME_LABEL = NAMESPACE_NAME_LABEL  # every namespace carries its own name as a label


@dataclass(frozen=True)
class Identity:
    """A security identity: one namespace, one label set. `id` goes in packet metadata."""

    id: int
    namespace: str
    labels: Labels
    namespace_labels: Labels

    @property
    def key(self) -> tuple[str, Labels]:
        return (self.namespace, self.labels)

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def namespace_map(self) -> dict[str, str]:
        return dict(self.namespace_labels)


@dataclass
class World:
    """Endpoints and namespaces of one config, grouped into identities."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # by name
    namespaces: dict[str, Labels] = field(default_factory=dict)  # name -> labels
    identities: dict[int, Identity] = field(default_factory=dict)
    members: dict[int, tuple[Endpoint, ...]] = field(default_factory=dict)  # identity -> members
    identity_of: dict[str, int] = field(default_factory=dict)  # endpoint name -> identity id
    by_ip: dict[str, Endpoint] = field(default_factory=dict)

    def families(self, identity: int) -> set[int]:
        return {e.family for e in self.members.get(identity, ())}


class IdentityAllocator:
    """Numbers for identities that stay the same across reloads while the identity exists."""

    MAX = 0xFFFF

    def __init__(self) -> None:
        self.ids: dict[tuple[str, Labels], int] = {}

    def assign(self, keys: set[tuple[str, Labels]]) -> dict[tuple[str, Labels], int]:
        self.ids = {k: i for k, i in self.ids.items() if k in keys}
        used = set(self.ids.values())
        free = (i for i in range(1, self.MAX + 1) if i not in used)
        for key in sorted(keys - self.ids.keys()):
            number = next(free, None)
            if number is None:
                raise ValueError(f"more than {self.MAX} identities")
            self.ids[key] = number
        return dict(self.ids)


def build_world(
    namespaces: dict[str, Labels], endpoints: list[Endpoint], allocator: IdentityAllocator
) -> World:
    """Group endpoints into identities; namespaces named only by endpoints get their name label."""
    ns_labels = dict(namespaces)
    for e in endpoints:
        ns_labels.setdefault(e.namespace, ())
    ns_labels = {
        name: labels_of({**dict(labels), NAME_LABEL: name}) for name, labels in ns_labels.items()
    }
    keys = {(e.namespace, e.labels) for e in endpoints}
    ids = allocator.assign(keys)
    world = World(namespaces=ns_labels)
    grouped: dict[int, list[Endpoint]] = {}
    for e in endpoints:
        number = ids[(e.namespace, e.labels)]
        world.endpoints[e.name] = e
        world.identity_of[e.name] = number
        world.by_ip[str(e.ip)] = e
        grouped.setdefault(number, []).append(e)
    for (ns, labels), number in ids.items():
        world.identities[number] = Identity(number, ns, labels, ns_labels[ns])
        world.members[number] = tuple(grouped[number])
    return world
