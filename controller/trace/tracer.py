"""Trace a packet through the network: the verdict, and per switch the flows that matched and
the config rule that made the one that decided.

The path is the switches' own: each switch on the way is asked where the packet goes
(`OvsSwitches.trace`: Open vSwitch's ofproto/trace runs the bridge's real tables), the ports
it leaves by are followed over the discovered links to the next switch, until it reaches a
host port, is dropped, or goes to the controller. Each flow that matched is mapped back to the
app that owns it by its cookie (controller/pipeline.py REGISTRY), found among the flows the
core installed (same table, priority and cookie, and a match that takes the packet), and its
app names the rule that made it (`SuiteApp.explain`).

What is read of the core (hosts, addresses, links, installed flows, apps) is read in the
core's event loop (`in_loop`); the switches are asked outside it, so a trace never holds the
loop while Open vSwitch answers.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from controller.endpoints import parse_endpoints
from controller.flowlog import is_logged
from controller.flows import Flow
from controller.pipeline import FROM_FABRIC
from controller.resources import COOKIE_SHIFT
from controller.trace.model import completed, continued, model_trace
from controller.trace.ovs import IN_PORT, Step, SwitchTrace, SwitchUnreachable
from controller.trace.packet import check, matches, probe

LOG = logging.getLogger("osken_suite.trace")
MAX_SWITCHES = 64  # a path longer than this is a loop, reported as such
# Stages whose flows let a packet through on a policy's say (a rule with "decides": true).
POLICY_STAGES = ("firewall", "microseg_egress", "microseg_ingress", "chains", "services_track")

InLoop = Callable[[Callable[[], Any]], Any]


class TraceError(ValueError):
    """A trace that cannot start: an address no host is known by, a bad packet. The text says
    which; the HTTP answer is 400 or 404 with it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class View:
    """What a trace reads of the network, copied in the core's event loop.

    `hosts`: MAC -> (dpid, port); `macs`: IP -> MAC (heard in packet-ins, or the config's
    endpoints); `peers`: (dpid, port) -> (dpid, port) at the other end of a link;
    `port_names`: dpid -> port -> name.
    """

    hosts: dict[str, tuple[int, int]]
    macs: dict[str, str]
    peers: dict[tuple[int, int], tuple[int, int]]
    port_names: dict[int, dict[int, str]]


def view_of(core) -> View:
    """The View of a Core (run it in the core's event loop)."""
    macs = {str(e.ip): e.mac for e in _endpoints(core) if e.mac}
    macs.update(core.neighbours.macs)
    # A service's VIP is no host's: its MAC is the one the services app answers ARP with.
    macs.update({s["vip"]: s["vip_mac"] for s in described(core).get("services", ())})
    peers = {}
    for link in core.topology.links:
        peers[(link.a, link.a_port)] = (link.b, link.b_port)
        peers[(link.b, link.b_port)] = (link.a, link.a_port)
    names = {d: {p.port_no: p.name for p in c.ports.values()} for d, c in core.conns.items()}
    return View(core.topology.hosts(), macs, peers, names)


def described(core) -> dict[str, list]:
    """What the apps add (SuiteApp.describe), each kind's lists merged in app order; an app
    whose describe fails is left out and counted as its error. Run it in the core's loop."""
    out: dict[str, list] = {}
    for app in core.apps:
        try:
            got = app.describe()
        except Exception as exc:  # one app's bug leaves its part out, not the page
            core.report_failure(app, "describe", exc)
            continue
        for kind, items in got.items():
            out.setdefault(kind, []).extend(items)
    return out


def _endpoints(core) -> list:
    try:
        return parse_endpoints(core.config)
    except ValueError:  # the running config was checked: cannot happen, but never fail here
        return []


def _installed(core, dpid: int, step: Step) -> Flow | None:
    """The flow of ours that matched at `step`: same table, priority and cookie, and a match
    that takes the packet as that table saw it (installed flows first, then desired)."""
    if step.flow is not None:
        return step.flow
    conn = core.conns.get(dpid)
    key = (step.table, step.priority, step.cookie)
    for flows in (conn.flows if conn else {}, core.desired.flows.get(dpid, {})):
        for f in flows.values():
            if (f.table, f.priority, f.cookie) == key and matches(f.match, step.packet):
                return f
    return None


