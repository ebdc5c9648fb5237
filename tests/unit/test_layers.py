"""The import structure holds: the core below the apps, apps apart, no cycles at all.

grimp builds the graph from the source (every import, `if TYPE_CHECKING:` ones and imports
inside functions included), so a typing-only or deferred cycle counts as one.
"""

from __future__ import annotations

import os

import grimp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("controller", "apps", "ebpf", "vnf")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


@pytest.mark.parametrize("lower", ["controller", "ebpf", "vnf"])
def test_the_core_and_its_libraries_import_no_app(graph, lower):
    chain = graph.find_shortest_chain(importer=lower, imported="apps", as_packages=True)
    assert chain is None, f"{lower} reaches apps: {' -> '.join(chain)}"


@pytest.mark.parametrize(
    "importer", ["apps.services", "apps.chains", "apps.firewall", "apps.microseg"]
)
def test_an_app_package_does_not_reach_into_another(graph, importer):
    for other in ("apps.microseg", "apps.services", "apps.chains", "apps.firewall"):
        if other != importer:
            chain = graph.find_shortest_chain(importer=importer, imported=other, as_packages=True)
            assert chain is None, f"{importer} reaches {other}: {' -> '.join(chain)}"


# Inside controller.flows each module uses only those before it: the model knows no wire format,
# the encoder reads nothing back, the decoder is the only one that knows both directions.
FLOWS_ORDER = ("model", "actions", "nxcontroller", "encode", "decode")


@pytest.mark.parametrize("i", range(len(FLOWS_ORDER)))
def test_flows_modules_import_only_earlier_ones(graph, i):
    module = f"controller.flows.{FLOWS_ORDER[i]}"
    imported = graph.find_modules_directly_imported_by(module)
    later = {f"controller.flows.{m}" for m in FLOWS_ORDER[i:]} | {"controller.flows"}
    assert not imported & later, f"{module} imports {sorted(imported & later)}"
    others = {m for m in imported if m.startswith("controller.") and m not in later}
    assert others <= {f"controller.flows.{m}" for m in FLOWS_ORDER[:i]}, others


def test_no_import_cycle(graph):
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join((module, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """The graph sees a typing-only cycle and a deferred import (what the checks above rely on)."""
    pkg = tmp_path / "layer_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from layer_probe import b\n"
    )
    (pkg / "b.py").write_text("def f():\n    from layer_probe import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = grimp.build_graph("layer_probe", cache_dir=None)
    assert probe.find_shortest_chain("layer_probe.a", "layer_probe.b") is not None
    assert probe.find_shortest_chain("layer_probe.b", "layer_probe.a") is not None
