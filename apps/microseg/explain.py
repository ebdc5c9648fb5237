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
    WAYPOINT_ONLY,
    WAYPOINT_PASS,
    MicrosegCompiler,
    Resolver,
    dst_meta,
    rule_entries,
    src_meta,
)
from apps.microseg.model import World
from apps.microseg.policy import Policy, PolicyRule
from controller.flows import Flow, norm_match
from controller.guards import BackendGuard
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


class Explainer:
    """Names what made microseg's flows, for one config (compiler, world and policies): the
    selector results and, built on first use, the index of every policy rule's flows, so a
    flow log or a counter poll asks it flow after flow at the cost of a lookup."""

    def __init__(
        self,
        compiler: MicrosegCompiler,
        world: World,
        policies: list[Policy],
        guards: tuple[BackendGuard, ...] = (),
    ):
        self.compiler, self.world, self.policies = compiler, world, policies
        self.guards = guards
        self.res = Resolver(world)
        self._selected = [(p, self.res.selected(p)) for p in policies]
        self._rules: dict[tuple[int, int, tuple], dict[str, Any]] | None = None

    def explain(self, f: Flow) -> dict[str, Any] | None:
        """What made microseg flow `f`: {"kind": "NetworkPolicy" | "CiliumNetworkPolicy",
        "policy": "namespace/name", "direction", "rule" (index in that direction's list),
        "action", "file", "line"} for a policy rule; {"kind": "default deny", "policies":
        [...]} for an isolated identity; {"kind": "binding" | "spoofed source" | "reply"}
        otherwise; {"kind": "not isolated"} for what passes because no policy isolates the
        identity; None when nothing in the config made it. "decides": true marks a verdict
        of the policies."""
        compiler = self.compiler
        if f.table == compiler.egress and f.priority in (WAYPOINT_PASS, WAYPOINT_ONLY):
            return self._guard(f)
        if f.table in (compiler.egress, compiler.ingress):
            return self._policy(f)
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

    def _guard(self, f: Flow) -> dict[str, Any] | None:
        """The waypointed backend a guard flow protects (controller/guards.py)."""
        match = dict(f.match)
        g = next(
            (
                g
                for g in self.guards
                if (g.ip, g.port) == (match.get("ipv4_dst"), match.get("tcp_dst"))
            ),
            None,
        )
        if g is None:
            return None
        passes = f.priority == WAYPOINT_PASS
        return {
            "kind": "waypoint only",
            "action": "allow" if passes else "deny",
            "decides": not passes,  # the waypoint's own connection is judged by ingress next
            "services": list(g.services),
            "backend": f"{g.ip}:{g.port}",
            "waypoints": list(g.waypoint_ips),
            "text": (
                "the waypoint's own connection to the backend: on to its ingress policy"
                if passes
                else f"{g.describe()}: a direct connection would bypass its L7 policy"
            ),
        }

    def _policy(self, f: Flow) -> dict[str, Any] | None:
        direction = "egress" if f.table == self.compiler.egress else "ingress"
        meta = dict(f.match).get("metadata", (0, 0))
        value = meta[0] if isinstance(meta, tuple) else meta
        mask = SRC_MASK if direction == "egress" else DST_MASK
        identity = (value & mask) >> (SRC_SHIFT if direction == "egress" else DST_SHIFT)
        chosen = [p for p, selected in self._selected if identity in selected]
        isolating = [p for p in chosen if direction in p.isolates]
        if f.priority in (0, COMMIT) and not isolating:
            return {
                "kind": "not isolated",
                "action": "allow",
                "decides": True,
                "direction": direction,
                "text": f"no policy selecting this identity isolates its {direction}",
            }
        if f.priority == ISOLATED:
            return {
                "kind": "default deny",
                "action": "deny",
                "decides": True,
                "direction": direction,
                "policies": [f"{p.kind} {p.namespace}/{p.name}" for p in isolating],
                **(_place(isolating[0].where) if isolating else {}),
                "text": f"no rule of the policies selecting it allows this {direction}",
            }
        if f.priority not in (ALLOW, DENY):
            return None
        return self._rule_index().get((f.table, f.priority, f.match))

    def _rule_index(self) -> dict[tuple[int, int, tuple], dict[str, Any]]:
        """(table, priority, match) of each policy rule's flows -> the first policy and rule
        (in config order, then rule order) that makes it, as `verdicts` reads the rules."""
        if self._rules is not None:
            return self._rules
        compiler, index = self.compiler, {}
        for policy, selected in self._selected:
            for direction in ("egress", "ingress"):
                table = compiler.egress if direction == "egress" else compiler.ingress
                for verdict, priority in (("allow", ALLOW), ("deny", DENY)):
                    for number, rule in enumerate(_rules(policy, direction, verdict)):
                        named = {
                            "kind": policy.kind,
                            "policy": f"{policy.namespace}/{policy.name}",
                            "direction": direction,
                            "rule": number,
                            "action": verdict,
                            "decides": True,
                            **_place(rule.where),
                        }
                        for identity in selected:
                            for match in self._matches(rule, direction, identity):
                                index.setdefault((table, priority, match), named)
        self._rules = index
        return index

    def _matches(self, rule: PolicyRule, direction: str, identity: int):
        """The canonical matches of `rule`'s flows for `identity` in `direction`."""
        if direction == "egress":
            own_meta, own_mask = src_meta(identity), SRC_MASK
        else:
            own_meta, own_mask = dst_meta(identity), DST_MASK
        for entry in rule_entries(self.res, rule, direction, identity):
            for family, eth_type in ETH_TYPES.items():
                for m in self.compiler._entry_matches(direction, family, own_meta, own_mask, entry):
                    yield norm_match({"eth_type": eth_type, **m})
