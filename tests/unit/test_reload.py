"""A reload is all or nothing, and no app's failure stops the loop or hides an event from another.

Issue 12, item 6: a malformed config wedged or half-applied, and one app's exception ended the
event loop. The cases handed in are here with their right outcome.
"""

import logging
import textwrap

import pytest

from apps.firewall import Firewall
from apps.firewall import app as firewall_app
from apps.firewall.compile import MAX_RULES, _renumber, assign_priorities
from apps.l2_learning import L2Learning
from controller.app import SuiteApp
from controller.config import Config, ConfigError, load_config
from controller.core import ApplyError, Core
from tests.unit.test_firewall import A, B, C, tcp
from tests.unit.test_firewall import lab as firewall_lab
from tests.unit.test_firewall import reload as firewall_reload
from tests.unit.test_l2 import MACS, leaf_spine
from tests.unit.test_services import ENDPOINTS, service
from tests.unit.test_services import make as services_lab


def desired_snapshot(core: Core) -> tuple:
    d = core.desired
    flows = {dpid: dict(t) for dpid, t in d.flows.items() if t}
    numbered = {k: {dpid: dict(t) for dpid, t in v.items() if t} for k, v in d.numbered.items()}
    return flows, numbered


def rules_yaml(*ports: int, default: str = "allow") -> str:
    rules = "".join(f"    - {{action: deny, protocol: tcp, port: {p}}}\n" for p in ports)
    return f"firewall:\n  default: {default}\n  rules:\n{rules}"


HTTPROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [user-service]
  rules:
    - {rule}
