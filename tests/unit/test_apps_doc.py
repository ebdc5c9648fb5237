"""docs/apps.md's example app, apps/mirror.py, on the fake network; and the doc's copy of it."""

from __future__ import annotations

import os
import re

import pytest

from apps.l2_learning import L2Learning
from apps.mirror import PortMirror
from controller.config import ConfigError, load_config
from controller.core import Core
from tests.fakenet import BROADCAST
from tests.unit.test_l2 import MACS, leaf_spine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H1, H2, MONITOR, H4 = MACS[0], MACS[1], MACS[2], MACS[3]  # H1-MONITOR on leaf 201, ports 3-5


def mirrored(tmp_path, text: str):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(text)
    core = Core()
    core.add_app(L2Learning)
    core.add_app(PortMirror)
    core.configure(load_config(str(cfg)), 1000.0)
    net = leaf_spine(core, spines=2, leaves=2, hosts_per_leaf=3)
    net.start()
    for a, b in [(H1, H4), (H2, H4), (H1, H2)]:  # as net.converse, whose check copies would fail
        net.send(a, BROADCAST, 0x0806)
        net.send(b, a)
    return net, cfg


def test_what_a_mirrored_port_receives_also_reaches_the_monitor(tmp_path):
    net, _ = mirrored(tmp_path, "mirror:\n  - {dpid: 201, ports: [3], to: 5}\n")
    assert sorted(net.send(H1, H4).hosts) == sorted([H4, MONITOR])  # across the fabric
    assert sorted(net.send(H1, H2).hosts) == sorted([H2, MONITOR])  # on the same switch
    assert net.send(H2, H4).hosts == [H4]  # port 4 is not mirrored
    assert net.send(H4, H1).hosts == [H1]  # what leaves through port 3 is not a copy's business


def test_a_reload_moves_the_session_and_an_empty_section_ends_it(tmp_path):
    net, cfg = mirrored(tmp_path, "mirror:\n  - {dpid: 201, ports: [3], to: 5}\n")
    cfg.write_text("mirror:\n  - {dpid: 201, ports: [4], to: 5}\n")
    net.deliver(net.core.reload(lambda: load_config(str(cfg)), net.now))
    assert net.send(H1, H4).hosts == [H4]
    assert sorted(net.send(H2, H4).hosts) == sorted([H4, MONITOR])
    cfg.write_text("mirror: []\n")
    net.deliver(net.core.reload(lambda: load_config(str(cfg)), net.now))
    assert net.send(H2, H4).hosts == [H4]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mirror:\n  - {dpid: 201, ports: [5], to: 5}\n", "mirror[0].to: the monitor port is"),
        ("mirror:\n  - {dpid: 201, ports: [], to: 5}\n", "mirror[0].ports"),
        ("mirror:\n  - {dpid: 201, ports: [3], to: 0}\n", "mirror[0].to"),
        ("mirror:\n  - {dpid: 201, port: [3], to: 5}\n", "mirror[0]"),
    ],
)
def test_a_bad_session_is_refused_where_it_is_written(tmp_path, text, message):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(text)
    core = Core()
    core.add_app(L2Learning)
    core.add_app(PortMirror)
    with pytest.raises(ConfigError) as err:
        core.parse(load_config(str(cfg)))
    assert f"{cfg}:2: {message}" in str(err.value)


def test_the_example_is_under_60_lines_and_the_doc_shows_it_whole():
    with open(os.path.join(ROOT, "apps", "mirror.py")) as fh:
        source = fh.read()
    with open(os.path.join(ROOT, "docs", "apps.md")) as fh:
        doc = fh.read()
    assert len(source.splitlines()) < 60
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert source in blocks


def test_the_docs_fake_network_example_runs_as_written():
    with open(os.path.join(ROOT, "docs", "apps.md")) as fh:
        doc = fh.read()
    [example] = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "leaf_spine" in b]
    scope: dict = {}
    exec(compile(example, "docs/apps.md", "exec"), scope)
    assert sorted(scope["delivery"].hosts) == sorted([MACS[3], MACS[2]])
