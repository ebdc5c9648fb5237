"""The pipeline as a contract (controller/pipeline.py) and the shared-number registry
(controller/resources.py): every flow the apps install keeps its table's contract and uses
only its own app's numbers; a flow that breaks it raises in tests and is logged, counted and
never sent in production, while what the switch holds stays."""

from __future__ import annotations

import logging
import os
import re

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp

from apps.chains import ServiceChains
from apps.chains.compile import group_id, tag
from apps.chains.settings import MAX_CHAINS, MAX_HOPS, MAX_REPLICAS
from apps.firewall import Firewall
from apps.firewall.compile import RULE_TOP, SPACING
from apps.l2_learning import HOST_PRIORITY, L2Learning
from apps.microseg import Microseg
from apps.services import Services
from controller.core import Core
from controller.flows import (
    Bucket,
    Flow,
    Meter,
    apply,
    conntrack,
    flow,
    goto,
    group,
    group_action,
    meter,
    output,
    set_field,
    write_metadata,
)
from controller.pipeline import (
    FROM_FABRIC,
    PIPELINE,
    REGISTRY,
    Pipeline,
    PipelineError,
    PipelineViolation,
    Stage,
)
from controller.resources import Allocation, Registry
from tests.unit import test_chains, test_services
from tests.unit.test_fuzz_inputs import network
from tests.unit.test_l2 import MACS, leaf_spine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T = PIPELINE.table
APPS = (L2Learning, Firewall, Microseg, Services, ServiceChains)


def cookie(app: str) -> int:
    return REGISTRY.cookie(app)


# --- the declaration ------------------------------------------------------------------------------


def test_every_stage_goes_only_forward_and_its_miss_reaches_the_following_stage():
    for t, stage in enumerate(PIPELINE.stages):
        assert all(T(n) > t for n in stage.goes_to), stage.name
        assert all(T(n) >= t for n in stage.recirculates), stage.name
        if stage.miss == "next":
            assert PIPELINE.following(stage.name) in stage.goes_to
    assert PIPELINE.stages[-1].miss == "drop"


def test_the_stages_that_skip_others_are_the_declared_ones():
    """A goto past the following stage is a jump someone must declare and justify."""
    skips = {(s.name, n) for t, s in enumerate(PIPELINE.stages) for n in s.goes_to if T(n) != t + 1}
    assert skips == {
        ("classify", "chains"),  # frames from VNF replicas
        ("microseg", "flow_log"),  # fabric, ARP and ND frames pass microseg unjudged
        ("microseg_dst", "flow_log"),  # replies to allowed connections
    }


@pytest.mark.parametrize(
    "stages, message",
    [
        ((Stage("a", "core", "", goes_to=("b",)), Stage("b", "core", "", goes_to=("a",))), "back"),
        ((Stage("a", "core", ""), Stage("b", "core", "", miss="drop")), "'next' miss"),
        ((Stage("a", "core", "", miss="drop", writers=("nobody",)),), "nobody"),
        ((Stage("a", "core", "", goes_to=("z",)), Stage("b", "core", "", miss="drop")), "'z'"),
        ((Stage("a", "core", "", miss="drop"), Stage("a", "core", "", miss="drop")), "repeat"),
    ],
)
def test_an_inconsistent_declaration_is_refused_at_construction(stages, message):
    with pytest.raises(PipelineError, match=message):
        Pipeline(stages)


def test_gotos_come_only_from_declared_pairs():
    assert PIPELINE.goto("classify", "chains") == goto(T("chains"))
    assert PIPELINE.go_on("firewall") == goto(T("microseg"))
    with pytest.raises(PipelineError, match="firewall does not declare a goto to forwarding"):
        PIPELINE.goto("firewall", "forwarding")


