"""How an app plugs in: one class in its own file, a config checked by the apps loaded (never by
the modules imported), and a read-only view of the core."""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import textwrap
from types import MappingProxyType

import pytest
from os_ken.base.app_manager import OSKenApp

from apps.l2_learning import L2Learning
from controller.app import CoreView, SuiteApp, defined_in
from controller.cli import suite_apps
from controller.config import Config, ConfigError, load_config
from controller.core import Core
from controller.sections import CORE_SCHEMAS, SUITE_SECTIONS
from tests.fakenet import FakeNetwork

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP_MODULES = sorted(
    f"apps.{name.removesuffix('.py')}"
    for name in os.listdir(os.path.join(ROOT, "apps"))
    if (name.endswith(".py") and name != "__init__.py")
    or os.path.isfile(os.path.join(ROOT, "apps", name, "__init__.py"))
)

# --- one class in its own file ---------------------------------------------------------------


@pytest.mark.parametrize("name", APP_MODULES)
def test_an_app_file_is_one_suite_app_and_no_os_ken_code(name):
    module = importlib.import_module(name)
    [app] = suite_apps(module)
    assert not [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, OSKenApp) and defined_in(c, module)
    ]
    for required in app.requires:
        assert suite_apps(importlib.import_module(required))


def test_the_catalog_of_suite_sections_is_what_the_apps_declare():
    declared: dict[str, list] = {}
    for name in APP_MODULES:
        [app] = suite_apps(importlib.import_module(name))
        for section in {app.config_section, *app.config_schemas} - {None}:
            declared.setdefault(section, []).append(name)
    assert {s: " or ".join(names) for s, names in declared.items()} == dict(SUITE_SECTIONS)
    assert not set(declared) & set(CORE_SCHEMAS)


def test_two_owners_of_one_section_are_refused():
    class Rival(SuiteApp):
        name = "rival"
        config_schemas = MappingProxyType({"l2": {"type": "object"}})

    core = Core()
    core.add_app(L2Learning)
    with pytest.raises(ValueError, match="'l2', which has another owner"):
        core.add_app(Rival)


# --- config validity: the apps loaded decide, not the modules imported ------------------------

CHECK = """
import json, sys
{imports}
from controller.cli import LaunchError, check_config, import_apps
out = {{}}
for name, path in json.loads(sys.argv[1]).items():
    try:
        check_config(path, import_apps({apps!r}))
        out[name] = "ok"
    except LaunchError as exc:
        out[name] = str(exc)
print(json.dumps(out, sort_keys=True))
"""

CONFIGS = {
    "chains": "chains:\n  - {name: web, through: [fw]}\n",
    "bad_chains": "chains: 5\n",
    "bad_stateful": "firewall:\n  stateful: yes\n",
    "typo": "firewal: {}\n",
    "policies": "policies: [nope.yaml]\n",
}


