"""Flow logs (issue 16): one JSON line per denied new connection, naming the rule that denied it.

With `flow_log: {path: FILE, rate: N}` in the config, the apps that deny (the firewall, the
microsegmentation) turn each deny flow from a plain drop into "through the log meter, then to
the controller" (`log_instructions`): the packet is still dropped by the switch, and a copy of
its first `LOG_BYTES` bytes comes to the controller. The log meter is the core's, one per
switch (`LOG_METER`, OpenFlow 1.3.5 section 5.7, a drop band of N packets/s), so a flood of
denied packets costs the controller at most N packet-ins per second per switch whatever its
rate (OVN's and Antrea's ACL logging work the same way). The core finds the flow a packet-in
came from (`FlowLog.flow_for`: table, cookie and the packet's fields, metadata included), its
app names the rule (`SuiteApp.explain`, the same answer a trace gives), and `FlowLog.write`
appends one line per connection: repeats of a 5-tuple within `DEDUP_SECONDS` (a SYN sent
again, the next packets of a denied flow) are counted, not written again.

A line (keys in this order; `sport`/`dport` are null for ICMP, which has `icmp_type`):

    {"time": "2026-12-01T03:25:53.123Z", "switch": "0000000000000001", "port": 1,
     "port_name": "s1-eth1", "src": "10.0.0.1", "dst": "10.0.0.3", "proto": "tcp",
     "sport": 40000, "dport": 22, "verdict": "deny", "app": "firewall", "table": 1,
     "stage": "firewall", "rule": {"kind": "rule", "file": "/lab/lab.yaml", "line": 10, ...}}

>>> is_logged(flow(1, 10, {}, *log_instructions()))
True
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.config import Config
from controller.desired import DesiredState
from controller.flows import (
    Flow,
    Group,
    Meter,
    apply,
    controller_copy,
    flow,
    meter,
    to_controller,
)
from controller.matches import CT_NEW, CT_TRK, ETH_TYPES, PROTOCOL_NAMES, TCP_ACK, TCP_SYN
from controller.packets import IPPROTO_TCP
from controller.pipeline import FROM_FABRIC, PIPELINE, REGISTRY
from controller.trace.model import model_trace
from controller.trace.packet import matches

LOG = logging.getLogger("osken_suite.flowlog")

FLOW_LOG_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path"],
    "properties": {
        "path": {"type": "string", "minLength": 1},
        "rate": {"type": "integer", "minimum": 1, "maximum": 100_000},
        "allowed": {"type": "boolean"},
    },
}
DEFAULT_RATE = 100  # log packet-ins per second per switch
LOG_METER = REGISTRY.value("meter", "core", "flow_log")
LOG_BYTES = 128  # of each logged packet: every header a rule can match
ALLOW_COPY = controller_copy(LOG_METER, LOG_BYTES)  # an allowed packet's copy; it goes on
TRACKED_NEW, UNTRACKED_SYN = 20, 10  # flow_log stage priorities
JUDGES = frozenset({"firewall", "microseg"})  # the apps whose flows allow or deny
DEDUP_SECONDS = 60.0  # a 5-tuple logged is not logged again for this long (SYN retries)
DEDUP_LIMIT = 65536  # 5-tuples remembered at most; the oldest go first
RECENT = 100  # lines kept in memory for the topology page


@dataclass(frozen=True)
class FlowLogSettings:
    """`path`: the absolute file to append to, None when there is no flow log; `rate`: log
    packet-ins per second per switch (the log meter's drop rate), denied and allowed ones
    together; `allowed`: allowed new connections are logged too."""

    path: str | None = None
    rate: int = DEFAULT_RATE
    allowed: bool = False

    @property
    def on(self) -> bool:
        """Whether denied connections are logged."""
        return self.path is not None


def parse_flow_log(config: Config) -> FlowLogSettings:
    """The `flow_log` section (checked against FLOW_LOG_SCHEMA already), its path resolved
    against the config file (`Config.resolve_output`: under --cluster, this replica's own
    config file, not the shared config's private copy).

    Raises:
        ConfigError: at flow_log.path, when the file's folder does not exist, the path is a
            folder, or the file cannot be written.
    """
    section = config.section("flow_log")
    if section is None:
        return FlowLogSettings()
    path = config.resolve_output(section["path"])
    folder = os.path.dirname(path)
    where = ("flow_log", "path")
    if not os.path.isdir(folder):
        raise config.error(where, f"{section['path']}: no folder {folder}")
    if os.path.isdir(path):
        raise config.error(where, f"{section['path']}: is a folder, not a file")
    writable = os.access(path, os.W_OK) if os.path.exists(path) else os.access(folder, os.W_OK)
    if not writable:
        raise config.error(where, f"{section['path']}: cannot be written")
    return FlowLogSettings(path, section.get("rate", DEFAULT_RATE), section.get("allowed", False))


def logging_on(config: Config) -> bool:
    """Whether `config` asks for a flow log: for the apps that deny, in `parse_config`."""
    return config.section("flow_log") is not None


def log_instructions() -> tuple:
    """What a deny flow does when it is logged: through the log meter, then its first
    LOG_BYTES bytes to the controller (no goto: the packet goes no further)."""
    return (meter(LOG_METER), apply(to_controller(LOG_BYTES)))


def deny(table: int, priority: int, match: dict, cookie: int, log: bool) -> Flow:
    """A deny flow: a plain drop, or a logged one (`log_instructions`) when `log`."""
    return flow(table, priority, match, *(log_instructions() if log else ()), cookie=cookie)


def is_logged(f: Flow) -> bool:
    """Whether flow `f` goes through the log meter or sends a copy through it (its
    packet-ins are the flow log's)."""
    return ("meter", LOG_METER) in f.instructions or ("apply", (ALLOW_COPY,)) in f.instructions


def allowed_flows(settings: FlowLogSettings, cookie: int) -> list[Flow]:
    """The flow_log stage's flows (the core's, with `cookie`): none unless allowed
    connections are logged. A packet there passed every policy stage; a new connection's
    first packet sends a copy through the log meter (`ALLOW_COPY`), and every packet goes on.
    New is conntrack's +new where a stage tracked the packet (microseg, a stateful firewall
    rule); an untracked TCP packet is new when it is a SYN without ACK. Untracked UDP and
    ICMP (a stateless firewall alone) are not logged: every packet would be a copy. Packets
    from another switch (FROM_FABRIC) were logged where they entered."""
    if not (settings.on and settings.allowed):
        return []
    table = PIPELINE.table("flow_log")
    on = (apply(ALLOW_COPY), PIPELINE.go_on("flow_log"))
    local = {"metadata": (0, FROM_FABRIC)}
    out = []
    for eth_type in ETH_TYPES.values():
        new = {"eth_type": eth_type, **local, "ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW)}
        syn = {"eth_type": eth_type, "ip_proto": IPPROTO_TCP, **local, "ct_state": (0, CT_TRK)}
        syn["tcp_flags"] = (TCP_SYN, TCP_SYN | TCP_ACK)
        out.append(flow(table, TRACKED_NEW, new, *on, cookie=cookie))
        out.append(flow(table, UNTRACKED_SYN, syn, *on, cookie=cookie))
    return out


def deciding_flows(
    flows: Iterable[Flow], groups: Mapping[int, Group], packet: dict[str, Any]
) -> list[Flow]:
    """The policy flows that let `packet` (its header fields and in_port) through to the
    flow_log stage, in table order: the controller's model of the switch (`model_trace`,
    conntrack taken as new), the flows of the apps that judge (firewall, microseg) before
    that stage; table misses are the core's and not among them."""
    stop = PIPELINE.table("flow_log")
    walked = model_trace(flows, groups, (), packet)
    return [
        s.flow
        for s in walked.steps
        if s.flow is not None and s.table < stop and PIPELINE.app_of(s.flow) in JUDGES
    ]


def log_meters(settings: FlowLogSettings) -> list[Meter]:
    """The log meter a switch needs: none when there is no flow log. Its burst is a tenth
    of a second's worth, so a flood reaches the controller at about `rate` per second."""
    if not settings.on:
        return []
    return [Meter(LOG_METER, "pktps", settings.rate, max(settings.rate // 10, 1))]


def _time(now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class FlowLog:
    """The flow log file, the 5-tuples logged lately, and the last RECENT lines.

    Parameters
    ----------
    metrics : controller.metrics.Metrics
        Where `osken_flow_log_packet_ins_total{dpid}` (log packet-ins received) and
        `osken_flow_log_lines_total{app}` (lines written) go.
    """

    def __init__(self, metrics) -> None:
        self.settings = FlowLogSettings()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._file = None
        self._seen: OrderedDict[tuple, float] = OrderedDict()
        self._index: dict[int, tuple[int, dict[tuple[int, int], list[Flow]]]] = {}
        self._write_failed = False
        self.packet_ins = metrics.counter(
            "osken_flow_log_packet_ins",
            "Packet-ins from logged deny flows (at most the flow_log rate per switch)",
            ("dpid",),
        )
        self.lines = metrics.counter(
            "osken_flow_log_lines", "Flow log lines written (denied connections)", ("app",)
        )

    @property
    def on(self) -> bool:
        """Whether denied connections are logged."""
        return self.settings.on

    def configure(self, settings: FlowLogSettings) -> None:
        """Write to `settings.path` from now on (appending), or nowhere.

        Raises:
            OSError: the file cannot be opened; nothing changed.
        """
        if settings.path == self.settings.path:
            self.settings = settings
            return
        new = None
        if settings.on:  # held open across events; line-buffered: each line is on disk at once
            new = open(settings.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.close()
        self._file, self.settings, self._write_failed = new, settings, False
        if settings.on:
            LOG.info("flow log: denied connections go to %s", settings.path)

    def close(self) -> None:
        """Close the file (the controller is stopping, or the log moved)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def flow_for(
        self, desired: DesiredState, dpid: int, table: int, cookie: int, packet: dict[str, Any]
    ) -> Flow | None:
        """The logged flow of switch `dpid` that sent this packet-in: in `table`, with
        `cookie`, whose match takes `packet` (header fields, in_port and metadata), the
        highest priority first; None when the packet-in is not the flow log's."""
        for f in self._logged(desired, dpid).get((table, cookie), ()):
            if matches(f.match, packet):
                return f
        return None

    def _logged(self, desired: DesiredState, dpid: int) -> dict[tuple[int, int], list[Flow]]:
        """(table, cookie) -> the logged flows desired on `dpid`, highest priority first;
        made again only when the desired flows changed."""
        version, index = self._index.get(dpid, (-1, {}))
        if version != desired.version:
            index = {}
            for f in desired.flows.get(dpid, {}).values():
                if is_logged(f):
                    index.setdefault((f.table, f.cookie), []).append(f)
            for flows in index.values():
                flows.sort(key=lambda f: -f.priority)
            self._index[dpid] = (desired.version, index)
        return index

    def write(
        self,
        now: float,
        dpid: int,
        port: int,
        port_name: str | None,
        packet: dict[str, Any],
        f: Flow,
        app: str,
        stage: str,
        rule: dict[str, Any] | None,
        verdict: str = "deny",
        rules: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any] | None:
        """Log a packet's connection, denied by flow `f` or (`verdict` "allow") allowed with
        `f` the last flow that allowed it and `rules` every deciding flow's {"app", "stage",
        "table", "rule"}: the line written, or None when its 5-tuple was logged in the last
        DEDUP_SECONDS (or the packet is not IP)."""
        self.packet_ins.labels(f"{dpid:016x}").inc()
        proto = packet.get("ip_proto")
        family = 4 if "ipv4_src" in packet else 6
        src, dst = packet.get(f"ipv{family}_src"), packet.get(f"ipv{family}_dst")
        if proto is None or src is None:
            return None
        name = PROTOCOL_NAMES.get(proto, str(proto))
        sport, dport = packet.get(f"{name}_src"), packet.get(f"{name}_dst")
        key = (src, dst, proto, sport, dport)
        if now - self._seen.get(key, float("-inf")) < DEDUP_SECONDS:
            return None
        self._seen.pop(key, None)
        self._seen[key] = now
        while len(self._seen) > DEDUP_LIMIT:
            self._seen.popitem(last=False)
        line: dict[str, Any] = {
            "time": _time(now),
            "switch": f"{dpid:016x}",
            "port": port,
            "port_name": port_name,
            "src": src,
            "dst": dst,
            "proto": name,
            "sport": sport,
            "dport": dport,
        }
        icmp = packet.get(f"icmpv{family}_type")
        if icmp is not None:
            line["icmp_type"] = icmp
        line.update(verdict=verdict, app=app, table=f.table, stage=stage, rule=rule)
        if rules is not None:
            line["rules"] = rules
        self.recent.append(line)
        self.lines.labels(app).inc()
        self._append(json.dumps(line))
        return line

    def _append(self, text: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(text + "\n")
            self._write_failed = False
        except OSError as exc:
            if not self._write_failed:  # once per failure spell, not per line
                LOG.error("flow log: cannot write to %s: %s", self.settings.path, exc)
            self._write_failed = True
