"""The L7 waypoint: the seed's request-level routing compiled for Envoy, checked by Envoy itself,
steered to by the switches (fake network), and fed to a running waypoint without a restart."""

from __future__ import annotations

import json
import logging
import os
import shutil
import textwrap

import pytest

import apps.services.waypoint as waypoint_mod
from apps.l2_learning import L2Learning
from apps.services import Services
from apps.services.compile import vip_mac
from apps.services.waypoint import WaypointDriver, rendered
from controller.config import load_config
from controller.core import Core
from tests.fakenet import BROADCAST, FakeNetwork
from vnf.waypoint import envoy
from vnf.waypoint.model import Cluster, Endpoint, HttpMatch, Listener, Plan, Route, StringMatch
from vnf.waypoint.runner import replica_mac

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
VIP = "10.0.100.10"
WAYPOINT_IP = "10.0.0.250"
WMAC = replica_mac(WAYPOINT_IP)
C1, V1A, V1B, V2A = (f"00:00:00:00:00:0{i}" for i in range(1, 5))
IP = {C1: "10.0.0.1", V1A: "10.0.0.3", V1B: "10.0.0.4", V2A: "10.0.0.5"}
ENDPOINTS = textwrap.dedent(
    f"""\
    endpoints:
      - {{name: c1, ip: {IP[C1]}}}
      - {{name: v1-a, ip: {IP[V1A]}, labels: {{app: user-service, version: v1}}}}
      - {{name: v1-b, ip: {IP[V1B]}, labels: {{app: user-service, version: v1}}}}
      - {{name: v2-a, ip: {IP[V2A]}, labels: {{app: user-service, version: v2}}}}
    """
)
MESH = f"mesh:\n  waypoint: {{bridge: s1, addresses: [{WAYPOINT_IP}/8]}}\n"


def config(tmp_path, routing: list[str], mesh: str = MESH, services: str | None = None) -> str:
    """A lab config in tmp_path (its path returned): the seed's files copied there unmodified."""
    names = []
    for name in routing:
        src = os.path.join(DATA, "seed-routing", name)
        if os.path.exists(src):
            shutil.copy(src, tmp_path / name)
        names.append(str(tmp_path / name))
    services = services or f"services:\n  - {{name: user-service, vip: {VIP}, port: 80}}\n"
    text = ENDPOINTS + services + f"routing: {json.dumps(names)}\n" + mesh
    (tmp_path / "lab.yaml").write_text(text)
    return str(tmp_path / "lab.yaml")


def settings_of(path: str):
    core = Core()
    core.add_app(Services)
    return core.parse(load_config(path)).apps["services"]


class FakeRunner:
    """Stands for vnf.waypoint.runner.Runner: records what the driver asks, runs nothing."""

    made: list[FakeRunner] = []

    bridge = True  # whether the bridge exists yet

    def __init__(self, spec) -> None:
        self.spec, self.calls, self.version = spec, [], None
        FakeRunner.made.append(self)

    def bridge_exists(self) -> bool:
        return FakeRunner.bridge

    def start(self) -> None:
        self.calls.append("start")

    def configure(self, lds: str, cds: str, version: str, vips) -> None:
        self.calls.append(("configure", version, tuple(vips)))
        self.version, self.lds, self.cds = version, json.loads(lds), json.loads(cds)

    def serving(self, i: int, version: str) -> bool:
        return version == self.version

    def stop(self) -> None:
        self.calls.append("stop")

    def announce(self, i: int) -> None:
        self.calls.append(("announce", i))

    def admin_socket(self, i: int) -> str:
        return f"/nonexistent/osken-waypoint-test/{i}.sock"  # no statistics to scrape


@pytest.fixture(autouse=True)
def fake_runner(monkeypatch):
    """Every test here: no real replica is ever started (the machine's lab is shared)."""
    FakeRunner.made, FakeRunner.bridge = [], True
    monkeypatch.setattr(waypoint_mod, "Runner", FakeRunner)
    monkeypatch.setattr(WaypointDriver, "_spawn", lambda self, target: target())
    return FakeRunner


# --- compiled for Envoy ------------------------------------------------------------------------