def explain_step(core, dpid: int, step: Step) -> dict[str, Any]:
    """One table crossed, as JSON: table, stage, the owning app, the flow (priority, cookie,
    match, actions) and, where its app can name it, the `rule` that made it."""
    pipeline = core.pipeline
    stage = pipeline.stage(step.table).name if step.table < pipeline.n_tables else "?"
    out: dict[str, Any] = {"table": step.table, "stage": stage}
    if step.priority is None:
        return {**out, "app": None, "flow": None, "actions": ["drop"], "note": "no flow matched"}
    app = pipeline.registry.owner("cookie", step.cookie >> COOKIE_SHIFT) or "unknown"
    out.update(
        app=app,
        flow={"priority": step.priority, "cookie": f"{step.cookie:#x}", "match": step.match},
        actions=list(step.actions),
    )
    f = _installed(core, dpid, step)
    # A stage's table-miss flow is the core's, but its meaning (default allow, not isolated)
    # is the stage owner's to say, for a packet the stage judges (not one from the fabric).
    judged = not step.packet.get("metadata", 0) & FROM_FABRIC
    miss = app == "core" and step.priority == 0 and judged
    asked = pipeline.stage(step.table).owner if miss else app
    rule = core.explain(asked, dpid, f) if f is not None else None
    if rule is not None:
        out["rule"] = rule
    return out


