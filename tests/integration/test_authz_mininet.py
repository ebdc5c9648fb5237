"""The waypoint's AuthorizationPolicy and PeerAuthentication in Mininet (issue 15, slice 2):
curl from lab hosts with the certificates the controller's lab CA wrote, through a real Envoy;
and microsegmentation keeping the backends out of reach except through the waypoint.

The lab is topologies/authzlab.py: the seed's `allow-authenticated` (web-service may GET and
POST anything) and `api-access-policy` (web-service or mobile-service may GET and POST
/api/v1/*) under its STRICT `require-mtls`, ORed as Istio does.
"""

import json
import urllib.request

import pytest

from tests.integration.conftest import require_lab
from topologies.authzlab import VIP, authz_lab
from topologies.serviceslab import IPS
from topologies.wait import until
from topologies.waypointlab import WAYPOINT
from vnf.waypoint.runner import replica_mac

API = f"https://{VIP}:80/api/v1/users"
ADMIN = f"https://{VIP}:80/admin"
HEALTH = f"http://{VIP}:80/healthz"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    require_lab()
    with authz_lab(tmp_path_factory.mktemp("authz")) as c:
        yield c


def test_an_allowed_principal_method_and_path_get_200(env):
    assert env.curl("h12", API, cert="mobile") == ("200", 0)
    assert env.curl("h12", API, "POST", cert="mobile") == ("200", 0)
    assert env.curl("h11", API, cert="web") == ("200", 0)


def test_a_wrong_method_path_or_principal_gets_403(env):
    assert env.curl("h12", API, "DELETE", cert="mobile")[0] == "403"  # method
    assert env.curl("h12", ADMIN, cert="mobile")[0] == "403"  # path
    assert env.curl("h13", API, cert="nobody")[0] == "403"  # principal
    assert env.curl("h11", API, "DELETE", cert="web")[0] == "403"
    # allow-authenticated names no path: ORed with api-access-policy, web may GET /admin.
    assert env.curl("h11", ADMIN, cert="web") == ("200", 0)


def test_strict_refuses_a_client_without_a_certificate_at_the_handshake(env):
    # TLS 1.3: the client may finish its side before the server's alert arrives, so curl
    # reports it while connecting (35), sending (55) or reading (56); never an HTTP status.
    for _ in range(5):
        status, code = env.curl("h12", API)
        assert status == "000" and code in (35, 55, 56), (status, code)
    status, code = env.curl("h13", HEALTH)  # plain HTTP: not even TLS
    assert status == "000" and code in (52, 56), (status, code)  # closed, no answer


def test_a_backend_is_not_reached_directly_only_through_the_waypoint(env):
    """Microseg drops a connection to api-1's or api-2's port 80 that does not come from the
    waypoint; without it, this request would skip mTLS and every policy above."""
    for backend in ("h21", "h31"):
        status, code = env.curl("h12", f"http://{IPS[backend]}:80/api/v1/users")
        assert status == "000" and code == 28, (backend, status, code)  # dropped: timed out
        assert env.curl("h12", f"http://{IPS[backend]}:8080/") == ("200", 0)  # other ports
    assert env.curl("h12", API, cert="mobile") == ("200", 0)  # through the VIP


def test_a_host_with_the_replicas_mac_and_address_does_not_pass_as_the_waypoint(env):
    """h13 takes the waypoint replica's MAC and address on its interface and goes straight to
    a backend (its MAC set by hand, so no ARP is needed): microseg binds the replica to its own
    port, so the SYN drops at h13's edge; meanwhile the real replica serves the VIP. (Before
    the binding, Open vSwitch dropped it too while the replica answered the L2 stage's probe
    of its port: a live MAC's move is refused, controller/mac_moves.py.)"""
    host, intf = env.lab.host("h13"), env.lab.host("h13").defaultIntf().name
    own_mac, own_cidr = host.MAC(), host.cmd(f"ip -o -4 addr show dev {intf}").split()[3]
    forged = [f"ip link set dev {intf} address {replica_mac(WAYPOINT)}"]
    forged += [f"ip addr flush dev {intf}", f"ip addr add {WAYPOINT}/8 dev {intf}"]
    for backend in ("h21", "h31"):
        forged.append(
            f"ip neigh replace {IPS[backend]} lladdr {env.lab.host(backend).MAC()} dev {intf}"
        )
    host.cmd(" && ".join(forged))
    try:
        shown = host.cmd(f"cat /sys/class/net/{intf}/address; ip -o -4 addr show dev {intf}")
        assert replica_mac(WAYPOINT) in shown and f"{WAYPOINT}/8" in shown, shown
        for backend in ("h21", "h31"):
            status, code = env.curl("h13", f"http://{IPS[backend]}:80/api/v1/users")
            assert status == "000" and code == 28, (backend, status, code)  # dropped
            assert env.curl("h12", API, cert="mobile") == ("200", 0)  # the real replica
    finally:
        host.cmd(
            f"ip link set dev {intf} address {own_mac} && ip addr flush dev {intf} && "
            f"ip addr add {own_cidr} dev {intf} && ip neigh flush dev {intf}"
        )
    assert until(lambda: env.curl("h13", f"http://{IPS['h21']}:8080/") == ("200", 0), 20, 1)
    assert env.curl("h12", API, cert="mobile") == ("200", 0)


def test_the_trace_of_a_direct_connection_names_the_guard(env):
    """Open vSwitch's own ofproto/trace, named by the controller (GET /api/v1/trace)."""
    url = f"http://127.0.0.1:{env.metrics_port}/api/v1/trace?src=10.0.0.2&dst={IPS['h31']}"
    with urllib.request.urlopen(url + "&proto=tcp&dport=80", timeout=30) as reply:
        answer = json.load(reply)
    assert answer["verdict"] == "drop", json.dumps(answer, indent=1)
    decided = answer["decided_by"]
    assert (decided["switch"], decided["stage"]) == ("lf1", "microseg_egress")
    rule = decided["rule"]
    assert (rule["kind"], rule["backend"], rule["services"]) == (
        "waypoint only",
        f"{IPS['h31']}:80",
        ["api"],
    )


def test_permissive_takes_plain_http_judged_by_the_rules_without_principals(env):
    mtls = env.folder / "policies" / "mtls-policy.yml"
    seed = mtls.read_text()
    mtls.write_text(seed.replace("mode: STRICT", "mode: PERMISSIVE"))
    try:
        assert until(lambda: env.curl("h13", HEALTH)[0] == "200", 20, 0.5), env.ctl.log()[-2000:]
        assert env.curl("h13", f"http://{VIP}:80/api/v1/users")[0] == "403"  # needs a principal
        assert env.curl("h11", HEALTH)[0] == "403"  # another address
        assert env.curl("h12", API, cert="mobile") == ("200", 0)  # mTLS still taken
        assert env.curl("h12", ADMIN, cert="mobile")[0] == "403"
    finally:
        mtls.write_text(seed)
        assert until(lambda: env.curl("h13", HEALTH)[0] == "000", 20, 0.5)
