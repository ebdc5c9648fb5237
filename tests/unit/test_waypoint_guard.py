"""A waypointed service's backends take its port only from the waypoint (issue 15): with
microsegmentation loaded, a host that goes straight to a backend's IP:port is dropped, so the
waypoint's routes and AuthorizationPolicies cannot be bypassed; the waypoint's own connections
pass, other ports are unaffected, and a trace names the rule. On the fake two-switch lab of
test_waypoint.py (c1 and v1-a on switch 1; the waypoint replica, v1-b and v2-a on switch 2)."""

from __future__ import annotations

import pytest

from apps.microseg import Microseg
from controller.config import load_config
from controller.guards import BackendGuard
from controller.trace.tracer import Tracer
from tests.fakenet import frame, payload_for
from tests.unit.test_trace import FakeSwitches
from tests.unit.test_waypoint import (
    C1,
    ENDPOINTS,
    IP,
    MESH,
    V1A,
    V1B,
    V2A,
    VIP,
    WAYPOINT_IP,
    WMAC,
    fake_runner,  # noqa: F401  (autouse: no real Envoy)
    lab,
    syn,
)

ISOLATE_V1 = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: v1-from-waypoint}
spec:
  podSelector: {matchLabels: {version: v1}}
  ingress:
    - from: [{ipBlock: {cidr: 10.0.0.250/32}}]
      ports: [{protocol: TCP, port: 80}]
"""
# user-service without request conditions: no waypoint.
PLAIN = (
    ENDPOINTS
    + f"services:\n  - name: user-service\n    vip: {VIP}\n    port: 80\n"
    + "    backends: [{endpoint: v1-a}]\n"
    + MESH
)


def tcp(net, src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, port: int, sport=41000):
    """A SYN from src to dst_ip:port: the hosts it reached."""
    fields = {"ipv4_src": src_ip, "ipv4_dst": dst_ip, "ip_proto": 6}
    fields |= {"tcp_src": sport, "tcp_dst": port, "tcp_flags": 0x002}
    return net.send(src_mac, dst_mac, 0x0800, **fields).hosts


def direct(net, dst_mac: str, port: int = 80, sport=41000) -> bool:
    """Whether c1's SYN straight to a backend's own address reaches it."""
    return tcp(net, C1, dst_mac, IP[C1], IP[dst_mac], port, sport) == [dst_mac]


def from_waypoint(net, dst_mac: str, port: int = 80, sport=42000) -> bool:
    return tcp(net, WMAC, dst_mac, WAYPOINT_IP, IP[dst_mac], port, sport) == [dst_mac]


@pytest.fixture
def guarded(tmp_path):
    return lab(tmp_path, apps=(Microseg,))


def test_the_services_app_declares_every_backend_port_its_waypoint_sends_to(guarded):
    _, _, _ = guarded
    ms = guarded[0].core.apps[-1]
    waypoint = ((WAYPOINT_IP, WMAC),)
    assert ms.guards == tuple(
        BackendGuard(IP[mac], 80, waypoint, ("user-service",)) for mac in (V1A, V1B, V2A)
    )


def test_a_backend_is_reached_through_the_vip_and_by_the_waypoint_never_directly(guarded):
    net, _, _ = guarded
    for sport in range(41000, 41010):
        assert syn(net, sport).hosts == [WMAC]  # the VIP: to the waypoint, as before
    for mac in (V1A, V1B, V2A):  # same switch (v1-a) and across the fabric (v1-b, v2-a)
        assert not direct(net, mac), mac
        assert from_waypoint(net, mac), mac


def test_other_ports_of_a_backend_and_other_hosts_are_unaffected(guarded):
    net, _, _ = guarded
    for mac in (V1A, V2A):
        assert direct(net, mac, 22) and direct(net, mac, 8080)
    assert tcp(net, V1B, C1, IP[V1B], IP[C1], 80) == [C1]  # c1 is no backend: its 80 is open
    # A backend's own answers on its guarded port go back to whoever it answers.
    assert tcp(net, V1A, C1, IP[V1A], IP[C1], 40000) == [C1]


def test_a_host_forging_the_waypoints_address_is_not_the_waypoint(guarded):
    net, _, _ = guarded
    assert tcp(net, C1, V1A, IP[V1B], IP[V1A], 80) == []
    assert tcp(net, C1, V1A, WAYPOINT_IP, IP[V1A], 80) == []  # its own MAC: not the replica's
    assert from_waypoint(net, V1A)  # the replica itself still passes


def as_replica(net, at: str, dst_mac: str, sport: int) -> list[str]:
    """The host `at` sends a SYN with the replica's MAC and address (forged byte by byte) to
    a backend's port 80: the hosts the SYN reached (not the L2 stage's ARP probe of the
    replica's port that the claim of its MAC sets off, controller/mac_moves.py)."""
    fields = {"ipv4_src": WAYPOINT_IP, "ipv4_dst": IP[dst_mac], "ip_proto": 6}
    fields |= {"tcp_src": sport, "tcp_dst": 80, "tcp_flags": 0x002}
    got = net.inject(at, frame(dst_mac, WMAC, 0x0800, payload_for(0x0800, fields)))
    return [host for host, f in got.frames if f.get("ip_proto") == 6]


