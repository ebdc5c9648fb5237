"""Weighted services on fake switches: VIP ARP, NAT both ways, exact splits, pinning, failover."""

import logging
import os
import shutil
import textwrap
from collections import Counter

import pytest

from apps.l2_learning import L2Learning
from apps.services import Services
from apps.services.compile import CT_ZONE, vip_mac
from apps.services.routing import parse_routing
from controller.config import ConfigError, load_config, load_documents
from controller.core import Core
from controller.packets import arp_frame, connection_of
from tests.fakenet import BROADCAST
from tests.unit.test_l2 import MACS, leaf_spine

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
SEEDS = os.path.join(DATA, "..", "..", "..", "shared", "seeds")
VIP = "10.0.100.10"
VMAC = vip_mac(VIP)
IP = {mac: f"10.0.0.{i}" for i, mac in enumerate(MACS, start=1)}
# Leaf 201: clients c1, c2. Leaf 202: v1-a and a spare. Leaf 203: v2-a and v1-b (the backup).
C1, C2, V1A, SPARE, V2A, V1B = MACS[:6]
ENDPOINTS = textwrap.dedent(
    f"""\
    endpoints:
      - {{name: c1, ip: {IP[C1]}, labels: {{role: client, tier: gold}}}}
      - {{name: c2, ip: {IP[C2]}, labels: {{role: client}}}}
      - {{name: v1-a, ip: {IP[V1A]}, mac: "{V1A}", labels: {{app: user-service, version: v1}}}}
      - {{name: v2-a, ip: {IP[V2A]}, mac: "{V2A}", labels: {{app: user-service, version: v2}}}}
      - {{name: v1-b, ip: {IP[V1B]}, labels: {{app: user-service, version: v1}}}}
    """
)


def service(v1: int = 90, v2: int = 10, method: str = "exact", backup: bool = True) -> str:
    lines = f"""\
    services:
      - name: user-service
        vip: {VIP}
        port: 80
        method: {method}
        backends:
          - {{endpoint: v1-a, weight: {v1}}}
          - {{endpoint: v2-a, weight: {v2}}}
    """
    if backup:
        lines += "      - {endpoint: v1-b, weight: 0, backup: true}\n"
    return textwrap.dedent(lines)


def make(tmp_path, config: str, now: float = 1000.0):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(ENDPOINTS + config)
    core = Core()
    core.add_app(L2Learning)
    app = core.add_app(Services)
    core.configure(load_config(str(cfg)), now)
    net = leaf_spine(core)
    net.now = now
    net.start()
    for mac in (C1, C2, V1A, V2A, V1B):  # every host speaks once: the fabric learns it
        net.send(mac, BROADCAST, 0x0806, arp_spa=IP[mac], arp_tpa="10.0.0.254")
    net.advance(1.0)
    return net, app, cfg


def reload(net, cfg, config: str) -> None:
    cfg.write_text(ENDPOINTS + config)
    net.deliver(net.core.reload(lambda: load_config(str(cfg)), net.now))


def connect(net, client=C1, sport=40000):
    """A client's SYN to the VIP: which backend got it, and with which addresses."""
    got = net.send(
        client,
        VMAC,
        0x0800,
        ipv4_src=IP[client],
        ipv4_dst=VIP,
        ip_proto=6,
        tcp_src=sport,
        tcp_dst=80,
    )
    assert len(got.frames) <= 1, got.frames
    return got.frames[0] if got.frames else (None, None)


def answer(net, backend, client=C1, sport=40000):
    got = net.send(
        backend,
        client,
        0x0800,
        ipv4_src=IP[backend],
        ipv4_dst=IP[client],
        ip_proto=6,
        tcp_src=80,
        tcp_dst=sport,
    )
    return got.frames[0] if got.frames else (None, None)


