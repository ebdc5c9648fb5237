"""Which chain and hop made one of the chains app's flows: for a trace (controller/trace).

A flow names its chain by its priority (classification and replica exits carry the chain's
index, compile.py), or by the VLAN id it carries (a tag names chain, hop, replica and side),
or by the replica port it matches; the hop's VNF deployment and replica group (the select
group over its replicas) are named with it.
"""

from __future__ import annotations

from typing import Any

from apps.chains.compile import (
    CLASS_PRIORITY,
    ENTRY_PRIORITY,
    EXIT_PRIORITY,
    REPLICA_DROP,
    STRAY_TAG_PRIORITY,
    TAG_PRIORITY,
    VLAN_PRESENT,
    ChainsCompiler,
    Replica,
    group_id,
)
from apps.chains.settings import MAX_CHAINS, MAX_HOPS, MAX_REPLICAS, Chain
from controller.flows import Flow
from vnf.naming import deployment_key

Replicas = dict[str, dict[int, Replica]]  # deployment key -> replica number -> where


def untag(vid: int) -> tuple[int, int, int, str]:
    """(chain, hop, replica, side) of a tag's VLAN id: the inverse of compile.tag.

    >>> untag(1), untag(1920)
    ((0, 0, 0, 'a'), (14, 3, 15, 'b'))
    """
    n, side = divmod(vid - 1, 2)
    n, replica = divmod(n, MAX_REPLICAS)
    chain, hop = divmod(n, MAX_HOPS)
    return chain, hop, replica, "ab"[side]


def _hop(chains: list[Chain], found: Replicas, chain: int, hop: int, side: str) -> dict:
    """The chain, the hop's deployment and its replica group (id and replicas by number)."""
    c = chains[chain]
    deployment = c.through[hop]
    replicas = found.get(deployment_key(deployment), {})
    return {
        "chain": c.name,
        "hop": hop,
        "deployment": deployment,
        "side": side,
        "group": group_id(chain, hop, side),
        "replicas": [
            {"replica": r, "switch": f"{x.dpid:016x}", "port": x.port(side)}
            for r, x in sorted(replicas.items())
        ],
    }


def _replica_at(chains: list[Chain], found: Replicas, dpid: int, port: int):
    """(chain index, hop, replica number, side) of the replica port `port` of `dpid`, for each
    chain through its deployment, in chain order."""
    for i, c in enumerate(chains):
        for h, deployment in enumerate(c.through):
            for r, x in found.get(deployment_key(deployment), {}).items():
                if x.dpid == dpid and port in (x.a, x.b):
                    yield i, h, r, "a" if port == x.a else "b"


def explain_flow(
    compiler: ChainsCompiler, chains: list[Chain], found: Replicas, dpid: int, f: Flow
) -> dict[str, Any] | None:
    """What made chains flow `f` on switch `dpid`: {"kind": "classification" | "exit" |
    "tag" | "replica port" | "stray", "chain", "hop", "deployment", "side", "group",
    "replicas", "text", ...}; None for a flow no chain names. `chains` in config order,
    `found` the replicas as the app last placed them. "decides": true marks the steering of
    the class into the chain (at its edge) and the drops."""
    m = f.match_dict()
    if f.table == compiler.classify and f.priority == ENTRY_PRIORITY:
        return {"kind": "replica port", "text": "from a VNF replica: straight to the chains"}
    if f.table != compiler.table:
        return None
    if f.priority == TAG_PRIORITY:
        chain, hop, replica, side = untag(m["vlan_vid"] & ~VLAN_PRESENT)
        if chain >= len(chains):
            return None
        text = f"tagged for replica {replica} of this hop: carried to it"
        return {
            "kind": "tag",
            "replica": replica,
            **_hop(chains, found, chain, hop, side),
            "text": text,
        }
    if f.priority == STRAY_TAG_PRIORITY:
        return _drop("stray", "a tagged frame no chain names here")
    if f.priority == REPLICA_DROP:
        return _drop("replica port", "anything else leaving a VNF replica")
    reverse = f.priority <= CLASS_PRIORITY - MAX_CHAINS
    chain = CLASS_PRIORITY - f.priority - (MAX_CHAINS if reverse else 0)
    if f.priority <= CLASS_PRIORITY and 0 <= chain < len(chains):
        n = len(chains[chain].through)
        hop, side = (n - 1, "b") if reverse else (0, "a")
        return {
            "kind": "classification",
            "direction": "reply" if reverse else "forward",
            "action": "allow",
            "decides": True,
            **_hop(chains, found, chain, hop, side),
            "text": "the chain's class, entering the network here: to the hop's replica group",
        }
    chain = EXIT_PRIORITY - f.priority
    if "in_port" in m and 0 <= chain < len(chains):
        return _exit(chains, found, chain, dpid, m["in_port"])
    return None


def _exit(chains: list[Chain], found: Replicas, chain: int, dpid: int, port: int) -> dict | None:
    for i, h, r, side in _replica_at(chains, found, dpid, port):
        if i != chain:
            continue
        reverse = side == "a"  # replies leave a replica by its side a
        after = h - 1 if reverse else h + 1
        left = {"kind": "exit", "direction": "reply" if reverse else "forward", "replica": r}
        if not 0 <= after < len(chains[chain].through):
            text = "after the chain's last hop: on to its destination"
            return {**left, **_hop(chains, found, chain, h, side), "text": text}
        enter = "b" if reverse else "a"
        text = f"leaving hop {h} ({chains[chain].through[h]}): to the next hop's replica group"
        return {**left, "from_hop": h, **_hop(chains, found, chain, after, enter), "text": text}
    return None


def _drop(kind: str, text: str) -> dict[str, Any]:
    return {"kind": kind, "action": "deny", "decides": True, "text": text + ": dropped"}
