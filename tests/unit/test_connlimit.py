"""connectionPool.tcp.maxConnections: a per-service conntrack zone, capped with a zone limit
that the controller sets through ovs-appctl (here a recorder that sets the fake switches'
shared conntrack's limits), refuses connections past the cap; replies and hairpins pass."""

import logging
import subprocess

import pytest

from apps.services.connlimit import ZONES, connection_cap
from apps.services.settings import Service
from controller.config import load_config
from controller.ctlimits import ZoneLimits
from tests.unit.test_services import (
    C1,
    C2,
    ENDPOINTS,
    V1A,
    VIP,
    assert_served,
    call,
    make,
    reload,
)

ZONE = ZONES.first  # the first service's counting zone


def routing(cap: int | None) -> str:
    policy = (
        f"  trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: {cap}}}}}}}\n" if cap else ""
    )
    return (
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
        "metadata: {name: user-service}\nspec:\n  host: user-service\n"
        + policy
        + "---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n"
        "metadata: {name: user-service}\nspec:\n  hosts: [user-service]\n"
        "  tcp:\n    - route:\n        - destination: {host: user-service}\n"
    )


def config(tmp_path, cap: int | None, method: str = "exact", opt_in: bool = True) -> str:
    (tmp_path / "routing.yaml").write_text(routing(cap))
    return (
        f"services:\n  - {{name: user-service, vip: {VIP}, port: 80, method: {method}, "
        f"conntrack_cap: {str(opt_in).lower()}}}\n"
        f"routing: [{tmp_path}/routing.yaml]\n"
    )


class Appctl:
    """ovs-appctl as the lab's one datapath answers it: sets the fake network's zone limits."""

    def __init__(self, net=None, fails: str | None = None) -> None:
        self.limits: dict[int, int] = {}
        self.calls: list[list[str]] = []
        self.fails = fails
        self.net = net

    def __call__(self, args):
        self.calls.append(list(args))
        if self.fails:
            return subprocess.CompletedProcess(args, 1, "", self.fails)
        if args[0] == "dpctl/ct-set-limits":
            for a in args[1:]:
                zone, limit = (int(kv.split("=")[1]) for kv in a.split(","))
                self.limits[zone] = limit
        elif args[0] == "dpctl/ct-del-limits":
            for z in args[1].removeprefix("zone=").split(","):
                self.limits.pop(int(z), None)
        return subprocess.CompletedProcess(args, 0, "", "")


def capped(tmp_path, cap: int | None, method: str = "exact"):
    """A network whose services app sets its zone limits on the fake switches."""
    appctl = Appctl()
    net, app, cfg = make(tmp_path, config(tmp_path, None, method))
    app.zone_limits = ZoneLimits(appctl)
    for sw in net.switches.values():
        sw.zone_limits = appctl.limits  # one datapath for every bridge, as in the lab
    reload(net, cfg, config(tmp_path, cap, method))
    return net, app, cfg, appctl


def close_all(net, zone: int = ZONE) -> None:
    """The counting zone's entries expire (closed, TIME_WAIT over)."""
    for k in [k for k in net.connections if k[0] == zone]:
        del net.connections[k]


@pytest.mark.parametrize("method", ["exact", "switch"])
def test_connections_past_the_cap_are_refused_and_served_again_once_some_end(tmp_path, method):
    net, _, _, appctl = capped(tmp_path, 3, method)
    assert appctl.limits == {ZONE: 3}
    results = [call(net, client, sport) for client in (C1, C2) for sport in (40000, 40001, 40002)]
    served = [r for r in results if r[0] is not None]
    assert len(served) == 3
    assert results[3:] == [(None, None, None, None)] * 3  # the excess reaches no backend
    for (client, sport), r in zip(
        [(C1, 40000), (C1, 40001), (C1, 40002)], results[:3], strict=True
    ):
        assert_served(client, sport, *r)  # replies pass the counting zone too
    # The three held open still pass, both ways, while the excess is refused.
    assert_served(C1, 40000, *call(net, C1, 40000))
    assert call(net, C2, 40003)[0] is None
    close_all(net)
    assert_served(C2, 40004, *call(net, C2, 40004))