def test_the_vip_answers_arp_with_its_own_mac(tmp_path):
    net, _, _ = make(tmp_path, service())
    sw = net.switches[201]
    before = len(sw.packet_outs)
    got = net.send(C1, BROADCAST, 0x0806, arp_spa=IP[C1], arp_tpa=VIP)
    replies = sw.packet_outs[before:]
    assert got.hosts == [C1]  # only the asker hears the answer; the request goes no further
    a = connection_of(replies[-1].data) if replies else None
    assert a is None and replies[-1].data[6:12].hex(":") == VMAC
    assert replies[-1].data == arp_frame(2, VMAC, VIP, C1, IP[C1])


def test_connections_are_translated_both_ways_and_clients_only_see_the_vip(tmp_path):
    net, _, _ = make(tmp_path, service(100, 0))
    host, fields = connect(net)
    assert host == V1A
    assert (fields["ipv4_dst"], fields["tcp_dst"], fields["eth_dst"]) == (IP[V1A], 80, V1A)
    assert fields["ipv4_src"] == IP[C1]  # the backend sees the real client
    host, fields = answer(net, V1A)
    assert host == C1
    assert (fields["ipv4_src"], fields["tcp_src"], fields["eth_src"]) == (VIP, 80, VMAC)
    # The rest of the connection is the switch's alone.
    ins = sum(sw.packet_outs.__len__() for sw in net.switches.values())
    assert connect(net)[0] == V1A
    assert sum(len(sw.packet_outs) for sw in net.switches.values()) == ins
    assert any(zone == CT_ZONE for zone, _ in net.connections)


@pytest.mark.parametrize("weights", [(90, 10), (70, 30), (99, 1), (50, 50), (0, 100)])
def test_the_exact_method_splits_new_connections_exactly(tmp_path, weights):
    net, app, _ = make(tmp_path, service(*weights))
    got = Counter(connect(net, sport=20000 + i)[0] for i in range(200))
    assert got[V1A] == 2 * weights[0] and got[V2A] == 2 * weights[1]
    assert app.connections.labels("user-service", "v1-a")._value.get() == 2 * weights[0]


def test_a_weight_shift_moves_new_connections_and_never_established_ones(tmp_path):
    net, _, cfg = make(tmp_path, service(90, 10))
    first = {sport: connect(net, sport=sport)[0] for sport in range(30000, 30020)}
    reload(net, cfg, service(0, 100))
    assert {connect(net, sport=s)[0] for s in range(31000, 31010)} == {V2A}
    for sport, backend in first.items():  # each stays where it began, both ways
        assert connect(net, sport=sport)[0] == backend
        assert answer(net, backend, sport=sport)[1]["ipv4_src"] == VIP


def test_a_backend_whose_port_goes_down_leaves_and_backups_wait_for_all_primaries(tmp_path):
    net, app, _ = make(tmp_path, service(50, 50))
    net.set_link(202, 3, False)  # v1-a's cable
    assert {connect(net, sport=s)[0] for s in range(100, 110)} == {V2A}
    net.set_link(203, 3, False)  # v2-a's too: now the backup serves
    assert {connect(net, sport=s)[0] for s in range(200, 210)} == {V1B}
    assert app.live_backends.labels("user-service")._value.get() == 1
    net.set_link(202, 3, True)
    net.advance(2.0)  # the port's probation: then it is an edge port again
    net.send(V1A, BROADCAST, 0x0806, arp_spa=IP[V1A], arp_tpa="10.0.0.254")
    assert {connect(net, sport=s)[0] for s in range(300, 310)} == {V1A}


def test_fast_failover_groups_watch_the_way_to_each_backend_and_fall_back_to_the_backup(tmp_path):
    net, _, _ = make(tmp_path, service(50, 50))
    ff = [g for g in net.switches[201].groups.values() if g.type == "ff"]
    assert len(ff) == 3  # one per backend the switch knows how to reach
    v1 = next(g for g in ff if "10.0.0.3" in repr(g.buckets[0].actions))
    assert v1.buckets[0].watch_port == 1  # leaf 201 reaches leaf 202 through spine 1
    assert "10.0.0.6" in repr(v1.buckets[2].actions)  # then the backup


