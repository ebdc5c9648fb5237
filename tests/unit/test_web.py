"""The topology page's data and files (issue 16, part d): GET /api/v1/topology from the core,
port loads from port statistics routed by xid, and only the page's own files served."""

import json

from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.web import Web
from tests.unit.test_flowlog import LOGGED, syn
from tests.unit.test_l2 import MACS
from tests.unit.test_trace import IP, FakeSwitches, fake_lab


def get(app, path, query=""):
    answer = {}

    def start_response(status, headers):
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(app({"PATH_INFO": path, "QUERY_STRING": query}, start_response))
    return int(answer["status"].split()[0]), answer["headers"], body


def test_the_topology_names_switches_links_hosts_and_recent_denies(tmp_path):
    (tmp_path / "logs").mkdir()
    net = fake_lab(tmp_path, LOGGED)
    syn(net, MACS[0], MACS[2], 22)  # denied by the firewall: in the flow log
    web = Web(net.core, lambda fn: fn(), FakeSwitches(net))
    status, headers, body = get(web.topology, "/api/v1/topology")
    data = json.loads(body)
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert [s["name"] for s in data["switches"]] == ["s101", "s102", "s201", "s202", "s203"]
    assert len(data["links"]) == 6 and {"a", "a_port", "b", "b_port"} <= data["links"][0].keys()
    assert {h["mac"]: h["ip"] for h in data["hosts"]} == IP
    assert data["hosts"][0]["port_name"] is not None
    [deny] = data["denies"]
    assert (deny["src"], deny["dport"], deny["rule"]["line"]) == ("10.0.0.1", 22, 3)


def test_port_loads_come_from_port_statistics_asked_for_by_the_core(tmp_path):
    net = fake_lab(tmp_path)
    core = net.core
    out = core.tick(net.now + 10)  # a poll is due: one request per ready switch
    requests = {
        d: [m for m in msgs if isinstance(m, parser.OFPPortStatsRequest)] for d, msgs in out.items()
    }
    xid = requests[201][0].xid
    assert sorted(d for d, msgs in requests.items() if msgs) == sorted(net.switches)
    core.port_stats_reply(201, xid, [(1, 0, 0)], True, 100.0)
    core.port_stats_reply(201, xid, [(1, 1000, 4000)], False, 102.0)
    assert core.port_load.bps(201, 1) == (4000.0, 16000.0)
    core.port_stats_reply(201, xid + 999, [(1, 9999, 9999)], False, 104.0)  # not ours
    assert core.port_load.bps(201, 1) == (4000.0, 16000.0)
    link = next(
        x for x in core.topology.links if (x.b, x.b_port) == (201, 1) or (x.a, x.a_port) == (201, 1)
    )
    data = json.loads(get(Web(core, lambda fn: fn(), FakeSwitches(net)).topology, "/")[2])
    found = next(
        x for x in data["links"] if (int(x["a"], 16), x["a_port"]) == (link.a, link.a_port)
    )
    sent = found["b_to_a_bps"] if link.b == 201 else found["a_to_b_bps"]
    assert sent == 16000.0


def test_the_page_and_only_its_own_files_are_served(tmp_path):
    net = fake_lab(tmp_path)
    web = Web(net.core, lambda fn: fn(), FakeSwitches(net))
    status, headers, body = get(web.page, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="/static/vendor/cytoscape.min.js"' in body and b"http" not in body
    status, headers, body = get(web.static, "/static/page.js")
    assert status == 200 and b"/api/v1/topology" in body
    for name in ("../__init__.py", "index.html", "vendor/../page.js", "nothing.js"):
        assert get(web.static, "/static/" + name)[0] == 404
