"""Tagged frames from a host, on the VNF lab and on its fake twin: the cases and the fake's answers.

The fake mirrors topologies/vnflab.py port for port: s1 has h1 on port 1, the link to s2 on
port 2 and the virtual-firewall's replicas 0 and 1 on ports 3/4 and 5/6 (the seed rules: 22 is
dropped); s2 has h2 on port 1 and the link on port 2. The chain sends h1 -> h2 on 80, 443, 22
and 5201 through the firewall, so its VLAN ids are 1 to 4 (apps/chains/compile.py, `tag`).
tests/integration/test_vnf_mininet.py asks the real lab the same questions.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.chains import ServiceChains
from apps.l2_learning import L2Learning
from controller.config import load_config
from controller.core import Core
from tests.fakenet import BROADCAST, FakeNetwork
from topologies.vnflab import CHAIN, ENDPOINTS
from vnf.naming import port_name

H1, H2 = "00:00:00:00:00:01", "00:00:00:00:00:02"
IP = {H1: "10.0.0.1", H2: "10.0.0.2"}
FW = "virtual-firewall"
CHAIN_VIDS = (1, 2, 3, 4)  # (chain 0, hop 0, replica 0 or 1, side a or b)
TAGS = [(0,), *((v,) for v in CHAIN_VIDS), (5,), (7,), (4095,), (5, 7), (1, 5)]
PORTS = (22, 80, 8080)  # dropped by the firewall VNF; through it; outside the chain's class


@dataclass(frozen=True)
class Case:
    tags: tuple[int, ...]  # 802.1Q VIDs, outermost first; () is untagged
    dport: int
    sport: int  # tells the cases apart on the real lab's wire

    def __str__(self) -> str:
        return f"tags={list(self.tags)} tcp/{self.dport}"


@dataclass(frozen=True)
class Answer:
    reached: bool  # the frame got to h2's wire
    taken: bool  # h2 took it in (and would answer)
    crossed: bool  # it came out of a firewall replica


def cases() -> list[Case]:
    """Every tag stack on every port, then the untagged frames they must not outdo."""
    out = [(t, p) for t in TAGS for p in PORTS] + [((), p) for p in PORTS]
    return [Case(t, p, 42000 + i) for i, (t, p) in enumerate(out)]


def expected(case: Case) -> Answer:
    """What the controller promises: a tagged frame from a host goes nowhere; an untagged one
    gets its verdict (docs/security.md, "Hosts and VLAN tags")."""
    if case.tags:
        return Answer(False, False, False)
    through = case.dport != 8080
    passes = case.dport != 22
    return Answer(passes, passes, through and passes)


def no_ssh(pkt: dict) -> bool:
    return pkt.get("tcp_dst") != 22


def fake_vnf_lab(tmp_path, apps=(), extra: str = "") -> FakeNetwork:
    """The lab on fake switches, with chains, L2 learning and `apps` loaded, hosts announced."""
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(ENDPOINTS + CHAIN + extra)
    core = Core()
    for app in (L2Learning, ServiceChains, *apps):
        core.add_app(app)
    core.configure(load_config(str(cfg)), 1000.0)
    net = FakeNetwork(core)
    for dpid in (1, 2):
        net.add_switch(dpid, 6 if dpid == 1 else 2)
    net.link(1, 2, 2, 2)
    net.add_host(H1, 1, 1)
    net.add_host(H2, 2, 1)
    for replica, (a, b) in enumerate(((3, 4), (5, 6))):
        names = (port_name(FW, replica, "a"), port_name(FW, replica, "b"))
        net.add_bump(1, a, b, names, no_ssh)
    net.start()
    for mac in (H1, H2):
        net.send(mac, BROADCAST, 0x0806, arp_spa=IP[mac], arp_tpa="10.0.0.254")
    return net


def send(net: FakeNetwork, case: Case):
    """h1 sends the case's TCP SYN to h2."""
    return net.send(
        H1,
        H2,
        0x0800,
        tags=case.tags,
        ipv4_src=IP[H1],
        ipv4_dst=IP[H2],
        ip_proto=6,
        tcp_src=case.sport,
        tcp_dst=case.dport,
    )


def fake_answer(net: FakeNetwork, case: Case) -> Answer:
    got = send(net, case)
    return Answer(any(host == H2 for host, _ in got.frames), H2 in got.hosts, bool(got.bumps))
