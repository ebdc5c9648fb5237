"""EnvoyFilter patches applied to a listener's HTTP filter chain, as Istio applies them.

Source: Istio's EnvoyFilter reference (`Patch.Operation`) and its implementation
(pilot/pkg/networking/core/envoyfilter/listener_patch.go, patchHTTPFilter): without a
`subFilter` match, INSERT_BEFORE inserts first and INSERT_AFTER appends (like ADD); with one,
they insert next to the first filter of that name, and REPLACE and REMOVE act on every filter of
that name; a patch whose filter is not in the chain does nothing.
"""

from __future__ import annotations

import json

from vnf.waypoint.model import FilterPatch


def _at(filters: list[dict], name: str) -> int | None:
    return next((i for i, f in enumerate(filters) if f.get("name") == name), None)


def apply(filters: list[dict], patches: tuple[FilterPatch, ...]) -> list[dict]:
    """The HTTP filter chain `filters` (Envoy's http_filters, in order) with `patches` applied
    in order; a new list, `filters` untouched."""
    out = list(filters)
    for p in patches:
        value = json.loads(p.value) if p.value else None
        if p.operation == "REMOVE":
            out = [f for f in out if f.get("name") != p.sub_filter]
        elif p.operation == "REPLACE":
            out = [value if f.get("name") == p.sub_filter else f for f in out]
        elif p.operation == "INSERT_FIRST" or (
            p.operation == "INSERT_BEFORE" and p.sub_filter is None
        ):
            out.insert(0, value)
        elif p.operation == "ADD" or p.sub_filter is None:
            out.append(value)
        else:
            at = _at(out, p.sub_filter)
            if at is not None:
                out.insert(at + (p.operation == "INSERT_AFTER"), value)
    return out