class Tracer:
    """Traces on a running controller.

    Parameters
    ----------
    core : controller.core.Core
        Read only inside `in_loop`.
    switches : object
        `trace(dpid, packet) -> SwitchTrace` and `bridge(dpid) -> str`, raising
        SwitchUnreachable (controller/trace/ovs.py OvsSwitches, or a test's fake switches).
    in_loop : callable
        Runs a function in the core's event loop and returns its result.
    """

    def __init__(self, core, switches, in_loop: InLoop) -> None:
        self.core = core
        self.switches = switches
        self.in_loop = in_loop

    def trace(
        self, src: str, dst: str, proto: str, dport: int | None = None, sport: int | None = None
    ) -> dict[str, Any]:
        """The trace of a new connection's first packet from `src` to `dst` (IPv4 or IPv6 text),
        `proto` "tcp", "udp" or "icmp", to port `dport` (from `sport`).

        Returns {"packet", "verdict": "forward" | "drop" | "controller" | "unknown",
        "decided_by", "hops": [...]}. Raises TraceError for an address no host is known by
        (404) or a packet that cannot be built (400).
        """
        try:
            check(src, dst, proto, dport, sport)
        except ValueError as exc:
            raise TraceError(str(exc)) from None
        src, dst = _canonical(src), _canonical(dst)
        view = self.in_loop(lambda: view_of(self.core))
        src_mac, dst_mac = self._mac(view, "src", src), self._mac(view, "dst", dst)
        pkt = probe(src, dst, proto, dport, sport, src_mac, dst_mac)
        if src_mac not in view.hosts:
            raise TraceError(f"src {src} ({src_mac}): no switch port known for this host", 404)
        walked = self._walk(view, pkt, *view.hosts[src_mac])
        hops = self.in_loop(lambda: [self._hop(view, *w) for w in walked])
        verdict = _verdict(hops)
        return {
            "packet": {
                "src": src,
                "dst": dst,
                "proto": proto,
                "dport": dport,
                "sport": pkt.get(f"{proto}_src"),
                "src_mac": src_mac,
                "dst_mac": dst_mac,
            },
            "verdict": verdict,
            "decided_by": _decision(hops, verdict),
            "hops": hops,
        }

    @staticmethod
    def _mac(view: View, name: str, ip: str) -> str:
        mac = view.macs.get(ip)
        if mac is None:
            raise TraceError(
                f"{name} {ip}: no host known by this address (none has sent from it, and "
                "no endpoint in the config gives its MAC)",
                404,
            )
        return mac

    def _walk(self, view: View, pkt: dict, dpid: int, port: int) -> list[tuple]:
        """(dpid, in_port, SwitchTrace or the error text, why the switch itself was not asked
        or None) per switch, in path order: a switch that cannot be asked is answered from
        the controller's model of it (model.py)."""
        todo, seen, out = [(dpid, port, pkt)], set(), []
        while todo and len(out) < MAX_SWITCHES:
            dpid, port, pkt = todo.pop(0)
            seen.add(dpid)
            asked = {**pkt, "in_port": port}
            try:
                result: SwitchTrace | str = self.switches.trace(dpid, asked)
                unasked = None
            except SwitchUnreachable as exc:
                unasked = str(exc)
                result = self.in_loop(partial(self._model, dpid, asked, unasked))
            if not isinstance(result, str) and result.hashed_group is not None:
                result = self.in_loop(partial(self._after_group, dpid, result))
            if not isinstance(result, str) and result.controller and not result.outputs:
                result = self.in_loop(partial(self._predicted, dpid, asked, result))
            out.append((dpid, port, result, unasked))
            if isinstance(result, str):
                continue
            for out_port in result.outputs:
                peer = view.peers.get((dpid, port if out_port == IN_PORT else out_port))
                if peer is not None and peer[0] not in seen:
                    todo.append((peer[0], peer[1], {**pkt, **_carried(result.final)}))
        return out

    def _model(self, dpid: int, pkt: dict, why: str) -> SwitchTrace | str:
        """The controller's model of switch `dpid` walked (in the core's loop), for a switch
        that cannot be asked (`why`); the reason text when the controller holds no flows
        there either."""
        flows = self.core.desired.flows.get(dpid)
        if not flows:
            return f"{why}; and the controller holds no flows for it"
        groups = self.core.desired.groups.get(dpid, {})
        return model_trace(flows.values(), groups, self.core.topology.live_ports(dpid), pkt)

    def _after_group(self, dpid: int, asked: SwitchTrace) -> SwitchTrace:
        """The switch's trace completed by the model from the select group it stopped at
        (in the core's loop); as it was if the controller holds no flows there."""
        flows = self.core.desired.flows.get(dpid)
        if not flows or not asked.steps:
            return asked
        live = self.core.topology.live_ports(dpid)
        groups = self.core.desired.groups.get(dpid, {})
        pkt = asked.steps[-1].packet
        return completed(asked, model_trace(flows.values(), groups, live, pkt, asked.hashed_group))

    def _predicted(self, dpid: int, asked: dict, result: SwitchTrace) -> SwitchTrace:
        """A packet the switch sends to the controller, continued (in the core's loop) with
        the packet-out its app would answer with (SuiteApp.predict: method exact's next
        pick, say), walked in the model; as it was when no app would send it on."""
        step = result.steps[-1] if result.steps else None
        f = _installed(self.core, dpid, step) if step is not None else None
        if f is None or is_logged(f) or dpid not in self.core.desired.flows:
            return result
        owner = self.core.pipeline.registry.owner("cookie", f.cookie >> COOKIE_SHIFT)
        app = next((a for a in self.core.apps if a.name == owner), None)
        try:
            predicted = app.predict(dpid, f, asked) if app is not None else None
        except Exception as exc:  # an app's bug must not fail the trace
            self.core.report_failure(app, "predict", exc)
            return result
        if not predicted:
            return result
        flows = self.core.desired.flows[dpid].values()
        groups = self.core.desired.groups.get(dpid, {})
        live = self.core.topology.live_ports(dpid)
        modelled = model_trace(flows, groups, live, asked, actions=tuple(predicted["actions"]))
        note = f"to the controller; its answer from the controller's model: {owner}'s packet-out"
        whole = continued(result, modelled, note)
        return replace(whole, controller=modelled.controller, picked=predicted.get("picked"))

    def _hop(
        self, view: View, dpid: int, port: int, result: SwitchTrace | str, unasked: str | None
    ) -> dict:
        names = view.port_names.get(dpid, {})
        hop: dict[str, Any] = {
            "dpid": f"{dpid:016x}",
            "switch": self.name(dpid),
            "in_port": port,
            "in_port_name": names.get(port),
        }
        if isinstance(result, str):
            return {**hop, "source": None, "error": result, "result": "unknown"}
        outputs = []
        for out_port in result.outputs:
            actual = port if out_port == IN_PORT else out_port
            entry: dict[str, Any] = {"port": actual, "name": names.get(actual)}
            peer = view.peers.get((dpid, actual))
            if peer is not None:
                entry.update(to_switch=f"{peer[0]:016x}", to_port=peer[1])
            else:
                entry["hosts"] = sorted(m for m, at in view.hosts.items() if at == (dpid, actual))
            outputs.append(entry)
        if unasked is not None:
            hop["unasked"] = unasked  # why the switch itself was not asked
        if result.notes:
            hop["notes"] = list(result.notes)
        if result.picked is not None:
            hop["picked"] = result.picked  # what the controller would decide (SuiteApp.predict)
        tables = [explain_step(self.core, dpid, s) for s in result.steps]
        # A logged deny sends the flow log a copy (controller/flowlog.py): still a drop.
        last = _installed(self.core, dpid, result.steps[-1]) if result.steps else None
        logged = result.controller and not outputs and last is not None and is_logged(last)
        if logged:
            hop["logged"] = True
        result_kind = (
            "forward" if outputs else "drop" if logged or not result.controller else "controller"
        )
        return {
            **hop,
            "source": result.source,
            "tables": tables,
            "outputs": outputs,
            "result": result_kind,
        }

    def name(self, dpid: int) -> str | None:
        """The bridge name of switch `dpid`, or None where it cannot be asked."""
        try:
            return self.switches.bridge(dpid)
        except SwitchUnreachable:
            return None