def verdicts(tmp_path, apps: list[str], imports: str) -> dict[str, str]:
    paths = {}
    for name, text in CONFIGS.items():
        paths[name] = str(tmp_path / f"{name}.yaml")
        (tmp_path / f"{name}.yaml").write_text(text)
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(imports=imports, apps=apps), json.dumps(paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


IMPORT_ORDERS = [
    "",
    "import apps.chains",
    "import apps.chains, apps.services, apps.microseg",
    "import apps.microseg, apps.services, apps.chains, apps.firewall, apps.l2_learning",
]


@pytest.mark.parametrize("apps", [["apps/firewall"], ["apps/chains"]])
def test_config_validity_does_not_depend_on_what_was_imported(tmp_path, apps):
    """On the old code, `chains:` with the firewall was "unknown key" unless apps.chains had been
    imported, and `chains: 5` passed with it imported."""
    seen = [verdicts(tmp_path, apps, imports) for imports in IMPORT_ORDERS]
    assert all(v == seen[0] for v in seen), seen
    got = seen[0]
    assert got["typo"].endswith("typo.yaml:1: firewal: unknown key")
    if apps == ["apps/firewall"]:
        assert got["chains"] == got["bad_chains"] == got["policies"] == "ok"  # not loaded
        assert got["bad_stateful"].endswith("firewall.stateful: 'yes' is not of type 'boolean'")
    else:
        assert got["chains"] == "ok"
        assert got["bad_chains"].endswith("bad_chains.yaml:1: chains: 5 is not of type 'array'")
        assert got["bad_stateful"] == "ok"  # the firewall is not loaded


def test_a_section_of_a_suite_app_not_loaded_is_a_warning_naming_it(tmp_path, caplog):
    path = tmp_path / "lab.yaml"
    path.write_text("chains:\n  - {name: web, through: [fw]}\nl2: {mac_age: 30}\n")
    core = Core()
    core.add_app(L2Learning)
    with caplog.at_level(logging.WARNING, logger="osken_suite.core"):
        core.parse(load_config(str(path)))
    [record] = caplog.records
    assert "'chains' is read by apps.chains, which is not loaded" in record.getMessage()


def test_an_app_of_its_own_declares_its_section_and_schema(tmp_path):
    class Tap(SuiteApp):
        name = "tap"
        config_section = "tap"
        config_schemas = MappingProxyType(
            {"tap": {"type": "object", "properties": {"port": {"type": "integer"}}}}
        )

    path = tmp_path / "lab.yaml"
    path.write_text("tap:\n  port: many\n")
    with pytest.raises(ConfigError, match="unknown key"):
        Core().parse(load_config(str(path)))
    core = Core()
    core.add_app(Tap)
    with pytest.raises(ConfigError, match=r"lab.yaml:2: tap.port: 'many' is not of type"):
        core.parse(load_config(str(path)))
    path.write_text("tap:\n  port: 3\n")
    assert core.parse(load_config(str(path))).apps["tap"] == {"port": 3}


# --- the view ----------------------------------------------------------------------------------


class Watcher(SuiteApp):
    name = "watcher"

    def __init__(self, core: CoreView) -> None:
        super().__init__(core)
        self.stats: list = []

    def on_flow_stats(self, dpid, stats, more, now) -> None:
        self.stats.append((dpid, len(stats), more))


def test_apps_see_the_core_through_a_read_only_view():
    core = Core()
    core.add_app(L2Learning)
    watcher = core.add_app(Watcher)
    core.configure(Config(), 0.0)
    net = FakeNetwork(core)
    net.add_switch(1, 3)
    net.add_switch(2, 3)
    net.link(1, 1, 2, 1)
    view = watcher.core
    assert isinstance(view, CoreView) and not isinstance(view, Core)
    assert not hasattr(view, "conns") and not hasattr(view, "apps")
    assert view.topology is core.topology and view.desired.flows is core.desired.flows
    assert view.connected() == [] and view.ports(1) == {} and not view.ready(1)
    net.connect(1)
    assert view.connected() == [1] and not view.ready(1)
    assert sorted(view.ports(1)) == [1, 2, 3] and view.ports(1)[2].name == "s1-eth2"
    with pytest.raises(TypeError):
        view.ports(1)[9] = view.ports(1)[2]  # the switch's ports are the switch's to say
    net.connect(2)
    net.advance(3.0)
    assert view.ready(1) and view.ready(2)
    view.request_flow_stats(watcher, 1, core.pipeline.table("forwarding"))
    view.request_flow_stats(watcher, 7, 0)  # not connected: nothing
    net.advance(0.5)
    assert watcher.stats and all(dpid == 1 for dpid, _, _ in watcher.stats)


def test_the_app_interface_documents_its_view():
    for name in ("connected", "ready", "ports", "send", "request_flow_stats"):
        doc = inspect.getdoc(getattr(CoreView, name))
        assert doc and len(doc) > 40, name
    assert "Attributes:" in textwrap.dedent(CoreView.__doc__)


class TopologyWatcher(SuiteApp):
    name = "topology_watcher"

    def __init__(self, core: CoreView) -> None:
        super().__init__(core)
        self.seen: list[tuple[int, list[int]]] = []  # (links, ready switches) at each change

    def on_topology_change(self, now: float) -> None:
        ready = [d for d in self.topology.switches() if self.core.ready(d)]
        self.seen.append((len(self.topology.links), ready))


def test_at_a_cold_start_apps_hear_of_the_topology_once_switches_are_ready():
    """Every link discovery found while no switch could take a flow yet was a topology change
    for every app: on a fat-tree k=8 (80 switches, 256 links) the L2 app recomputed its
    multipath groups 337 times, 21.5 s of CPU before the first switch was ready. Apps now
    hear of it when the switches become ready, with every link found by then."""
    core = Core()
    core.add_app(L2Learning)
    watcher = core.add_app(TopologyWatcher)
    core.configure(Config(), 0.0)
    net = FakeNetwork(core)
    for dpid in (1, 2, 3, 4):
        net.add_switch(dpid, 3)
    for a, b in ((1, 2), (2, 3), (3, 4), (4, 1)):
        net.link(a, 1, b, 2)
    net.start()
    assert watcher.seen[0] == (4, [1, 2, 3, 4])
    assert all(ready == [1, 2, 3, 4] for _, ready in watcher.seen)
