"""Reproducers from breaking the reload path (issue 12, item 6): each documents a fault.

Every test here states the right outcome; each failed when it was written (a segfault, a hung
loop, a traceback, a half-applied reload, a config applied that the switch could not hold).
Tests that could kill, hang or exhaust the process they run in run their case in a child
process with a time and memory limit.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import textwrap
import time

import pytest

from apps.firewall import Firewall
from apps.l2_learning import L2Learning
from apps.microseg import Microseg
from controller.cli import LaunchError, check_config, import_apps
from controller.config import ConfigError, load_config, load_document
from controller.core import Core
from controller.shim import guarded
from tests.unit.test_fuzz_inputs import BASE, lab_folder, network
from tests.unit.test_l2 import MACS, leaf_spine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL_APPS = ["apps/firewall", "apps/microseg", "apps/services", "apps/chains"]


def write(folder, name: str, text: str | bytes) -> str:
    path = os.path.join(str(folder), name)
    with open(path, "wb") as fh:
        fh.write(text.encode() if isinstance(text, str) else text)
    return path


def alias_bomb(levels: int, indent: str) -> str:
    """YAML of `levels` anchors, each a list of ten aliases of the one before: 10**levels
    leaves from about 70 bytes a level ("billion laughs")."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * 10)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "".join(f"{indent}{line}\n" for line in lines)


def in_child(code: str, timeout: float = 30, memory: int = 1 << 30):
    """Run `code` in a fresh interpreter at the repository root, with limits."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
    )


RELOAD_IN_CHILD = """
    from apps.firewall import Firewall
    from apps.microseg import Microseg
    from controller.config import load_config
    from controller.core import Core
    core = Core()
    core.add_app(Firewall)
    core.add_app(Microseg)
    core.reload(lambda: load_config({path!r}), 1000.0)
    print("refused" if core.config.path is None else "applied")
"""


# --- the process dies or stops ------------------------------------------------------------------


def test_deeply_nested_yaml_is_refused_not_a_segfault(tmp_path):
    path = write(tmp_path, "lab.yaml", "l2: " + "[" * 50_000 + "]" * 50_000 + "\n")
    result = in_child(RELOAD_IN_CHILD.format(path=path))
    assert result.returncode == 0, f"child died: {result.returncode} {result.stderr[-300:]}"
    assert result.stdout.strip() == "refused"


def test_a_fifo_named_by_the_config_does_not_hang_the_reload(tmp_path):
    os.mkfifo(tmp_path / "rules.json")
    path = write(tmp_path, "lab.yaml", "firewall:\n  rules_file: rules.json\n")
    try:
        result = in_child(RELOAD_IN_CHILD.format(path=path), timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the reload hung on the FIFO")
    assert result.stdout.strip() == "refused"


def test_an_alias_bomb_in_a_policy_file_is_refused(tmp_path):
    write(
        tmp_path,
        "policy.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: x\n"
        "  annotations:\n" + alias_bomb(6, "    ") + "spec:\n  podSelector: {}\n",
    )
    path = write(tmp_path, "lab.yaml", "policies: [policy.yaml]\n")
    core = Core()
    core.add_app(Microseg)
    with pytest.raises(ConfigError):
        core.parse(load_config(path))


def test_no_exception_leaves_a_guarded_handler_even_if_reporting_it_fails():
    class Failing:
        class core:  # noqa: N801 (stands in for the Core)
            @staticmethod
            def report_failure(*_):
                raise MemoryError

    def handler(self, ev):
        raise MemoryError

    guarded(handler)(Failing(), None)  # must not raise


# --- at start: a traceback instead of one located line ------------------------------------------

START_CASES = {
    "non-UTF-8 byte in the config": b"l2:\n  mac_age: 60\n# \xff\n",
    "int and str keys in an endpoint": "endpoints:\n  - {name: a, ip: 10.0.0.1, 1: x}\n",
    "a sequence as a mapping key": "? [a, b]\n: c\n",
    "an endpoint that contains itself": (
        "endpoints:\n  - &e {name: a, ip: 10.0.0.1, labels: {x: *e}}\n"
    ),
    "a service that contains itself": "services: &s\n  - {name: a, vip: 10.0.100.1, port: 80, "
    "backends: *s}\n",
    "int and str keys at the top": "1: a\nfoo: b\n",
    "10,000 nested lists": "l2: " + "[" * 10_000 + "]" * 10_000 + "\n",
}


@pytest.mark.parametrize("text", START_CASES.values(), ids=START_CASES.keys())
def test_a_malformed_config_at_start_is_one_located_line(tmp_path, text):
    path = write(tmp_path, "lab.yaml", text)
    with pytest.raises(LaunchError, match=re.escape(path) + r":\d+"):
        check_config(path, import_apps(ALL_APPS))


NAMED_CASES = {
    "non-UTF-8 rules.json": (
        "firewall:\n  rules_file: rules.json\n",
        "rules.json",
        b'{"rules": [{"action": "allow"}]}\xff',
    ),
    "100,000 nested JSON arrays": (
        "firewall:\n  rules_file: rules.json\n",
        "rules.json",
        '{"rules": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ),
    "a policy whose metadata contains itself": (
        "policies: [p.yaml]\n",
        "p.yaml",
        "apiVersion: v1\nkind: NetworkPolicy\nmetadata: &m {name: x, labels: *m}\n",
    ),
    "a rules list that contains itself": ("firewall:\n  rules: &r\n    - *r\n", None, None),
}


@pytest.mark.parametrize("case", NAMED_CASES.values(), ids=NAMED_CASES.keys())
def test_a_malformed_named_file_is_refused_where_it_is_not_as_a_bug(tmp_path, case):
    config, name, text = case
    if name:
        write(tmp_path, name, text)
    path = write(tmp_path, "lab.yaml", config)
    with pytest.raises(LaunchError) as caught:
        check_config(path, import_apps(ALL_APPS))
    assert "bug in the controller" not in str(caught.value)


# --- a config the switch cannot hold is applied, and never reaches the switch -------------------


def fresh_network():
    """The fuzz lab's network, built anew: these cases leave services draining and switches
    holding what the shim would never have sent, so they must not share the cached one."""
    return network.__wrapped__()


def serialize_errors(outbox: dict) -> list[str]:
    """What the shim's _send would raise on: it serializes every message before sending."""
    errors = []
    for msgs in outbox.values():
        for msg in msgs:
            if msg.xid is None:
                msg.set_xid(1)
            try:
                msg.serialize()
            except Exception as exc:
                errors.append(f"{type(msg).__name__}: {type(exc).__name__}: {exc}")
    return errors