def _canonical(address: str) -> str:
    """An address as the controller keys it ("fd00:0::1" is "fd00::1"); as given when it is
    no address (probe says why)."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _carried(final: dict[str, Any]) -> dict[str, Any]:
    """What of the packet as it left a switch the next one sees: its headers, not the
    pipeline's metadata, registers or conntrack state."""
    local = {"in_port", "metadata", "reg0", "reg1", "ct_state", "ct_zone", "ct_mark"}
    return {k: v for k, v in final.items() if k not in local}


def _verdict(hops: list[dict]) -> str:
    if any(h["result"] == "unknown" for h in hops):
        return "unknown"
    if any("hosts" in o for h in hops for o in h["outputs"]):
        return "forward"
    return "controller" if any(h["result"] == "controller" for h in hops) else "drop"


def _decision(hops: list[dict], verdict: str) -> dict[str, Any] | None:
    """The table that decided: for a drop, the last table crossed where it was dropped; for
    the controller, the table that sent it there; for a forward, the last policy stage whose
    rule let it pass where it entered the network (policy judges a packet once, at its first
    switch; None if no policy app had a say)."""
    for hop in reversed(hops) if verdict != "forward" else hops[:1]:
        tables = hop.get("tables") or []
        if verdict == "drop" and hop["result"] == "drop" and tables:
            return _at(hop, tables[-1])
        if verdict == "controller":
            for t in tables:
                if any(a.lower().startswith("controller") for a in t["actions"]):
                    return _at(hop, t)
        if verdict == "forward":
            for t in reversed(tables):
                if t["stage"] in POLICY_STAGES and (t.get("rule") or {}).get("decides"):
                    return _at(hop, t)
    return None


def _at(hop: dict, table: dict) -> dict[str, Any]:
    out = {"switch": hop["switch"], "dpid": hop["dpid"], **table}
    xdp = (table.get("rule") or {}).get("xdp") or []
    if hop.get("in_port_name") in xdp:
        out["xdp"] = hop["in_port_name"]  # dropped there by XDP, before the switch saw it
    return out
