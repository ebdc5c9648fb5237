"""Service function chaining: a traffic class steered through VNF deployments, in order.

Run it with ``osken-manager apps/chains --config lab.yaml``; L2 learning comes along. The
config's `chains` name a class (client and server CIDRs or endpoint labels, protocol, ports)
and the deployments it goes through (apps/chains/settings.py). The VNFs are plugged in by
`scripts/vnf.py deploy FILE --bridge SWITCH` (vnf/): the controller finds each deployment's
replicas by their port names, on whatever switch they are, and follows them as they come and go.

- Forward traffic goes through each hop's replicas in order (a select group spreads flows over
  a hop's replicas), then on to its destination; replies come back through the same hops in
  reverse (apps/chains/compile.py).
- A replica whose container stops loses its ports: the switch skips it at once (its bucket
  watches the port) and the controller drops it from the groups.
- A chain whose hop has no replica left drops its class (fails closed); removing a chain from
  the config restores the direct path.
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from apps.chains.compile import COOKIE, ChainsCompiler, Replica
from apps.chains.explain import explain_flow
from apps.chains.settings import CHAINS_SCHEMA, MAX_REPLICAS, Chain, parse_chains
from controller.app import SuiteApp
from controller.flows import Flow
from vnf.naming import deployment_key, parse_port

LOG = logging.getLogger("osken_suite.chains")


class ServiceChains(SuiteApp):
    name = "chains"
    config_section = "chains"
    config_schemas = MappingProxyType({"chains": CHAINS_SCHEMA})
    requires = ("apps.l2_learning",)  # forwarding comes from the L2 app
    cookie = COOKIE

    def __init__(self, core) -> None:
        super().__init__(core)
        self.compiler = ChainsCompiler(core.pipeline)
        self.chains: list[Chain] = []
        self._placed: object = None
        self._empty: set[tuple[str, str]] = set()  # (chain, deployment) with no replica up
        self.replica_gauge = core.metrics.gauge(
            "osken_chains_replicas",
            "Replicas in service, per deployment a chain goes through",
            ("deployment",),
        )

    def parse_config(self, section, config) -> list[Chain]:
        chains = parse_chains(section, config)
        for i, c in enumerate(chains):
            if len(set(c.through)) != len(c.through):
                raise config.error(
                    ("chains", i, "through"), "a deployment may appear once per chain"
                )
        return chains

    def configure(self, chains: list[Chain], now: float) -> None:
        self.chains = chains
        self._install()
        for c in self.chains:
            LOG.info("chains: chain %s through %s", c.name, " -> ".join(c.through))

    # --- replicas, from the switches' port names -----------------------------------------------

    def replica_ports(self) -> dict[int, list[int]]:
        """Every port named as a replica's, per switch, whole replica or not: frames from them
        must never be taken for a host's (or flooded on)."""
        return {
            dpid: sorted(p.port_no for p in self.core.ports(dpid).values() if parse_port(p.name))
            for dpid in self.core.connected()
        }

    def replicas(self) -> dict[str, dict[int, Replica]]:
        """Deployment key -> replica number -> where both its ports are, live."""
        sides: dict[tuple[str, int], dict[str, tuple[int, int]]] = {}
        for dpid in self.core.connected():
            live = set(self.topology.live_ports(dpid))
            for port in self.core.ports(dpid).values():
                parsed = parse_port(port.name)
                if parsed and port.port_no in live:
                    key, r, side = parsed
                    sides.setdefault((key, r), {})[side] = (dpid, port.port_no)
        out: dict[str, dict[int, Replica]] = {}
        for (key, r), got in sides.items():
            a, b = got.get("a"), got.get("b")
            if a and b and a[0] == b[0] and r < MAX_REPLICAS:
                out.setdefault(key, {})[r] = Replica(a[0], a[1], b[1])
        return out

    def describe(self) -> dict[str, list]:
        """The VNF replicas found (deployment, replica number, switch, its two ports) and the
        chains through them, for the topology page."""
        vnfs = [
            {"deployment": key, "replica": r, "switch": f"{x.dpid:016x}", "ports": [x.a, x.b]}
            for key, replicas in sorted(self.replicas().items())
            for r, x in sorted(replicas.items())
        ]
        chains = [{"name": c.name, "through": list(c.through)} for c in self.chains]
        return {"vnfs": vnfs, "chains": chains}

    def explain(self, dpid: int, flow: Flow) -> dict | None:
        return explain_flow(self.compiler, self.chains, self.replicas(), dpid, flow)

    # --- desired flows -------------------------------------------------------------------------

    def _install(self) -> None:
        switches = tuple(self.topology.switches())
        found = self.replicas()
        inputs = (tuple(self.chains), switches, repr(sorted(found.items())), self.topology.version)
        if inputs == self._placed:
            return
        self._placed = inputs
        replica_ports = {
            dpid: sorted(
                {
                    p
                    for reps in found.values()
                    for r in reps.values()
                    if r.dpid == dpid
                    for p in (r.a, r.b)
                }
            )
            for dpid in switches
        }
        flows: dict[int, list] = {}
        groups: dict[int, list] = {}
        for dpid in switches:
            flows[dpid] = self.compiler.entry_flows(replica_ports.get(dpid, []))
            flows[dpid] += self.compiler.replica_drop_flows(replica_ports.get(dpid, []))
            groups[dpid] = []
        for index, c in enumerate(self.chains):
            hops = [found.get(deployment_key(d), {}) for d in c.through]
            for d, replicas in zip(c.through, hops, strict=True):
                self.replica_gauge.labels(d).set(len(replicas))
                if not replicas:
                    LOG.warning(
                        "chains: %s: no replica of %s is up; its traffic is dropped", c.name, d
                    )
            for dpid in switches:
                f, g = self.compiler.chain_flows(dpid, index, c, hops, self.topology.next_hop_ports)
                flows[dpid] += f
                groups[dpid] += g
        self.desired.put(("chains", "flows"), flows)
        self.desired.put_groups(("chains", "groups"), groups)

    def on_topology_change(self, now: float) -> None:
        self._install()

    def on_switch_ready(self, dpid: int, now: float) -> None:
        self._install()