UNSENDABLE = {
    # (pattern in the fuzz lab, replacement)
    "rate_limit pps 499.0": ("pps: 500", "pps: 499.0"),
    "rate_limit pps 10**12": ("pps: 500", "pps: 1000000000000"),
    "rate_limit burst 2**40": ("burst: 50", "burst: 1099511627776"),
    "token bucket of 10**300 tokens": (
        "rate_limit: {pps: 500, burst: 50}",
        "rate_limit: {max_tokens: 10, tokens_per_fill: 1" + "0" * 300 + ", fill_interval: 1}",
    ),
    "l2 mac_age 299.0": ("mac_age: 300", "mac_age: 299.0"),
    "controller packet_in_rate 999.0": ("packet_in_rate: 1000", "packet_in_rate: 999.0"),
    "service port 81.0": ("port: 80\n", "port: 81.0\n"),
}


@pytest.mark.parametrize("edit", UNSENDABLE.values(), ids=UNSENDABLE.keys())
def test_a_value_the_switch_cannot_hold_is_refused_or_sent(edit):
    net, cfg = fresh_network(), os.path.join(lab_folder(), "lab.yaml")
    core = net.core
    old, new = edit
    assert old in BASE["lab.yaml"]
    try:
        write(lab_folder(), "lab.yaml", BASE["lab.yaml"].replace(old, new, 1))
        before = core.settings
        out = core.reload(lambda: load_config(cfg), net.now)
        if core.settings is not before:  # applied: then every message must go out
            assert serialize_errors(out) == []
        net.deliver(out)
    finally:
        write(lab_folder(), "lab.yaml", BASE["lab.yaml"])
        net.deliver(core.reload(lambda: load_config(cfg), net.now))


@pytest.mark.parametrize(
    "section",
    [
        "discovery: {probation: .nan}",
        "discovery: {lldp_interval: .nan}",
        "firewall: {stats_interval: .nan}",
        "firewall: {xdp: {threshold_pps: .nan}}",
    ],
)
def test_nan_is_refused(tmp_path, section):
    path = write(tmp_path, "lab.yaml", section + "\n")
    core = Core()
    for app in (L2Learning, Firewall):
        core.add_app(app)
    with pytest.raises(ConfigError):
        core.parse(load_config(path))