def test_the_switch_method_uses_a_select_group_with_the_weights(tmp_path):
    net, _, _ = make(tmp_path, service(90, 10, method="switch"))
    select = [
        g for gid, g in net.switches[201].groups.items() if g.type == "select" and gid >> 24 == 5
    ]
    # 230 of the 256 hash values to v1-a (in two buckets: 229 and a weight-1 one that makes
    # Open vSwitch's table 256 values), 26 to v2-a: 89.84/10.16 (weights.switch_buckets)
    assert [b.weight for b in select[0].buckets] == [229, 1, 26]
    assert select[0].buckets[0].actions == select[0].buckets[1].actions
    assert not net.switches[201].packet_outs or all(
        connection_of(p.data) is None for p in net.switches[201].packet_outs
    )
    got = Counter(connect(net, sport=20000 + i)[0] for i in range(400))
    assert set(got) == {V1A, V2A} and got[V1A] > 300  # hashed: near, not exact
    host, fields = answer(net, got.most_common(1)[0][0], sport=20000)
    assert fields is None or fields["ipv4_src"] == VIP


def test_routing_files_from_the_seed_load_and_http_matches_are_rejected_by_name(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    config = f"""\
    services:
      - {{name: user-service, vip: {VIP}, port: 80}}
    routing: [{os.path.join(DATA, "seed-routing", "traffic-routing.yml")}]
    """
    net, app, _ = make(tmp_path, textwrap.dedent(config))
    s = app.settings.services[0]
    assert [r.split for r in s.routes] == [(("v1-a:80", 45), ("v1-b:80", 45), ("v2-a:80", 10))]
    assert "spec.http.0.match.0.headers" in caplog.text and "HTTP headers" in caplog.text
    got = Counter(connect(net, sport=20000 + i)[0] for i in range(100))
    assert got == Counter({V1A: 45, V1B: 45, V2A: 10})


def test_source_matches_pick_the_route_first_match_wins(tmp_path):
    (tmp_path / "vs.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: networking.istio.io/v1beta1
            kind: VirtualService
            metadata: {name: user-service}
            spec:
              hosts: [user-service.default.svc.cluster.local]
              http:
                - match: [{sourceLabels: {tier: gold}}]
                  route: [{destination: {host: user-service, subset: v2}}]
                - route:
                    - {destination: {host: user-service, subset: v1}, weight: 100}
                    - {destination: {host: user-service, subset: v2}, weight: 0}
            ---
            apiVersion: networking.istio.io/v1beta1
            kind: DestinationRule
            metadata: {name: user-service}
            spec:
              host: user-service
              subsets:
                - {name: v1, labels: {version: v1}}
                - {name: v2, labels: {version: v2}}
            """
        )
    )
    config = f"services:\n  - {{name: user-service, vip: {VIP}, port: 80}}\nrouting: [vs.yaml]\n"
    net, _, _ = make(tmp_path, config)
    assert {connect(net, C1, s)[0] for s in range(100, 110)} == {V2A}  # gold: canary
    assert {connect(net, C2, s)[0] for s in range(100, 110)} <= {V1A, V1B}


def test_httproute_weights_are_relative_and_default_to_one(tmp_path):
    (tmp_path / "route.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: web}
            spec:
              parentRefs: [{name: user-service}]
              rules:
                - backendRefs:
                    - {name: v1-pool, port: 80}
                    - {name: v2-pool, port: 80, weight: 3}
                    - {name: spare-pool, port: 80, weight: 0}
            """
        )
    )
    endpoints = ENDPOINTS.replace("app: user-service, version: v1}}", "app: v1-pool}}", 1)
    endpoints = endpoints.replace("app: user-service, version: v2", "app: v2-pool")
    endpoints = endpoints.replace("app: user-service, version: v1}", "app: spare-pool}")
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(
        endpoints + f"services:\n  - {{name: user-service, vip: {VIP}, port: 80}}\n"
        "routing: [route.yaml]\n"
    )
    core = Core()
    app = core.add_app(Services)
    config = load_config(str(cfg))
    s = app.parse_config(config.section("services"), config).services[0]
    assert s.routes[0].split == (("v1-a:80", 1), ("v2-a:80", 3), ("v1-b:80", 0))


