"""The real controller process keeps turning: through a malformed reload, and beside an app that
fails on every event (issue 12, item 6). Before, either one ended the core's event loop silently:
the process stayed up and its port accepted connections, but nothing was handled again."""

import os
import signal
import textwrap
import urllib.error
import urllib.request

from topologies.harness import ROOT, free_port, metric
from topologies.linear import LinearTopo

GOOD_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  hostnames: [web]
  rules:
    - backendRefs: [{name: web, port: 80}]
"""
BAD_ROUTE = GOOD_ROUTE.replace("    - backendRefs", "    - matches: [{path: /}]\n      backendRefs")
CONFIG = textwrap.dedent(
    """\
    endpoints:
      - {name: v1, ip: 10.0.0.1, mac: "00:00:00:00:00:01", labels: {app: web}}
      - {name: v2, ip: 10.0.0.2, mac: "00:00:00:00:00:02", labels: {app: web}}
    services:
      - name: web
        vip: 10.0.100.10
        port: 80
        backends: [{endpoint: v1, weight: 50}, {endpoint: v2, weight: 50}]
    routing: [route.yaml]
    """
)


def livez(port: int) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_malformed_reload_is_refused_and_the_loop_goes_on(controller, tmp_path):
    route = tmp_path / "route.yaml"
    route.write_text(GOOD_ROUTE)
    (tmp_path / "lab.yaml").write_text(CONFIG)
    http = free_port()
    ctl = controller(
        ["apps/services"],
        config=str(tmp_path / "lab.yaml"),
        extra=["--prometheus-port", str(http)],
    )
    assert ctl.wait_log("services: web")
    route.write_text(BAD_ROUTE)
    assert ctl.wait_log(
        rf"reload rejected.*{route}:8: spec.rules\[0\].matches\[0\].path: '/' is not of type",
        timeout=10,
    ), ctl.log()[-3000:]
    assert livez(http) == 200
    ctl.proc.send_signal(signal.SIGHUP)  # handled: the loop still turns
    assert ctl.wait_log("SIGHUP: reloading", timeout=10), ctl.log()[-3000:]
    assert ctl.wait_log("reload rejected", count=2, timeout=10)
    route.write_text(GOOD_ROUTE)
    assert ctl.wait_log("config reloaded", timeout=10), ctl.log()[-3000:]
    assert metric(http, "osken_config_reloads", result="rejected") == 2
    assert "Traceback" not in ctl.log()


def test_an_app_failing_on_every_event_stops_nothing(controller, lab):
    http = free_port()
    faulty = os.path.join(ROOT, "tests", "data", "apps", "faulty_app.py")
    ctl = controller(["apps/l2_learning.py", faulty], extra=["--prometheus-port", str(http)])
    net = lab(LinearTopo(3), ctl.port)
    assert net.wait_connected(timeout=30) is not None
    assert net.wait_ping("h1", "h3", timeout=30)
    assert net.pingall() == (0, 6)  # (lost, sent)
    assert livez(http) == 200
    assert metric(http, "osken_app_errors", app="faulty", hook="on_packet_in") > 0
    assert metric(http, "osken_app_errors", app="faulty", hook="tick") > 0
    assert ctl.log().count("Traceback") == len(
        {"on_switch_synced", "on_switch_ready", "on_topology_change", "on_packet_in", "tick"}
    )