def test_a_backend_calling_its_capped_service_is_counted_and_served(tmp_path):
    net, _, _, _ = capped(tmp_path, 2, "switch")
    results = [call(net, V1A, sport) for sport in range(46000, 46004)]
    for sport, r in zip(range(46000, 46002), results[:2], strict=True):
        assert_served(V1A, sport, *r)  # hairpins included: their replies come back counted
    assert results[2:] == [(None, None, None, None)] * 2
    assert V1A in {r[0] for r in results[:2]}, "no hairpin among the served"


def test_the_cap_is_set_on_reload_kept_on_a_refused_one_and_lifted_when_it_goes(tmp_path):
    net, app, cfg, appctl = capped(tmp_path, 3)
    reload(net, cfg, config(tmp_path, 5))
    assert appctl.limits == {ZONE: 5}
    cfg.write_text(ENDPOINTS + "services: [{name: broken}]\n")
    net.deliver(net.core.reload(lambda: load_config(str(cfg)), net.now))
    assert appctl.limits == {ZONE: 5}  # a refused reload: the running cap stays
    reload(net, cfg, config(tmp_path, None))
    assert appctl.limits == {}
    assert call(net, C1, 40000)[0] is not None
    reload(net, cfg, config(tmp_path, 2))
    app.shutdown()
    assert appctl.limits == {} and appctl.calls[-1] == ["dpctl/ct-del-limits", f"zone={ZONE}"]


def test_without_a_local_vswitchd_the_log_says_the_cap_is_not_enforced(tmp_path, caplog):
    net, app, cfg = make(tmp_path, config(tmp_path, None))
    app.zone_limits = ZoneLimits(Appctl(fails="ovs-appctl: cannot connect"))
    with caplog.at_level(logging.INFO):
        reload(net, cfg, config(tmp_path, 3))
    assert "NOT enforced: ovs-appctl: cannot connect" in caplog.text
    assert "at most 3 connections" not in caplog.text


def test_without_conntrack_cap_the_seeds_cap_is_named_not_enforced_and_nothing_is_refused(
    tmp_path, caplog
):
    """Conntrack counts a closed connection until it sweeps it (about 40 s on Open vSwitch 3.1's
    userspace datapath): the seed's maxConnections: 10 refused 98% of the main job's 1,000
    short connections. Without `conntrack_cap: true` the switch sets no cap and says so."""
    appctl = Appctl()
    net, app, cfg = make(tmp_path, config(tmp_path, None, opt_in=False))
    app.zone_limits = ZoneLimits(appctl)
    for sw in net.switches.values():
        sw.zone_limits = appctl.limits
    with caplog.at_level(logging.INFO):
        reload(net, cfg, config(tmp_path, 3, opt_in=False))
    assert appctl.limits == {} and not any(c[0] == "dpctl/ct-set-limits" for c in appctl.calls)
    assert "user-service: maxConnections 3 is not enforced" in caplog.text
    assert "conntrack_cap: true" in caplog.text
    results = [call(net, C1, sport) for sport in range(40000, 40005)]
    assert all(r[0] is not None for r in results)  # five at once, past the unenforced 3
    caplog.clear()
    with caplog.at_level(logging.INFO):
        reload(net, cfg, config(tmp_path, 3, opt_in=False) + "# touched\n")
    assert "is not enforced" not in caplog.text  # said once, not at every reload


def test_only_plain_tcp_services_are_capped(tmp_path):
    _, app, _, _ = capped(tmp_path, 3)
    (s,) = app.settings.services
    assert connection_cap(s) == 3
    assert connection_cap(Service(**{**s.__dict__, "protocol": "udp"})) is None
    assert connection_cap(Service(**{**s.__dict__, "method": "waypoint"})) is None
    assert connection_cap(Service(**{**s.__dict__, "traffic_policies": ()})) is None


def test_a_trace_names_the_cap_as_what_refused_a_connection(tmp_path):
    net, app, _, _ = capped(tmp_path, 3)
    sw = net.switches[201]
    said = [app.explain(201, f) for f in sw.flows() if f.cookie >> 56 == 0x05]
    refused = [e for e in said if e and e.get("kind") == "connection cap"]
    assert len(refused) == 1 and refused[0]["action"] == "deny", refused
    assert any(e and "counted in conntrack zone 4096" in e.get("text", "") for e in said)