@pytest.mark.parametrize(
    ("config", "where", "message"),
    [
        (
            "services:\n  - {name: s, vip: 10.0.100.1, port: 80, backends: [{endpoint: nope}]}\n",
            "services[0].backends[0].endpoint",
            "no endpoint named 'nope'",
        ),
        (
            "services:\n  - {name: s, vip: 10.0.100.300, port: 80, backends: [{endpoint: c1}]}\n",
            "services[0].vip",
            "not an IPv4 address",
        ),
        (
            "services:\n  - {name: s, vip: 10.0.100.1, port: 80,"
            " backends: [{endpoint: c1, weight: -1}]}\n",
            "services[0].backends[0].weight",
            "minimum",
        ),
        (
            "services:\n  - {name: s, vip: 10.0.100.1, port: 80}\n",
            "services[0]",
            "no backends and no routing",
        ),
    ],
)
def test_bad_services_are_refused_and_located(tmp_path, config, where, message):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(ENDPOINTS + config)
    core = Core()
    core.add_app(Services)
    with pytest.raises(ConfigError) as err:
        core.parse(load_config(str(cfg)))
    assert err.value.where == where and message in str(err.value)


def test_an_undefined_subset_is_refused_with_its_line(tmp_path):
    (tmp_path / "vs.yaml").write_text(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n"
        "metadata: {name: user-service}\nspec:\n  http:\n"
        "    - route:\n        - destination: {host: user-service, subset: v9}\n"
    )
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(
        ENDPOINTS + f"services:\n  - {{name: user-service, vip: {VIP}, port: 80}}\n"
        "routing: [vs.yaml]\n"
    )
    core = Core()
    core.add_app(Services)
    with pytest.raises(ConfigError) as err:
        core.parse(load_config(str(cfg)))
    assert err.value.line == 7 and "subset 'v9'" in str(err.value)


def test_the_switch_sends_new_connections_to_the_backup_before_the_controller_knows(tmp_path):
    net, _, _ = make(tmp_path, service(100, 0))
    net.send(SPARE, BROADCAST, 0x0806, arp_spa=IP[SPARE], arp_tpa="10.0.0.254")
    # v1-a's cable is cut; no port-status reaches the controller, which still picks v1-a.
    # Its switch watches that port: the connection goes to the backup instead.
    net.switches[202].ports[3] = False
    assert connect(net, SPARE, sport=100)[0] == V1B
    net.switches[202].ports[3] = True
    assert connect(net, SPARE, sport=101)[0] == V1A


def test_a_remote_backend_is_watched_on_every_equal_cost_way_toward_it(tmp_path):
    net, _, _ = make(tmp_path, service(100, 0))
    v1 = next(g for g in net.switches[201].groups.values() if g.type == "ff")
    assert [b.watch_port for b in v1.buckets] == [1, 2, 1, 2]  # v1-a both ways, then v1-b
    net.switches[201].ports[1] = False  # one spine link down: v1-a is still reachable
    assert connect(net, sport=100)[0] == V1A


def test_seed_routing_files_are_the_seeds_verbatim():
    if not os.path.isdir(SEEDS):
        pytest.skip("shared/seeds is not beside this checkout")
    seeds = ""
    for name in sorted(os.listdir(SEEDS)):
        with open(os.path.join(SEEDS, name)) as fh:
            seeds += fh.read()
    for name in os.listdir(os.path.join(DATA, "seed-routing")):
        with open(os.path.join(DATA, "seed-routing", name)) as fh:
            assert fh.read() in seeds, name