def test_the_seeds_canary_rule_and_90_10_split_compile_to_routes_envoy_accepts(tmp_path):
    s = settings_of(config(tmp_path, ["traffic-routing.yml"]))
    [x] = s.plan.listeners
    assert (x.name, x.vip, x.port) == ("user-service", VIP, 80)
    canary, rest = x.routes
    assert canary.match.headers == (("canary", StringMatch("exact", "true")),)
    assert rest.match is None
    clusters = {c.name: c for c in s.plan.clusters}
    assert clusters[canary.cluster].endpoints == (Endpoint(IP[V2A], 80, 1),)
    # v1 90 shared by its two endpoints, v2 10: exact per request as 9/9/2
    assert clusters[rest.cluster].endpoints == (
        Endpoint(IP[V1A], 80, 9),
        Endpoint(IP[V1B], 80, 9),
        Endpoint(IP[V2A], 80, 2),
    )
    assert envoy.check(s.plan) is None
    [service] = s.services
    assert service.method == "waypoint" and [b.mac for b in service.backends] == [WMAC]
    listeners, _ = envoy.resources(s.plan)
    routes = listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    first = routes["virtual_hosts"][0]["routes"][0]["match"]
    assert first["headers"] == [{"name": "canary", "string_match": {"exact": "true"}}]


def test_the_seeds_mobile_user_agent_rule_becomes_a_regex_header_route(tmp_path):
    (tmp_path / "subsets.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: mobile}
            spec: {host: mobile-service, subsets: [{name: v2, labels: {version: v2}}]}
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: web}
            spec: {host: web-service, subsets: [{name: v1, labels: {version: v1}}]}
            """
        )
    )
    endpoints = (
        "  - {name: m2, ip: 10.0.0.6, labels: {app: mobile-service, version: v2}}\n"
        "  - {name: w1, ip: 10.0.0.7, labels: {app: web-service, version: v1}}\n"
    )
    path = config(
        tmp_path,
        ["istio-configuration.yml", "subsets.yaml"],
        services=endpoints + f"services:\n  - {{name: service, vip: {VIP}, port: 80}}\n",
    )
    s = settings_of(path)
    mobile, web = s.plan.listeners[0].routes
    assert mobile.match.headers == (("user-agent", StringMatch("regex", ".*Mobile.*")),)
    clusters = {c.name: c.endpoints for c in s.plan.clusters}
    assert clusters[mobile.cluster] == (Endpoint("10.0.0.6", 80, 1),)
    assert clusters[web.cluster] == (Endpoint("10.0.0.7", 80, 1),)
    assert envoy.route_match(mobile.match)["headers"] == [
        {"name": "user-agent", "string_match": {"safe_regex": {"regex": ".*Mobile.*"}}}
    ]


def test_the_seeds_httproute_content_type_match_and_backend_weights(tmp_path):
    endpoints = (
        "  - {name: api, ip: 10.0.0.6, labels: {app: api-service}}\n"
        "  - {name: canary, ip: 10.0.0.7, labels: {app: api-service-canary}}\n"
    )
    services = endpoints + "services:\n  - {name: advanced-gateway, vip: 10.0.100.11, port: 80}\n"
    s = settings_of(config(tmp_path, ["gateway-api.yml"], services=services))
    [route] = s.plan.listeners[0].routes
    assert route.match.headers == (("content-type", StringMatch("exact", "application/json")),)
    assert s.plan.clusters[0].endpoints == (
        Endpoint("10.0.0.6", 8080, 9),
        Endpoint("10.0.0.7", 8080, 1),
    )


def test_an_httproute_regular_expression_re2_refuses_is_refused_at_its_value(tmp_path):
    endpoints = "  - {name: api, ip: 10.0.0.6, labels: {app: api-service}}\n"
    services = endpoints + "services:\n  - {name: advanced-gateway, vip: 10.0.100.11, port: 80}\n"
    path = config(tmp_path, ["gateway-api.yml"], services=services)
    seed = (tmp_path / "gateway-api.yml").read_text()
    (tmp_path / "gateway-api.yml").write_text(
        seed.replace(
            'value: "application/json"', 'type: RegularExpression\n        value: "a{9999}"'
        )
    )
    with pytest.raises(Exception) as refused:
        settings_of(path)
    assert (
        "gateway-api.yml:27: spec.rules[0].matches[0].headers[0].value: 'a{9999}' is not an RE2 "
        "regular expression (invalid repetition size: {9999})"
    ) in str(refused.value)


def test_gateway_api_matches_go_most_specific_first_whatever_their_order(tmp_path):
    (tmp_path / "route.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: user-service}
            spec:
              rules:
                - matches: [{path: {type: PathPrefix, value: /api}}]
                  backendRefs: [{name: user-service}]
                - matches: [{path: {type: PathPrefix, value: /api/v2}, method: GET}]
                  backendRefs: [{name: user-service}]
                - matches: [{path: {type: Exact, value: /api/v2/x}}]
                  backendRefs: [{name: user-service}]
                - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]
                  backendRefs: [{name: user-service}]
            """
        )
    )
    s = settings_of(config(tmp_path, ["route.yaml"]))
    got = [(r.match.path.value, r.match.method) for r in s.plan.listeners[0].routes]
    assert got == [
        ("/api/v2/x", None),
        ("/api/v2", StringMatch("exact", "GET")),
        ("/api", StringMatch("exact", "POST")),
        ("/api", None),
    ]


