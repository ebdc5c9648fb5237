"""The live topology page in a real browser (issue 16, part d): headless Chromium loads
GET / from a controller running a Mininet lab, the page's script draws the network with
Cytoscape.js (served by the controller), and the rendered DOM shows the switches, hosts and
links with their load, the flow log's deny, the service's split and a trace's verdict."""

import re
import shutil
import subprocess
import time

import pytest

from topologies.controller_process import free_port
from topologies.linear import LinearTopo
from topologies.scrape import metric
from topologies.wait import until

VIP = "10.0.100.10"
CONFIG = f"""\
endpoints:
  - {{name: web-a, ip: 10.0.0.2}}
  - {{name: web-b, ip: 10.0.0.3}}
firewall:
  rules:
    - {{action: deny, protocol: tcp, port: 22}}
  xdp: {{mode: "off"}}
services:
  - name: web
    vip: {VIP}
    port: 80
    backends:
      - {{endpoint: web-a, weight: 75}}
      - {{endpoint: web-b, weight: 25}}
flow_log: {{path: flows.jsonl, rate: 50}}
"""
CHROMIUM = shutil.which("chromium")


def browser(url: str, tmp_path, *args: str) -> str:
    """What headless Chromium prints for `url` once the page's script has run."""
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path}/chromium",
        ]
        + ["--virtual-time-budget=8000", *args, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup.sh)"
)
def test_the_page_draws_the_lab_in_a_real_browser(controller, lab, tmp_path):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(CONFIG)
    port = free_port()
    ctl = controller(
        ["apps/firewall", "apps/services"], config=str(cfg), extra=["--prometheus-port", str(port)]
    )
    net = lab(LinearTopo(3), ctl.port)
    net.serve("h2", "tcp:80")
    net.serve("h3", "tcp:80")
    assert net.wait_ping("h1", "h3") and net.wait_ping("h1", "h2"), ctl.log()[-2000:]
    assert not net.connects("h1", "h3", "tcp", 22)  # denied: in the flow log
    got = net.spread_from(["h1"], VIP, 80, 8, 2)
    assert sum(got.values()) == 8, got
    # load on the links: about 1 Mbit/s of pings h1 -> h3 while port counters are polled
    pings = net.host("h1").popen(
        ["ping", "-q", "-i", "0.01", "-c", "400", "-s", "1000", "10.0.0.3"]
    )
    assert until(lambda: metric(port, "osken_flow_log_lines") >= 1, 5.0)
    time.sleep(4.5)  # two port counter polls during the pings

    url = f"http://127.0.0.1:{port}/?src=10.0.0.1&dst=10.0.0.3&proto=tcp&dport=22"
    dom = browser(url, tmp_path, "--dump-dom")
    pings.wait(timeout=30)
    graph = re.search(r'<div id="graph"[^>]*>', dom).group(0)
    assert 'data-rendered="cytoscape"' in graph, dom[:3000]
    assert 'data-nodes="6"' in graph and 'data-edges="5"' in graph, graph  # 3 switches, 3 hosts
    assert "<canvas" in dom  # Cytoscape.js drew into the container
    assert "3 switches, 2 links, 3 hosts" in dom
    links = re.findall(r'<tr data-link="[^"]+">(.*?)</tr>', dom)
    assert len(links) == 2 and any(re.search(r"[kM]bit/s", link) for link in links), links
    deny = re.search(r'<tr data-deny="10\.0\.0\.1-10\.0\.0\.3-tcp/22">(.*?)</tr>', dom).group(1)
    assert "lab.yaml:6" in deny and "s1 s1-eth1" in deny, deny
    rows = dict(re.findall(r'data-backend="(web-[ab])">(.*?)</tr>', dom))
    assert "75%" in rows["web-a"] and "25%" in rows["web-b"]
    observed = {b: int(re.search(r"<td>(\d+) \(", r).group(1)) for b, r in rows.items()}
    assert observed == {"web-a": 6, "web-b": 2}  # method exact: the split to one connection
    traced = re.search(r'<div id="trace-result">(.*?)</div>', dom, re.S).group(1)
    assert '<span class="verdict drop" id="trace-verdict">DROP</span>' in traced, traced
    assert "lab.yaml:6" in re.search(r'id="trace-rule">(.*?)<', dom).group(1)
    sources = re.findall(r'data-source="([^"]+)"', traced)
    assert sources == ["switch"], traced  # s1 answered with its own ofproto/trace

    # Method exact: the trace goes on through the controller's next pick, from the model;
    # each hop says where its answer came from, and why.
    vip = f"http://127.0.0.1:{port}/?src=10.0.0.1&dst={VIP}&proto=tcp&dport=80"
    traced = re.search(
        r'<div id="trace-result">(.*?)</div>', browser(vip, tmp_path, "--dump-dom"), re.S
    )
    traced = traced.group(1)
    assert '<span class="verdict forward" id="trace-verdict">FORWARD</span>' in traced, traced
    assert re.findall(r'data-source="([^"]+)"', traced)[0] == "switch+model", traced
    assert re.search(r'<li class="note">[^<]*controller\'s model', traced), traced

    shot = tmp_path / "page.png"
    browser(url, tmp_path, f"--screenshot={shot}", "--window-size=1400,800")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