def test_every_seed_routing_file_loads_and_says_what_it_cannot_enforce(tmp_path, caplog):
    caplog.set_level(
        logging.INFO, logger="osken_suite.services"
    )  # mininet, once imported, makes new loggers its own class, level 25
    folder = tmp_path / "routing"  # a fresh path: files already read elsewhere are not re-read
    shutil.copytree(os.path.join(DATA, "seed-routing"), folder)
    config = f"""\
    services:
      - {{name: user-service, vip: {VIP}, port: 80}}
      - {{name: advanced-gateway, vip: 10.0.100.11, port: 8080, backends: [{{endpoint: v1-a}}]}}
    routing: [{folder}]
    """
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(ENDPOINTS + textwrap.dedent(config))
    core = Core()
    core.add_app(Services)
    core.parse(load_config(str(cfg)))
    text = caplog.text
    assert "gateway-api.yml" in text and "spec.rules.0.matches.0.headers" in text
    assert "istio-configuration.yml" in text and "spec.http.0.match.0.headers" in text
    # read as a security policy now (issue 15), and said to be unenforced without a waypoint
    assert "AuthorizationPolicy default/service-auth is not enforced" in text
    assert "advanced-routing names no service" in text  # its hosts are service.example.com
    assert "spec.trafficPolicy" in text  # connection pools are not the switch's to enforce
    assert "not used by any loaded app" not in text


def test_a_backend_taken_out_of_the_config_drains_then_its_flows_go(tmp_path):
    from apps.services.drain import DRAIN_SECONDS

    net, app, cfg = make(tmp_path, service(0, 100))
    assert connect(net, sport=5000)[0] == V2A
    only_v1 = service(100, 0).replace("      - {endpoint: v2-a, weight: 0}\n", "")
    assert "v2-a" not in only_v1
    reload(net, cfg, only_v1)
    host, fields = connect(net, sport=5000)  # its open connection still reaches it
    assert host == V2A and fields["ipv4_dst"] == IP[V2A]
    assert answer(net, V2A, sport=5000)[1]["ipv4_src"] == VIP
    assert connect(net, sport=5001)[0] == V1A  # new ones never do
    net.advance(DRAIN_SECONDS + 1)
    steering = [
        f
        for t in net.switches[201].tables
        for e in t
        for f in [e.flow]
        if f.match_dict().get("ipv4_dst") == IP[V2A]
    ]
    assert steering == [] and app.draining == []


# --- a backend that calls its own service (hairpin) --------------------------------------------


def serve(net, backend, got):
    """The backend answers the frame it got, as its kernel would: to the sender's address,
    port and MAC. Returns (host, fields) of what came out of the fabric."""
    proto = "tcp" if got["ip_proto"] == 6 else "udp"
    fields = {
        "ipv4_src": got["ipv4_dst"],
        "ipv4_dst": got["ipv4_src"],
        "ip_proto": got["ip_proto"],
        f"{proto}_src": got[f"{proto}_dst"],
        f"{proto}_dst": got[f"{proto}_src"],
    }
    out = net.send(backend, got["eth_src"], 0x0800, **fields)
    assert len(out.frames) <= 1, out.frames
    return out.frames[0] if out.frames else (None, None)


def call(net, client, sport, vip=VIP, port=80, proto=6):
    """A client's first packet to a service, then the backend's answer to what it got:
    (backend host, what it got, client host, what the client got back)."""
    name = "tcp" if proto == 6 else "udp"
    fields = {
        "ipv4_src": IP[client],
        "ipv4_dst": vip,
        "ip_proto": proto,
        f"{name}_src": sport,
        f"{name}_dst": port,
    }
    out = net.send(client, vip_mac(vip), 0x0800, **fields)
    assert len(out.frames) <= 1, out.frames
    if not out.frames:
        return None, None, None, None
    host, got = out.frames[0]
    back_host, back = serve(net, host, got)
    return host, got, back_host, back


def assert_served(client, sport, host, got, back_host, back, vip=VIP, port=80, proto="tcp"):
    """The connection reached a backend and its answer reached the client from the VIP; a
    backend that is the client saw it come from the VIP, any other from the client."""
    assert host is not None, "the connection reached no backend"
    assert got[f"{proto}_dst"] == port and got["ipv4_dst"] == IP[host] and got["eth_dst"] == host
    if host == client:
        assert (got["ipv4_src"], got["eth_src"]) == (vip, vip_mac(vip))
    else:
        assert (got["ipv4_src"], got[f"{proto}_src"]) == (IP[client], sport)
    assert back_host == client, f"the answer went to {back_host}"
    assert (back["ipv4_src"], back[f"{proto}_src"], back["eth_src"]) == (vip, port, vip_mac(vip))
    assert (back["ipv4_dst"], back[f"{proto}_dst"], back["eth_dst"]) == (IP[client], sport, client)