def test_a_host_forging_both_the_replicas_address_and_mac_elsewhere_is_dropped(guarded):
    """The replica is bound to the port it sits on, as endpoints are: its address and MAC
    from any other edge port are refused at the edge, and the real replica (on switch 2,
    across the fabric from v1-a) still passes."""
    net, _, _ = guarded
    for at in (C1, V1B):  # another switch than the replica's, and the replica's own
        for sport, dst in enumerate((V1A, V1B, V2A), 43000):
            if dst != at:
                assert as_replica(net, at, dst, sport) == [], (at, dst)
    for mac in (V1A, V1B, V2A):
        assert from_waypoint(net, mac), mac
    assert syn(net).hosts == [WMAC]  # the VIP still reaches the real replica


def test_the_replicas_mac_is_pinned_to_its_port_as_an_endpoints_mac_is(guarded):
    """The L2 stage refuses a claim of the replica's MAC from another edge port (reason
    "pinned", controller/mac_moves.py) whatever address it carries: frames to the replica
    keep going to its port."""
    net, app, _ = guarded
    l2 = net.core.apps[0]
    assert WMAC in l2.pinned
    refused = l2.refused.labels("pinned")._value.get()
    fields = {"ipv4_src": IP[C1], "ipv4_dst": IP[V1A], "ip_proto": 17, "udp_src": 1, "udp_dst": 9}
    net.inject(C1, frame(V1A, WMAC, 0x0800, payload_for(0x0800, fields)))
    assert l2.refused.labels("pinned")._value.get() == refused + 1
    assert l2.hosts[WMAC] == (2, 2)
    assert tcp(net, C1, WMAC, IP[C1], WAYPOINT_IP, 15000) == [WMAC]


def test_without_microseg_nothing_guards_the_backends(tmp_path):
    """The documented limit (docs/waypoint.md): the services app alone cannot drop them."""
    net, _, _ = lab(tmp_path)
    assert direct(net, V1A) and direct(net, V2A)


def test_the_guard_follows_the_config_in_the_same_reload(guarded, tmp_path):
    net, _, path = guarded
    (tmp_path / "lab.yaml").write_text(PLAIN)
    net.deliver(net.core.reload(lambda: load_config(path), net.now))
    assert net.core.apps[-1].guards == ()
    assert direct(net, V1A) and direct(net, V2A)  # no waypoint: nothing to bypass


def test_a_policy_that_isolates_the_backends_still_judges_the_waypoint(tmp_path):
    """With policies enforcing (conntrack on), the guard comes before them, and the waypoint's
    connection is judged by the backend's ingress policy next: here it must be allowed by an
    ipBlock, as the docs say."""
    (tmp_path / "netpol.yaml").write_text(ISOLATE_V1)
    from tests.unit.test_waypoint import config

    path = config(tmp_path, ["traffic-routing.yml"])
    with open(path, "a") as f:
        f.write(f"policies: [{tmp_path / 'netpol.yaml'}]\n")
    net, _, _ = lab(tmp_path, path, apps=(Microseg,))
    assert not direct(net, V1A) and not direct(net, V2A)
    assert from_waypoint(net, V1A) and from_waypoint(net, V2A)
    assert not from_waypoint(net, V1A, 22)  # isolated: only 80 is allowed, and only to it
    assert direct(net, V2A, 22)  # v2 is not isolated


def test_a_trace_names_the_guard_that_drops_a_direct_connection(guarded):
    net, _, _ = guarded
    tracer = Tracer(net.core, FakeSwitches(net), lambda fn: fn())
    answer = tracer.trace(IP[C1], IP[V2A], "tcp", 80)
    assert answer["verdict"] == "drop"
    decided = answer["decided_by"]
    assert (decided["stage"], decided["app"]) == ("microseg_egress", "microseg")
    assert decided["rule"] == {
        "kind": "waypoint only",
        "action": "deny",
        "decides": True,
        "services": ["user-service"],
        "backend": f"{IP[V2A]}:80",
        "waypoints": [WAYPOINT_IP],
        "text": (
            f"backend {IP[V2A]}:80/tcp of waypointed service user-service accepts only the "
            f"waypoint ({WAYPOINT_IP}): a direct connection would bypass its L7 policy"
        ),
    }
    assert tracer.trace(IP[C1], IP[V2A], "tcp", 22)["verdict"] == "forward"


def test_a_reload_rolled_back_gives_microseg_the_services_settings_in_force_again(
    guarded, tmp_path, monkeypatch
):
    """CoreView.settings_of during a rollback: the previous config's, not the refused one's."""
    net, _, path = guarded
    ms = net.core.apps[-1]
    before = ms.guards
    configure, calls = Microseg.configure, []

    def fails_once(self, settings, now):
        configure(self, settings, now)
        calls.append(self.guards)
        if len(calls) == 1:
            raise RuntimeError("a bug while applying")

    monkeypatch.setattr(Microseg, "configure", fails_once)
    (tmp_path / "lab.yaml").write_text(PLAIN)
    net.deliver(net.core.reload(lambda: load_config(path), net.now))
    assert calls == [(), before]  # saw the new config's, then the one in force again
    assert ms.guards == before and not direct(net, V1A)
