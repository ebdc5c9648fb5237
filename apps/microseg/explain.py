"""Which policy rule made one of microsegmentation's flows: for a trace (controller/trace).

Policy flows are compiled per identity and direction from every policy that selects the
identity, merged (compile.py), so a flow does not carry its rule. It is found again the way
it was made: for each policy selecting the identity, each rule's entries are compiled to
matches (`rule_entries`, `MicrosegCompiler._entry_matches`) and the rule whose match is the
flow's is the one. Default deny names the policies that isolate the identity; the other
flows (bindings, spoofed sources, conntrack replies) are named for what they do.
"""

from __future__ import annotations

from typing import Any

from apps.microseg.compile import (
    ALLOW,
    BOUND,
    CLAIMED,
    COMMIT,
    CT_PASS,
    DENY,
    DST_MASK,
    DST_SHIFT,
    ISOLATED,
    SRC_MASK,
    SRC_SHIFT,
    MicrosegCompiler,
    Resolver,
    dst_meta,
    rule_entries,
    src_meta,
)
from apps.microseg.model import World
from apps.microseg.policy import Policy, PolicyRule
from controller.flows import Flow, norm_match
from controller.matches import ETH_TYPES


def _place(where: str) -> dict[str, Any]:
    """'file:line' as {"file", "line"}."""
    path, _, line = where.rpartition(":")
    return {"file": path, "line": int(line)} if line.isdigit() else {"file": where, "line": None}


def _rules(policy: Policy, direction: str, verdict: str) -> tuple[PolicyRule, ...]:
    """The rules of `policy` that give `verdict` in `direction`, as `verdicts` reads them:
    allow rules count only where the policy isolates that direction (or it is Cilium's)."""
    if verdict == "deny":
        return policy.ingress_deny if direction == "ingress" else policy.egress_deny
    if direction not in policy.isolates and not policy.cilium:
        return ()
    return policy.ingress if direction == "ingress" else policy.egress


def explain_flow(
    compiler: MicrosegCompiler, world: World, policies: list[Policy], f: Flow
) -> dict[str, Any] | None:
    """What made microseg flow `f`: {"kind": "NetworkPolicy" | "CiliumNetworkPolicy",
    "policy": "namespace/name", "direction", "rule" (index in that direction's list),
    "action", "file", "line"} for a policy rule; {"kind": "default deny", "policies": [...]}
    for an isolated identity; {"kind": "binding" | "spoofed source" | "reply"} otherwise;
    {"kind": "not isolated"} for what passes because no policy isolates the identity; None
    when nothing in the config made it. "decides": true marks a verdict of the policies."""
    if f.table in (compiler.egress, compiler.ingress):
        return _policy(compiler, world, policies, f)
    if f.table == compiler.src and f.priority == CLAIMED and not f.instructions:
        return {
            "kind": "spoofed source",
            "action": "deny",
            "text": "this address is an endpoint's, bound to another port (or MAC)",
        }
    if f.table == compiler.src and f.priority == BOUND:
        return {
            "kind": "binding",
            "action": "allow",
            "text": "the endpoint's address at the port it was first seen on",
        }
    if f.table == compiler.dst and f.priority in (CT_PASS, CT_PASS + 1):
        return {
            "kind": "reply",
            "action": "allow",
            "text": "a reply to (or related to) a connection policy allowed",
        }
    return None


def _policy(compiler: MicrosegCompiler, world: World, policies: list[Policy], f: Flow):
    direction = "egress" if f.table == compiler.egress else "ingress"
    meta = dict(f.match).get("metadata", (0, 0))
    value = meta[0] if isinstance(meta, tuple) else meta
    if direction == "egress":
        identity = (value & SRC_MASK) >> SRC_SHIFT
        own_meta, own_mask = src_meta(identity), SRC_MASK
    else:
        identity = (value & DST_MASK) >> DST_SHIFT
        own_meta, own_mask = dst_meta(identity), DST_MASK
    res = Resolver(world)
    chosen = [p for p in policies if identity in res.selected(p)]
    if f.priority in (0, COMMIT) and not [p for p in chosen if direction in p.isolates]:
        return {
            "kind": "not isolated",
            "action": "allow",
            "decides": True,
            "direction": direction,
            "text": f"no policy selecting this identity isolates its {direction}",
        }
    if f.priority == ISOLATED:
        isolating = [p for p in chosen if direction in p.isolates]
        return {
            "kind": "default deny",
            "action": "deny",
            "decides": True,
            "direction": direction,
            "policies": [f"{p.kind} {p.namespace}/{p.name}" for p in isolating],
            **(_place(isolating[0].where) if isolating else {}),
            "text": f"no rule of the policies selecting it allows this {direction}",
        }
    verdict = {ALLOW: "allow", DENY: "deny"}.get(f.priority)
    if verdict is None:
        return None
    for policy in chosen:
        for index, rule in enumerate(_rules(policy, direction, verdict)):
            for entry in rule_entries(res, rule, direction, identity):
                for family, eth_type in ETH_TYPES.items():
                    for m in compiler._entry_matches(direction, family, own_meta, own_mask, entry):
                        if norm_match({"eth_type": eth_type, **m}) == f.match:
                            return {
                                "kind": policy.kind,
                                "policy": f"{policy.namespace}/{policy.name}",
                                "direction": direction,
                                "rule": index,
                                "action": verdict,
                                "decides": True,
                                **_place(rule.where),
                            }
    return None