SPARE_ENDPOINT = f'  - {{name: spare, ip: {IP[SPARE]}, mac: "{SPARE}"}}\n'


@pytest.mark.parametrize(
    ("other", "where"), [("v2-a", "another switch"), ("spare", "the same switch")]
)
def test_a_backend_calling_its_own_service_is_served_every_time_and_the_split_holds(
    tmp_path, other, where
):
    """The item: 50/50, 20 new connections from v1-a: the 10 given to v1-a itself are served
    too (from the VIP, out the port they came in on), and the split stays 10/10."""
    config = service(50, 50, backup=False).replace("endpoint: v2-a", f"endpoint: {other}")
    net, app, _ = make(tmp_path, SPARE_ENDPOINT + config)
    net.send(SPARE, BROADCAST, 0x0806, arp_spa=IP[SPARE], arp_tpa="10.0.0.254")
    other_mac = V2A if other == "v2-a" else SPARE
    got = Counter()
    for sport in range(41000, 41020):
        result = call(net, V1A, sport)
        assert_served(V1A, sport, *result)
        got[result[0]] += 1
        # The rest of the connection: the same translation, both ways, with no packet-in.
        ins = sum(len(sw.packet_outs) for sw in net.switches.values())
        assert call(net, V1A, sport)[0] == result[0]
        assert sum(len(sw.packet_outs) for sw in net.switches.values()) == ins
    assert got == {V1A: 10, other_mac: 10}, where
    assert app.connections.labels("user-service", "v1-a")._value.get() == 10


@pytest.mark.parametrize("method", ["exact", "switch"])
def test_a_sole_backend_serves_every_connection_from_itself(tmp_path, method):
    net, _, _ = make(tmp_path, service(100, 0, method=method, backup=False))
    for sport in range(42000, 42020):
        assert_served(V1A, sport, *call(net, V1A, sport))


def test_the_switch_method_serves_hairpin_connections_and_keeps_hashing(tmp_path):
    net, _, _ = make(tmp_path, service(50, 50, method="switch", backup=False))
    got = Counter()
    for sport in range(43000, 43060):
        result = call(net, V1A, sport)
        assert_served(V1A, sport, *result)
        got[result[0]] += 1
    assert set(got) == {V1A, V2A}


def test_a_backup_that_calls_the_service_while_it_serves_is_served_by_itself(tmp_path):
    net, _, _ = make(tmp_path, service(50, 50))
    net.set_link(202, 3, False)  # both primaries' cables: the backup v1-b serves
    net.set_link(203, 3, False)
    for sport in range(44000, 44010):
        result = call(net, V1B, sport)
        assert result[0] == V1B
        assert_served(V1B, sport, *result)


def test_the_switchs_own_failover_to_a_backup_that_is_the_client_is_served(tmp_path):
    """v1-a's cable is cut and no port-status reaches the controller, which still picks
    v1-a; the switch's fast-failover group commits to the backup, the client itself."""
    config = service(100, 0, backup=False) + "      - {endpoint: spare, backup: true}\n"
    net, _, _ = make(tmp_path, SPARE_ENDPOINT + config)
    net.send(SPARE, BROADCAST, 0x0806, arp_spa=IP[SPARE], arp_tpa="10.0.0.254")
    net.advance(1.0)  # the controller places it: the switch's groups fall back to it
    net.switches[202].ports[3] = False
    result = call(net, SPARE, 45000)
    assert result[0] == SPARE
    assert_served(SPARE, 45000, *result)


def test_a_backend_that_is_a_client_of_another_service_is_translated_to_that_services_vip(
    tmp_path,
):
    """v1-a serves both services on the same port; each hairpin comes from its own VIP."""
    other = "10.0.100.11"
    config = service(50, 50, backup=False) + (
        f"  - {{name: other-service, vip: {other}, port: 80, backends: [{{endpoint: v1-a}}]}}\n"
    )
    net, app, _ = make(tmp_path, config)
    for sport in range(46000, 46004):
        assert_served(V1A, sport, *call(net, V1A, sport, vip=other), vip=other)
        assert_served(V2A, sport, *call(net, V2A, sport, vip=other), vip=other)
    got = Counter()
    for sport in range(46100, 46110):
        result = call(net, V1A, sport)
        assert_served(V1A, sport, *result)
        got[result[0]] += 1
    assert got == {V1A: 5, V2A: 5}