def test_nan_lldp_interval_does_not_storm(tmp_path):
    path = write(tmp_path, "lab.yaml", "discovery: {lldp_interval: .nan}\n")
    core = Core()
    core.add_app(L2Learning)
    try:
        core.configure(load_config(path), 1000.0)
    except ConfigError:
        return  # refused: fine
    net = leaf_spine(core)
    net.start()
    net.advance(30)
    assert net.converse(MACS[0], MACS[5])


# --- whether a config loads depends on the one before ------------------------------------------

START_IN_CHILD = """
    from controller.cli import LaunchError, check_config, import_apps
    try:
        check_config({path!r}, import_apps({apps!r}))
    except LaunchError:
        print("refused")
    else:
        print("accepted")
"""

HISTORY = {
    "port: true after port: 1 (rules reused by ==, and True == 1)": (
        "port: 9,",
        ("port: 1,", "port: true,"),
    ),
    "labels {n: '1'} after {n: 1} (json.dumps(default=str) cache key)": (
        "- {name: shop, ip:",
        ("- {name: shop, labels: {n: '1'}, ip:", "- {name: shop, labels: {n: 1}, ip:"),
    ),
}


@pytest.mark.parametrize("case", HISTORY.values(), ids=HISTORY.keys())
def test_a_config_refused_at_start_is_refused_on_reload_whatever_came_before(case):
    net, cfg = fresh_network(), os.path.join(lab_folder(), "lab.yaml")
    core = net.core
    anchor, (first, second) = case
    assert anchor in BASE["lab.yaml"]
    try:
        write(lab_folder(), "lab.yaml", BASE["lab.yaml"].replace(anchor, first, 1))
        net.deliver(core.reload(lambda: load_config(cfg), net.now))
        write(lab_folder(), "lab.yaml", BASE["lab.yaml"].replace(anchor, second, 1))
        # a start in a fresh process: the parsers' caches are global
        fresh = in_child(START_IN_CHILD.format(path=cfg, apps=ALL_APPS))
        assert fresh.stdout.strip() == "refused", fresh.stderr[-300:]
        before = core.settings
        net.deliver(core.reload(lambda: load_config(cfg), net.now))
        assert core.settings is before, "the reload applied what a start refuses"
    finally:
        write(lab_folder(), "lab.yaml", BASE["lab.yaml"])
        net.deliver(core.reload(lambda: load_config(cfg), net.now))


# --- smaller: accepted when it should be refused, refused when it should load -------------------


def test_two_endpoints_with_one_mac_are_refused(tmp_path):
    path = write(
        tmp_path,
        "lab.yaml",
        "endpoints:\n"
        '  - {name: a, ip: 10.0.0.1, mac: "00:00:00:00:00:01"}\n'
        '  - {name: b, ip: 10.0.0.2, mac: "00:00:00:00:00:01"}\n',
    )
    core = Core()
    core.add_app(Microseg)
    with pytest.raises(ConfigError, match="endpoints"):
        core.parse(load_config(path))


def test_keys_are_strings_so_duplicates_are_found_by_value(tmp_path):
    """Keys are strings, as in JSON and Kubernetes: a key YAML 1.2 reads as another type is
    refused where it is, so two keys can never differ only by type."""
    same = write(tmp_path, "same.yaml", "endpoints:\n  - {name: a, ip: 10.0.0.1, "
                 "labels: {yes: a, true: b}}\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"same.yaml:2: endpoints\[0\].labels\[True\]: the key"):
        load_config(same)
    different = write(tmp_path, "different.yaml", "{1: a, '1': b}\n")
    with pytest.raises(ConfigError, match="different.yaml:1"):
        load_document(different)


# --- the real process ---------------------------------------------------------------------------


def test_a_config_file_being_written_is_not_applied_half_written(tmp_path):
    from topologies.harness import Controller

    cfg = tmp_path / "lab.yaml"
    head = "firewall:\n  rules:\n    - {action: allow, protocol: tcp, port: 22}\n"
    cfg.write_text(head + "  default: deny\n")
    log = tmp_path / "c.log"
    with Controller(["apps/firewall"], config=str(cfg), log_path=str(log)) as ctl:
        assert ctl.wait_log(r"firewall: 1 rules, default deny", timeout=20)
        with open(cfg, "w") as fh:  # in place, in two writes
            fh.write(head)
            fh.flush()
            time.sleep(1.6)  # longer than the 1 s poll
            fh.write("    - {action: allow, protocol: tcp, port: 443}\n  default: deny\n")
        assert ctl.wait_log(r"firewall: 2 rules, default deny", timeout=10)
    assert "default allow" not in log.read_text()