"""


@pytest.mark.parametrize(
    ("rule", "line", "field", "message"),
    [
        (
            "{matches: [{path: /}], backendRefs: [{name: user-service, port: 80}]}",
            8,
            "spec.rules[0].matches[0].path",
            "'/' is not of type 'object'",
        ),
        (
            "{backendRefs: [{name: user-service, port: http}]}",
            8,
            "spec.rules[0].backendRefs[0].port",
            "'http' is not of type 'integer'",
        ),
        (
            "{backendRefs: {name: user-service}}",
            8,
            "spec.rules[0].backendRefs",
            "is not of type 'array'",
        ),
    ],
)
def test_a_route_of_the_wrong_shape_is_refused_where_it_is(tmp_path, rule, line, field, message):
    net, app, cfg = services_lab(tmp_path, service(50, 50, backup=False))
    before, settings = desired_snapshot(net.core), net.core.settings
    (tmp_path / "route.yaml").write_text(HTTPROUTE.format(rule=rule))
    cfg.write_text(ENDPOINTS + service(50, 50, backup=False) + "routing: [route.yaml]\n")
    with pytest.raises(ConfigError) as err:
        net.core.parse(load_config(str(cfg)))
    assert str(err.value).startswith(f"{tmp_path}/route.yaml:{line}: {field}: ")
    assert message in str(err.value)
    assert net.core.reload(lambda: load_config(str(cfg)), net.now) == {}
    assert desired_snapshot(net.core) == before and net.core.settings is settings


def test_max_rules_is_exactly_what_the_priority_range_holds():
    keys = list(range(MAX_RULES))
    assert len(set(assign_priorities(keys, {}).values())) == MAX_RULES
    with pytest.raises(ValueError):
        _renumber(list(range(MAX_RULES + 1)))


def test_more_rules_than_priorities_is_refused_before_anything_changes(tmp_path, monkeypatch):
    net, fw, cfg = firewall_lab(tmp_path, rules_yaml(22))
    before = desired_snapshot(net.core)
    monkeypatch.setattr(firewall_app, "MAX_RULES", 2)
    cfg.write_text(rules_yaml(22, 23, 24))
    with pytest.raises(ConfigError, match=r"lab.yaml:1: firewall: 3 rules .* at most 2 fit"):
        net.core.parse(load_config(str(cfg)))
    firewall_reload(net, cfg, rules_yaml(22, 23, 24))
    assert desired_snapshot(net.core) == before
    assert not tcp(net, A, B, 22) and tcp(net, A, B, 23)


def test_an_app_failing_while_applying_rolls_everything_back(tmp_path, monkeypatch, caplog):
    net, fw, cfg = firewall_lab(tmp_path, rules_yaml(22))
    before, settings = desired_snapshot(net.core), net.core.settings
    calls = []
    install = Firewall._install_rule

    def flaky(self, *args):
        calls.append(args)
        if len(calls) == 2:  # the new config's second rule: half of it is already in desired
            raise RuntimeError("injected")
        return install(self, *args)

    monkeypatch.setattr(Firewall, "_install_rule", flaky)
    cfg.write_text(rules_yaml(23, 24, 25))
    with pytest.raises(ApplyError, match="app firewall failed to apply it"):
        net.core.configure(load_config(str(cfg)), net.now)
    assert desired_snapshot(net.core) == before and net.core.settings is settings
    assert fw.settings is settings.apps["firewall"]
    monkeypatch.setattr(Firewall, "_install_rule", install)
    with caplog.at_level(logging.ERROR, "osken_suite.core"):
        out = net.core.reload(lambda: load_config(str(cfg)), net.now)
    assert out and "config reload rejected" not in caplog.text
    net.deliver(out)
    assert tcp(net, A, B, 22) and not tcp(net, A, B, 24) and not tcp(net, A, C, 25)


def test_a_failed_apply_sends_nothing_and_the_old_policy_stays(tmp_path, monkeypatch):
    net, fw, cfg = firewall_lab(tmp_path, rules_yaml(22))
    monkeypatch.setattr(Firewall, "_install_rule", lambda *a: (_ for _ in ()).throw(KeyError(1)))
    cfg.write_text(rules_yaml(80))
    assert net.core.reload(lambda: load_config(str(cfg)), net.now) == {}
    assert net.core.metrics.config_reloads.labels("rejected")._value.get() == 1
    assert not tcp(net, A, B, 22) and tcp(net, A, B, 80)


class Faulty(SuiteApp):
    """Fails in every hook it has."""

    name = "faulty"

    def _fail(self, *args) -> None:
        raise RuntimeError("faulty app")

    on_packet_in = on_topology_change = on_switch_ready = on_switch_synced = tick = _fail
    on_flow_removed = _fail


def faulty_first() -> Core:
    core = Core()
    core.add_app(Faulty)
    core.add_app(L2Learning)
    core.configure(Config(), 0.0)
    return core


def errors(core: Core, app: str, hook: str) -> float:
    return core.metrics.app_errors.labels(app, hook)._value.get()


def test_an_app_that_raises_hides_no_event_from_the_others(caplog):
    with caplog.at_level(logging.ERROR, "osken_suite.core"):
        net = leaf_spine(faulty_first())
        net.start()
        assert net.converse(MACS[0], MACS[5]) and net.converse(MACS[1], MACS[4])
    core = net.core
    assert errors(core, "faulty", "on_packet_in") >= 4 and errors(core, "faulty", "tick") > 1
    assert errors(core, "faulty", "on_topology_change") >= 1
    # the traceback once per hook, however often it failed
    assert caplog.text.count("app faulty failed in on_packet_in") == 1
    hooks = {"on_packet_in", "tick", "on_topology_change", "on_switch_synced", "on_switch_ready"}
    assert caplog.text.count("Traceback (most recent call last)") == len(hooks)


def test_a_link_failure_still_reroutes_when_an_app_fails_on_it():
    net = leaf_spine(faulty_first())
    net.start()
    net.converse(MACS[0], MACS[5])
    first = net.send(MACS[0], MACS[5])
    spine = next(d for d in first.visits if d < 200)
    version = net.core.topology.version
    net.set_link(201, spine - 100, False)
    assert net.core.topology.version > version
    again = net.send(MACS[0], MACS[5])
    assert again.hosts == [MACS[5]] and spine not in again.visits


class BadParser(SuiteApp):
    name = "bad_parser"
    config_section = "l2"

    def parse_config(self, section, config):
        if section:
            return section["no such key"]
        return None


def test_a_parser_bug_is_a_located_refusal_not_a_traceback(tmp_path):
    core = Core()
    core.add_app(BadParser)
    core.configure(Config(), 0.0)
    cfg = tmp_path / "lab.yaml"
    cfg.write_text(textwrap.dedent("l2:\n  mac_age: 30\n"))
    with pytest.raises(ConfigError, match=r"lab.yaml:1: l2: bad_parser could not read this"):
        core.parse(load_config(str(cfg)))
    assert core.reload(lambda: load_config(str(cfg)), 1.0) == {}
    assert errors(core, "bad_parser", "parse_config") == 2


def test_a_rejected_configs_new_files_are_watched(tmp_path):
    net, app, cfg = services_lab(tmp_path, service(50, 50, backup=False))
    route = tmp_path / "route.yaml"
    route.write_text(HTTPROUTE.format(rule="{backendRefs: [{name: user-service, port: x}]}"))
    cfg.write_text(ENDPOINTS + service(50, 50, backup=False) + "routing: [route.yaml]\n")
    assert net.core.reload(lambda: load_config(str(cfg)), net.now) == {}
    assert str(route) in net.core.candidate.files()
    assert str(route) not in net.core.config.files()