def test_udp_to_its_own_service_is_served_both_ways(tmp_path):
    config = service(50, 50, backup=False).replace("port: 80\n", "port: 53\n    protocol: udp\n")
    net, _, _ = make(tmp_path, config)
    got = Counter()
    for sport in range(47000, 47010):
        result = call(net, V1A, sport, port=53, proto=17)
        assert_served(V1A, sport, *result, port=53, proto="udp")
        got[result[0]] += 1
    assert got == {V1A: 5, V2A: 5}


def test_a_host_posing_as_a_backend_to_its_service_gets_its_own_packet_back_not_the_backend(
    tmp_path,
):
    """Without microseg's port binding a host can claim a backend's address; the hairpin
    path then sends the packet back out the port it came in on, to the impostor."""
    net, _, _ = make(tmp_path, service(100, 0, backup=False))
    fields = {"ipv4_src": IP[V1A], "ipv4_dst": VIP, "ip_proto": 6, "tcp_src": 48000, "tcp_dst": 80}
    out = net.send(C1, VMAC, 0x0800, **fields)
    assert out.hosts == [C1]
    assert out.frames[0][1]["ipv4_src"] == VIP


@pytest.mark.parametrize(
    "labels", ["{version: 2}", "{version: 1.10}", "{canary: true}"], ids=["int", "float", "bool"]
)
def test_subset_label_values_must_be_strings(tmp_path, labels):
    path = tmp_path / "dr.yaml"
    path.write_text(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
        "metadata: {name: d}\nspec:\n  host: h\n  subsets:\n"
        f"    - {{name: a, labels: {labels}}}\n"
    )
    (doc,) = load_documents(str(path))
    with pytest.raises(ConfigError, match=r"dr.yaml:7: spec.subsets\[0\].labels.\w+: .* quote"):
        parse_routing(doc)


def test_an_httproute_has_at_most_16_rules(tmp_path):
    """The Gateway API CRD: rules maxItems 16 (and 16 backendRefs per rule)."""
    path = tmp_path / "route.yaml"
    rules = "".join(f"    - backendRefs: [{{name: b{i}, port: 80}}]\n" for i in range(17))
    path.write_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: r}}\nspec:\n  rules:\n{rules}"
    )
    (doc,) = load_documents(str(path))
    with pytest.raises(ConfigError, match=r"route.yaml:5: spec.rules: at most 16 rules"):
        parse_routing(doc)


def test_an_arp_from_any_port_claiming_a_bound_backend_does_not_take_its_connections():
    """One ARP with a fresh source MAC was punted by classify (an unknown source) and the
    services app learned the backend's "MAC" from it before microseg saw it: every new
    connection of that backend went to the impostor. Backends are learned at the services
    stage now, after microseg, which drops a claim to a bound endpoint's address."""
    from controller.packets import arp_frame
    from tests.unit.test_fuzz_inputs import IP as LAB_IP
    from tests.unit.test_fuzz_inputs import fresh_network

    net = fresh_network()  # every app; backend v1-a is MACS[3], bound where it spoke
    net.advance(1.0)
    backend, client, impostor = MACS[3], MACS[1], MACS[5]

    def served_by(sport: int) -> list[str]:
        return net.send(
            client,
            VMAC,
            0x0800,
            ipv4_src=LAB_IP[client],
            ipv4_dst=VIP,
            ip_proto=6,
            tcp_src=sport,
            tcp_dst=80,
        ).hosts

    assert backend in served_by(41000)
    net.inject(impostor, arp_frame(2, "02:00:00:00:66:66", LAB_IP[backend], BROADCAST, "10.0.0.9"))
    net.advance(0.5)
    assert all(impostor not in served_by(42000 + i) for i in range(8))
