"""The `policies` config section, which more than one app reads, and whose each document kind is.

`policies` lists files or folders of YAML documents, used unmodified. Microsegmentation
enforces the Kubernetes and Cilium network policies in them; the services app's waypoint
enforces Istio's AuthorizationPolicy, PeerAuthentication and EnvoyFilter. Both apps declare the
section with the one schema object below (the core lets two apps share a section only so), and
each reads the kinds that are its own (`READERS`):

- a kind another loaded app reads is left to it;
- a kind of a suite app that is not loaded is logged by name, not enforced (a config is shared
  by controllers that run different apps, as for sections: controller/sections.py);
- any other kind is refused, by name, at its line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import MappingProxyType

from controller.config import Document

LOG = logging.getLogger("osken_suite.config")

POLICIES_SCHEMA = {"type": "array", "items": {"type": "string"}}  # files or folders

# Document kind -> the suite app that enforces it.
READERS = MappingProxyType(
    {
        "NetworkPolicy": "microseg",
        "CiliumNetworkPolicy": "microseg",
        "AuthorizationPolicy": "services",
        "PeerAuthentication": "services",
        "EnvoyFilter": "services",
    }
)


def is_mine(doc: Document, app: str, loaded: Callable[[str], bool]) -> bool:
    """Whether app `app` reads policy document `doc` (a mapping); `loaded(name)` says whether
    the suite app `name` runs here.

    Raises:
        ConfigError: a kind no suite app reads, located at `kind`.
    """
    kind = doc.data.get("kind")
    reader = READERS.get(kind) if isinstance(kind, str) else None
    if reader is None:
        raise doc.error(
            ("kind",), f"{kind!r} is not a policy kind the suite reads ({', '.join(READERS)})"
        )
    if reader == app:
        return True
    if not loaded(reader):
        name = (doc.data.get("metadata") or {}).get("name")
        LOG.warning(
            "%s: %s %s is enforced by apps.%s, which is not loaded: no effect",
            doc.located(("kind",)),
            kind,
            name,
            reader,
        )
    return False