def test_a_regex_envoy_would_refuse_is_refused_at_its_line_and_the_running_config_stays(
    tmp_path, fake_runner
):
    """RE2 (what Envoy's safe_regex compiles with) judges the regex where it is read: the error
    names the file, line and field, not the whole waypoint."""
    path = config(tmp_path, ["traffic-routing.yml"])
    core = Core()
    app = core.add_app(Services)
    core.configure(load_config(path), 1000.0)
    before = app.settings.plan
    seed = (tmp_path / "traffic-routing.yml").read_text()
    (tmp_path / "traffic-routing.yml").write_text(seed.replace("exact: 'true'", "regex: '(('"))
    line = 1 + seed[: seed.index("canary:")].count("\n")
    with pytest.raises(Exception) as info:
        core.parse(load_config(path))
    message = str(info.value)
    assert f"traffic-routing.yml:{line}: spec.http[0].match[0].headers.canary:" in message
    assert "mesh.waypoint" not in message
    assert "'((' is not an RE2 regular expression (missing ): (()" in message
    core.reload(lambda: load_config(path), 1001.0)
    assert app.settings.plan == before


@pytest.mark.parametrize("pattern", ["((", "(?<=a)b", "a{2000}", "a\\", "(?P<x>a)(?P=x)"])
def test_what_re2_refuses_is_refused_and_what_it_takes_is_taken(pattern):
    with pytest.raises(ValueError, match="is not an RE2 regular expression"):
        StringMatch("regex", pattern)
    assert StringMatch("regex", "/users/[0-9]{1,12}(/[a-z]+)?").value


def _envoy_verdict_on_path_regex(pattern: str) -> str | None:
    """What `envoy --mode validate` says of a route whose path is `pattern` (bypassing ours)."""
    path = object.__new__(StringMatch)
    object.__setattr__(path, "kind", "regex")
    object.__setattr__(path, "value", pattern)
    plan = Plan(
        (Listener("s", VIP, 80, (Route(HttpMatch(path=path), "s/0", "here"),)),),
        (Cluster("s/0", (Endpoint("10.0.0.3", 80, 1),)),),
    )
    return envoy.check(plan)


@pytest.mark.parametrize(
    "pattern",
    [
        "",  # Envoy's RegexMatcher.regex has min_len 1
        "\\x{100}",  # Envoy compiles as Latin-1: no code point past 0xFF
        "[\\x{0}-\\x{10FFFF}]",
        "(?:\\pL{1000})",  # too large as UTF-8, fine as Latin-1 (Envoy takes it)
        "/users/[0-9]{1,12}",
        "caf\u00e9+",
    ],
)
def test_our_regex_verdict_is_envoys(pattern):
    envoy_ok = _envoy_verdict_on_path_regex(pattern) is None
    try:
        StringMatch("regex", pattern)
        ours_ok = True
    except ValueError as exc:
        assert "is not an RE2 regular expression" in str(exc)
        ours_ok = False
    assert ours_ok == envoy_ok


def test_a_lone_surrogate_is_refused_as_a_regex_not_crashed_on():
    with pytest.raises(ValueError, match="is not an RE2 regular expression"):
        StringMatch("regex", "a\ud800")