def test_no_app_computes_a_table_number():
    """Gotos come from the pipeline: no `table + 1` and no `after()` in apps or the core."""
    arithmetic = re.compile(r"(table|classify|src|dst|track|ingress|egress)\w*\s*[+-]\s*1\b")
    found = []
    for top in ("apps", "controller"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                if not name.endswith(".py") or path.endswith("pipeline.py"):
                    continue
                with open(path) as fh:
                    for n, line in enumerate(fh, 1):
                        if "goto(" in line and arithmetic.search(line) or ".after(" in line:
                            found.append(f"{path}:{n}: {line.strip()}")
    assert not found


# --- the registry ---------------------------------------------------------------------------------


def test_no_two_owners_share_a_number():
    assert REGISTRY.overlaps() == []


def test_an_overlap_is_found():
    bad = Registry([*REGISTRY.allocations, Allocation("ct_zone", "chains", 8, 8)])
    [(a, b)] = bad.overlaps()
    assert (a.owner, b.owner) == ("microseg", "chains")
    other_register = Registry(
        [*REGISTRY.allocations, Allocation("register", "chains", 0, 3, field="reg2")]
    )
    assert other_register.overlaps() == []


def test_every_app_marks_its_flows_with_its_registered_cookie():
    core = Core()
    for app_cls in APPS:
        app = core.add_app(app_cls)
        assert app.cookie == REGISTRY.cookie(app.name), app.name


def test_the_apps_largest_numbers_fit_their_allocations():
    sfc_groups, tags = REGISTRY.get("group", "chains"), REGISTRY.get("vlan_vid", "chains")
    assert group_id(MAX_CHAINS - 1, MAX_HOPS - 1, "b") in sfc_groups
    assert (
        tag(0, 0, 0, "a") in tags
        and tag(MAX_CHAINS - 1, MAX_HOPS - 1, MAX_REPLICAS - 1, "b") in tags
    )
    assert RULE_TOP + SPACING in REGISTRY.get("meter", "firewall")  # meter id = rule priority


# --- every flow the apps install keeps the contract -----------------------------------------------


def scenarios(tmp_path):
    yield network()  # every app, the fuzz tests' lab: rules, policies, services, a chain
    chains = tmp_path / "chains"
    chains.mkdir()
    yield test_chains.make(chains)[0]
    canary = tmp_path / "services"
    canary.mkdir()
    yield test_services.make(canary, test_services.service(method="switch"))[0]


def test_every_flow_the_apps_install_keeps_its_tables_contract(tmp_path):
    used: dict[str, set[str]] = {}
    for net in scenarios(tmp_path):
        for sw in net.switches.values():
            for f in sw.flows():
                PIPELINE.check(f)  # raises PipelineViolation, naming what and where
                used.setdefault(PIPELINE.app_of(f), set()).add(PIPELINE.stage(f.table).name)
            for number in sw.groups:
                assert REGISTRY.owner("group", number) is not None, hex(number)
            for number in sw.meters:
                assert REGISTRY.owner("meter", number) is not None, hex(number)
    # The scenarios reach every app and every stage, so the check above saw them all.
    assert set(used) == {"core", "l2_learning", "firewall", "microseg", "services", "chains"}
    assert set().union(*used.values()) == {s.name for s in PIPELINE.stages}


# --- a flow that breaks the contract --------------------------------------------------------------


L2, FW, MS, CANARY, SFC = (
    cookie(a) for a in ("l2_learning", "firewall", "microseg", "services", "chains")
)
MAC = "00:00:00:00:00:01"
FWD, FW_T, CH = T("forwarding"), T("firewall"), T("chains")


@pytest.mark.parametrize(
    "bad, breach",
    [
        (
            flow(T("forwarding"), 5, {"ipv4_src": "10.0.0.1"}, apply(output(1)), cookie=L2),
            f"table {FWD} (forwarding), app l2_learning: match field ipv4_src not declared",
        ),
        (
            flow(T("chains"), 5, {"in_port": 1}, goto(T("firewall")), cookie=SFC),
            f"table {CH} (chains), app chains: goto table {FW_T} not declared",
        ),
        (
            flow(T("firewall"), 5, {"eth_type": 0x800}, goto(T("forwarding")), cookie=FW),
            f"table {FW_T} (firewall), app firewall: goto table {FWD} not declared",
        ),
        (
            flow(T("forwarding"), 5, {"eth_dst": MAC}, apply(output(1)), cookie=FW),
            f"table {FWD} (forwarding), app firewall: firewall may not write this table",
        ),
        (
            flow(T("forwarding"), 5, {"eth_dst": MAC}, cookie=0x77 << 56),
            "app unknown: unknown may not write this table",
        ),
        (
            flow(T("microseg_dst"), 5, {}, apply(conntrack(7, T("microseg_dst"))), cookie=MS),
            "ct_zone 0x7 is firewall's, not microseg's",
        ),
        (
            flow(T("microseg_dst"), 5, {}, apply(conntrack(8, T("services"))), cookie=MS),
            f"ct recirculation to table {T('services')} not declared",
        ),
        (
            flow(T("forwarding"), 5, {"eth_dst": MAC}, apply(group_action(0x0500_0001)), cookie=L2),
            "group 0x5000001 is services's, not l2_learning's",
        ),
        (
            flow(T("microseg_dst"), 5, {}, apply(set_field("reg1", 1)), cookie=MS),
            "set_field reg1 not declared",
        ),
        (
            flow(T("chains"), 5, {}, apply(set_field("vlan_vid", 0x1000 | 4000)), cookie=SFC),
            "vlan_vid 0xfa0 is nobody's, not chains's",
        ),
        (
            flow(T("services_track"), 5, {}, meter(5), cookie=CANARY),
            "meter not declared",
        ),
        (
            flow(T("microseg"), 5, {}, write_metadata(FROM_FABRIC, FROM_FABRIC), cookie=MS),
            "write_metadata mask 0x1 not declared",
        ),
        (flow(42, 5, {}, cookie=L2), "no such table"),
        # A goto backwards spelled as an output: Open vSwitch takes output:TABLE in a flow-mod
        # and resubmits to table 0 (ofproto/trace loops 0 -> 3 -> 0 ...).
        (
            flow(T("forwarding"), 5, {}, apply(output(ofp.OFPP_TABLE)), cookie=L2),
            "output to OFPP_TABLE (back to table 0)",
        ),
        (
            flow(T("forwarding"), 5, {}, ("write", (output(ofp.OFPP_TABLE),)), cookie=L2),
            "output to OFPP_TABLE (back to table 0)",
        ),
        (
            flow(T("classify"), 5, {}, apply(output(ofp.OFPP_NORMAL)), cookie=L2),
            "output to OFPP_NORMAL",
        ),
        (Flow(T("firewall"), 5, (), (("resubmit", 0),), FW), "instruction resubmit unknown"),
    ],
)
def test_a_flow_that_breaks_its_contract_is_refused_with_what_and_where(bad, breach):
    with pytest.raises(PipelineViolation, match=re.escape(breach)):
        PIPELINE.check(bad)


def l2_network():
    net = leaf_spine(Core())
    net.core.add_app(L2Learning)
    net.start()
    net.send(MACS[0], MACS[1], 0x0800)
    net.send(MACS[1], MACS[0], 0x0800)
    net.advance(1.0)
    return net


def break_host_entry(net) -> tuple:
    """Replace the host entry of MACS[0] on every switch, as a buggy app would: it now also
    rewrites eth_src: the forwarding stage declares no set_field. Returns (key, old flows)."""
    app = net.core.apps[0]
    before = {
        dpid: [f for f in sw.flows() if f.table == T("forwarding") and f.priority == HOST_PRIORITY]
        for dpid, sw in net.switches.items()
    }
    key = next(f.key for f in before[201] if ("eth_dst", MACS[0]) in f.match)
    bad = {
        dpid: [
            flow(
                f.table, f.priority, f.match, apply(set_field("eth_src", MAC), output(1)), cookie=L2
            )
            for f in flows
            if f.key == key
        ]
        for dpid, flows in before.items()
    }
    app.desired.put(("l2", "host", MACS[0]), bad)
    return key, before


def test_strict_mode_raises_before_anything_is_sent():
    net = l2_network()
    key, before = break_host_entry(net)
    with pytest.raises(PipelineViolation, match="action set_field not declared"):
        net.advance(0.5)
    assert [f for f in net.switches[201].flows() if f.key == key] == [
        f for f in before[201] if f.key == key
    ]


def test_production_logs_counts_and_never_sends_it_and_the_old_flows_stay(caplog):
    net = l2_network()
    net.core.strict_pipeline = False
    key, before = break_host_entry(net)
    other = flow(
        T("forwarding"), 7, {"eth_dst": MAC}, apply(output(1)), goto(T("classify")), cookie=L2
    )
    net.core.desired.put(("l2", "new"), {201: [other]})
    with caplog.at_level(logging.ERROR, logger="osken_suite.core"):
        net.advance(0.5)
    for dpid, sw in net.switches.items():
        assert [f for f in sw.flows() if f.key == key] == [f for f in before[dpid] if f.key == key]
    assert other.key not in {f.key for f in net.switches[201].flows()}
    violations = net.core.metrics.pipeline_violations
    assert violations.labels("l2_learning", "forwarding")._value.get() == len(net.switches) + 1
    assert "action set_field not declared" in caplog.text
    assert f"table {FWD} (forwarding), app l2_learning: goto table 0 not declared" in caplog.text
    # Traffic still follows the old entries.
    assert net.converse(MACS[0], MACS[1])


# --- the docs -------------------------------------------------------------------------------------


def test_the_architecture_doc_shows_the_declared_pipeline_and_registry():
    with open(os.path.join(ROOT, "docs", "architecture.md")) as fh:
        doc = fh.read()
    assert PIPELINE.markdown() in doc, "run scripts/pipeline_doc.py"
    assert REGISTRY.markdown() in doc, "run scripts/pipeline_doc.py"


# --- groups: their buckets run as a flow's actions --------------------------------------------


def bucket(*actions) -> Bucket:
    return Bucket(tuple(actions), weight=1)


@pytest.mark.parametrize(
    "bad, breach",
    [
        (
            group(0x0200_0001, "select", [bucket(output(1)), bucket(output(ofp.OFPP_TABLE))]),
            "group 0x2000001 (forwarding), app l2_learning: output to OFPP_TABLE",
        ),
        (
            group(0x0200_0001, "select", [bucket(("push_vlan", 0x8100), output(1))]),
            "app l2_learning: action push_vlan not declared",
        ),
        (
            group(0x0200_0001, "select", [bucket(group_action(0x0500_0001))]),
            "group 0x5000001 is services's, not l2_learning's",
        ),
        (
            group(0x0600_0001, "select", [bucket(set_field("vlan_vid", 0x1000 | 4000))]),
            "vlan_vid 0xfa0 is nobody's, not chains's",
        ),
        (
            group(0x0500_0001, "ff", [bucket(conntrack(7, T("services_track")))]),
            "ct_zone 0x7 is firewall's, not services's",
        ),
        (group(0x7700_0001, "all", [bucket(output(1))]), "group id in no app's range"),
    ],
)
def test_a_group_whose_buckets_break_every_table_it_may_serve_is_refused(bad, breach):
    with pytest.raises(PipelineViolation, match=re.escape(breach)):
        PIPELINE.check_group(bad)


def test_a_refused_group_is_logged_counted_and_never_sent(caplog):
    net = l2_network()
    net.core.strict_pipeline = False
    bad = group(0x0200_7777, "select", [bucket(output(ofp.OFPP_TABLE))])
    net.core.desired.put_groups(("l2", "bad"), {201: [bad]})
    with caplog.at_level(logging.ERROR, logger="osken_suite.core"):
        net.advance(0.5)
    assert 0x0200_7777 not in net.switches[201].groups
    violations = net.core.metrics.pipeline_violations
    assert violations.labels("l2_learning", "forwarding")._value.get() == 1
    assert "group 0x2007777 (forwarding), app l2_learning: output to OFPP_TABLE" in caplog.text
    assert net.converse(MACS[0], MACS[1])


def test_a_flow_naming_a_group_refused_in_the_same_plan_is_refused_with_it(caplog):
    """The switch would refuse the flow (OFPBAC_BAD_OUT_GROUP), and in a bundle that error
    fails every flow of the reload: the flow goes with its group, the rest is sent."""
    net = l2_network()
    net.core.strict_pipeline = False
    bad = group(0x0200_7777, "select", [bucket(output(ofp.OFPP_TABLE))])
    uses = flow(FWD, 9, {"eth_dst": MAC}, apply(group_action(0x0200_7777)), cookie=L2)
    fine = flow(FWD, 9, {"eth_dst": "02:00:00:00:99:99"}, apply(output(1)), cookie=L2)
    net.core.desired.put_groups(("l2", "bad"), {201: [bad]})
    net.core.desired.put(("l2", "bad"), {201: [uses, fine]})
    with caplog.at_level(logging.ERROR, logger="osken_suite.core"):
        net.advance(0.5)
    held = net.switches[201].flows()
    assert 0x0200_7777 not in net.switches[201].groups
    assert not any("group:0x2007777" in str(f) or "2007777" in str(f) for f in held)
    assert any("99:99" in str(f) for f in held)
    assert "names group 0x2007777, which was refused" in caplog.text
    assert net.converse(MACS[0], MACS[1])


def test_refusals_repeated_per_host_cannot_flood_the_log_and_each_kind_is_logged(caplog):
    net = l2_network()
    net.core.strict_pipeline = False
    macs = [f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}" for i in range(250)]
    bad = [flow(FWD, 9, {"eth_dst": m}, apply(set_field("eth_src", MAC)), cookie=L2) for m in macs]
    other = flow(FWD, 8, {}, apply(output(ofp.OFPP_NORMAL)), cookie=L2)
    net.core.desired.put(("l2", "bug"), {dpid: [*bad, other] for dpid in net.switches})
    with caplog.at_level(logging.ERROR, logger="osken_suite.core"):
        net.advance(0.5)
    refused = len(bad) * len(net.switches)
    violations = net.core.metrics.pipeline_violations
    assert violations.labels("l2_learning", "forwarding")._value.get() == refused + len(
        net.switches
    )
    lines = [r.getMessage() for r in caplog.records if "breaks the pipeline" in r.getMessage()]
    assert len(lines) <= 2 + len(str(refused)), lines  # the 1st, 10th, 100th... of each kind
    assert sum("action set_field not declared" in line for line in lines) >= 1
    assert sum("output to OFPP_NORMAL" in line for line in lines) == 1
    assert f"({10 ** (len(str(refused)) - 1)} such refused so far)" in caplog.text


# --- numbers are their app's: no app states flows, groups or meters as another's ----------------


def firewall_on(net) -> Firewall:
    return net.core.add_app(Firewall)


@pytest.mark.parametrize(
    "put, item, breach",
    [
        (  # in the forwarding table l2_learning's cookie passed `check` as l2_learning's
            "put",
            flow(FWD, 9, {"eth_dst": MAC}, apply(output(1)), cookie=L2),
            f"table {FWD} (forwarding), app firewall: cookie 0x2 is l2_learning's, not firewall's",
        ),
        (  # the core's cookie is welcome in every table
            "put",
            flow(FW_T, 9, {}, goto(T("microseg")), cookie=cookie("core")),
            "app firewall: cookie 0x1 is core's, not firewall's",
        ),
        (
            "put_groups",
            group(0x0200_0009, "select", [bucket(output(1))]),
            "group 0x2000009 (?), app firewall: group 0x2000009 is l2_learning's, not firewall's",
        ),
        (
            "put_meters",
            Meter(ofp.OFPM_CONTROLLER, "pktps", 1),
            "app firewall: meter 0xfffffffe is core's, not firewall's",
        ),
    ],
)
def test_an_app_cannot_state_flows_groups_or_meters_with_another_apps_numbers(put, item, breach):
    net = l2_network()
    fw = firewall_on(net)
    with pytest.raises(PipelineViolation, match=re.escape(breach)):
        getattr(fw.desired, put)(("fw", "borrowed"), {201: [item]})


def test_in_production_a_borrowed_number_is_left_out_logged_and_counted_as_its_writers(caplog):
    net = l2_network()
    net.core.strict_pipeline = False
    fw = firewall_on(net)
    borrowed = flow(FWD, 9, {"eth_dst": MAC}, apply(output(1)), cookie=L2)
    own = flow(FW_T, 9, {"eth_type": 0x800, "ipv4_src": "10.9.9.9"}, cookie=FW)
    with caplog.at_level(logging.ERROR, logger="osken_suite.core"):
        fw.desired.put(("fw", "mixed"), {201: [borrowed, own]})
        net.advance(0.5)
    keys = {f.key for f in net.switches[201].flows()}
    assert own.key in keys and borrowed.key not in keys
    violations = net.core.metrics.pipeline_violations
    assert violations.labels("firewall", "forwarding")._value.get() == 1
    assert "cookie 0x2 is l2_learning's, not firewall's" in caplog.text