def test_envoys_validation_is_real_a_misspelled_field_is_refused(monkeypatch):
    plan = Plan(
        (Listener("s", VIP, 80, (Route(None, "s/0", "here"),)),),
        (Cluster("s/0", (Endpoint("10.0.0.3", 80, 1),)),),
    )
    assert envoy.check(plan) is None
    good = envoy.cluster
    monkeypatch.setattr(envoy, "cluster", lambda c: {**good(c), "max_pendng_requests": 1})
    assert "max_pendng_requests" in envoy.check(plan)


def test_without_a_waypoint_the_same_rules_are_rejected_by_name_as_before(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="osken_suite.services")
    s = settings_of(config(tmp_path, ["traffic-routing.yml"], mesh=""))
    assert s.plan.listeners == () and s.services[0].method == "exact"
    assert "spec.http.0.match.0.headers: a match on HTTP headers" in caplog.text


def test_every_string_match_kind_maps_to_envoys_matchers():
    m = HttpMatch(
        path=StringMatch("regex", "/users/[0-9]+"),
        method=StringMatch("exact", "GET"),
        without_headers=(("x-debug", StringMatch("prefix", "1")),),
        query=(("v", StringMatch("exact", "2")),),
        ignore_case=True,
    )
    assert envoy.route_match(m) == {
        "safe_regex": {"regex": "/users/[0-9]+"},
        "case_sensitive": False,
        "headers": [
            {"name": ":method", "string_match": {"exact": "GET"}},
            {"name": "x-debug", "string_match": {"prefix": "1"}, "invert_match": True},
        ],
        "query_parameters": [{"name": "v", "string_match": {"exact": "2"}}],
    }


# --- steered by the switches -------------------------------------------------------------------


def lab(tmp_path, text: str | None = None, apps=()):
    """Two switches: c1 and v1-a on 1, the waypoint replica, v1-b and v2-a on 2; `apps` are
    loaded too."""
    path = text or config(tmp_path, ["traffic-routing.yml"])
    core = Core(strict_pipeline=True)
    core.add_app(L2Learning)
    app = core.add_app(Services)
    for extra in apps:
        core.add_app(extra)
    core.configure(load_config(path), 1000.0)
    net = FakeNetwork(core)
    net.add_switch(1, 3)
    net.add_switch(2, 4)
    net.link(1, 1, 2, 1)
    net.add_host(C1, 1, 2)
    net.add_host(V1A, 1, 3)
    net.add_host(WMAC, 2, 2)
    net.add_host(V1B, 2, 3)
    net.add_host(V2A, 2, 4)
    net.now = 1000.0
    net.start()
    for mac in (C1, V1A, V1B, V2A):
        net.send(mac, BROADCAST, 0x0806, arp_spa=IP[mac], arp_tpa="10.0.0.254")
    net.send(WMAC, BROADCAST, 0x0806, arp_spa=WAYPOINT_IP, arp_tpa=WAYPOINT_IP)  # its GARP
    net.advance(1.0)
    return net, app, path


def syn(net, sport=40000):
    fields = {"ipv4_src": IP[C1], "ipv4_dst": VIP, "ip_proto": 6, "tcp_src": sport, "tcp_dst": 80}
    return net.send(C1, vip_mac(VIP), 0x0800, **fields)


def test_the_switches_steer_the_vip_to_the_waypoint_untranslated(tmp_path, fake_runner):
    net, app, _ = lab(tmp_path)
    [runner] = fake_runner.made
    assert runner.calls[0] == "start" and runner.calls[1][0] == "configure"
    assert runner.calls[1][2] == (VIP,)
    for sport in range(40000, 40020):
        got = syn(net, sport)
        assert got.hosts == [WMAC], got.frames
        host, fields = got.frames[0]
        assert fields["eth_dst"] == WMAC and fields["ipv4_dst"] == VIP  # the waypoint owns it
    assert app.live_backends.labels("user-service")._value.get() == 1


def test_nothing_is_steered_to_a_replica_before_its_envoy_serves_the_config(
    tmp_path, fake_runner, monkeypatch
):
    monkeypatch.setattr(FakeRunner, "serving", lambda self, i, version: False)
    net, _, _ = lab(tmp_path)
    assert syn(net).hosts == []  # dropped: never sent to a waypoint that would refuse it
    monkeypatch.setattr(FakeRunner, "serving", lambda self, i, version: True)
    net.advance(1.0)
    assert syn(net).hosts == [WMAC]


def test_a_reload_reaches_the_running_waypoint_without_a_restart(tmp_path, fake_runner):
    net, _, path = lab(tmp_path)
    [runner] = fake_runner.made
    seed = (tmp_path / "traffic-routing.yml").read_text()
    (tmp_path / "traffic-routing.yml").write_text(seed.replace("weight: 90", "weight: 50"))
    net.deliver(net.core.reload(lambda: load_config(path), net.now))
    assert runner.calls.count("start") == 1 and "stop" not in runner.calls
    assert [c[0] for c in runner.calls[1:] if c[0] != "announce"] == ["configure", "configure"]
    weights = [
        e["load_balancing_weight"]
        for e in runner.cds["resources"][1]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert weights == [5, 5, 2]  # v1 50 over two endpoints, v2 10
    assert syn(net).hosts == [WMAC]
    # A config without request conditions: the waypoint stops, the switches serve the VIP.
    plain = ENDPOINTS + (
        f"services:\n  - name: user-service\n    vip: {VIP}\n    port: 80\n"
        "    backends: [{endpoint: v1-a}]\n"
    )
    (tmp_path / "lab.yaml").write_text(plain + MESH)
    net.deliver(net.core.reload(lambda: load_config(path), net.now))
    assert runner.calls[-1] == "stop"
    # v1-a is a backend of the switches' own path now: its MAC is learned from its answer to
    # the app's ARP probe, at the services stage (never from an ARP that reached only classify;
    # the fake hosts do not answer by themselves).
    net.send(V1A, vip_mac(VIP), 0x0806, arp_op=2, arp_spa=IP[V1A], arp_tpa=VIP)
    got = syn(net)
    assert got.hosts == [V1A] and got.frames[0][1]["ipv4_dst"] == IP[V1A]  # NAT, as before


def test_the_rendered_version_follows_the_content():
    plan = Plan((Listener("s", VIP, 80, ()),), ())
    assert rendered(plan)[0] == rendered(Plan((Listener("s", VIP, 80, ()),), ()))[0]
    assert rendered(plan)[0] != rendered(Plan((Listener("s", VIP, 81, ()),), ()))[0]


def test_a_generation_holding_the_waypoints_key_is_readable_by_its_owner_only(tmp_path):
    import stat

    from vnf.waypoint.files import write_generation

    write_generation(str(tmp_path), "v1", '{"key": "-----BEGIN PRIVATE KEY-----"}', "{}")
    gen = tmp_path / "..gen-v1"
    assert stat.S_IMODE(gen.stat().st_mode) == 0o700
    for name in ("lds.json", "cds.json"):
        assert stat.S_IMODE((gen / name).stat().st_mode) == 0o600
    assert (tmp_path / "lds.json").read_text().startswith('{"key"')  # through the swap link


def test_the_waypoint_waits_for_its_bridge_and_gives_up_waiting_when_not_wanted(monkeypatch):
    """The controller starts before Mininet makes the bridge: the replicas start once it exists
    (a clean-clone CI run failed every waypoint test when a missing bridge was final)."""
    import threading
    import time
    import types

    monkeypatch.setattr(waypoint_mod, "BRIDGE_POLL", 0.01)
    FakeRunner.bridge = False
    driver = WaypointDriver(FakeRunner)
    spec = types.SimpleNamespace(bridge="s1")
    driver.runner = runner = FakeRunner(spec)
    waiting = threading.Thread(target=driver._start)
    waiting.start()
    time.sleep(0.1)
    assert runner.calls == []  # not started, not failed: waiting
    FakeRunner.bridge = True
    waiting.join(2)
    assert runner.calls[0] == "start" and driver._failed is None
    FakeRunner.bridge = False
    driver.runner = other = FakeRunner(spec)
    waiting = threading.Thread(target=driver._start)
    waiting.start()
    driver.runner = None  # stopped meanwhile: the wait ends, nothing starts
    waiting.join(2)
    assert not waiting.is_alive() and other.calls == []
