"""osken-manager as users run it: exit codes, one-line errors, prompt shutdown."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from controller.cli import LaunchError, module_name
from topologies.harness import wait_listening

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANAGER = [sys.executable, "-m", "controller.cli"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, timeout=30):
    return subprocess.run(
        MANAGER + list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_module_names_from_paths_and_modules():
    assert module_name("apps/l2_learning.py") == "apps.l2_learning"
    assert module_name("apps.l2_learning") == "apps.l2_learning"
    with pytest.raises(LaunchError, match="no such file"):
        module_name("apps/nope.py")


@pytest.mark.parametrize(
    ("spelling", "module"),
    [
        ("apps/firewall", "apps.firewall"),
        ("apps/firewall/", "apps.firewall"),
        ("apps/firewall.py", "apps.firewall"),  # the app was one file before it was a package
        ("apps/canary.py", "apps.services"),
        ("apps.canary", "apps.services"),
        ("apps/sfc.py", "apps.chains"),
        ("apps.sfc", "apps.chains"),
    ],
)
def test_app_packages_and_their_earlier_spellings(spelling, module):
    assert module_name(spelling) == module


def test_an_app_file_may_be_named_without_py_as_a_package_is():
    assert module_name("apps/mirror") == "apps.mirror"
    assert module_name("apps/l2_learning") == "apps.l2_learning"


@pytest.mark.parametrize(
    ("spelling", "now", "metrics"),
    [
        ("apps/canary.py", "apps.services", "osken_services_*, once osken_canary_*"),
        ("apps.sfc", "apps.chains", "osken_chains_*, once osken_sfc_*"),
    ],
)
def test_an_earlier_name_says_what_runs_and_where_its_metrics_went(spelling, now, metrics, caplog):
    with caplog.at_level(logging.WARNING, logger="osken_suite.cli"):
        assert module_name(spelling) == now
    assert f"app {spelling!r} is now called {now}" in caplog.text
    assert metrics in caplog.text


def test_a_users_own_file_with_an_earlier_name_is_never_taken_for_ours(tmp_path, monkeypatch):
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "__init__.py").write_text("")
    (tmp_path / "apps" / "canary.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert module_name("apps/canary.py") == "apps.canary"


def test_earlier_spellings_start_the_same_apps(tmp_path):
    from topologies.harness import Controller

    cfg = tmp_path / "lab.yaml"
    cfg.write_text("services: []\nchains: []\nfirewall: {default: allow}\n")
    old = ["apps/canary.py", "apps.sfc", "apps/firewall.py"]
    with Controller(old, config=str(cfg), log_path=str(tmp_path / "c.log")) as ctl:
        assert ctl.wait_log("apps: l2_learning, services, chains, firewall", timeout=20)
    assert "section" not in ctl.log()  # every section is read by a loaded app


@pytest.mark.parametrize("app", ["apps/nope.py", "apps.nope", "controller.flows"])
def test_unknown_app_is_one_line_and_exit_2(app):
    result = run(app, "--prometheus-port", "0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("osken-manager: ") and app in lines[0]


def test_bad_config_is_one_line_naming_file_line_and_field(tmp_path):
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("l2:\n  mac_age: zero\n")
    result = run("apps/l2_learning.py", "--config", str(cfg), "--prometheus-port", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"osken-manager: bad config: {cfg}:2: l2.mac_age: 'zero' is not of type 'integer'"
    ]


def test_busy_port_is_one_line_and_exit_2():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run(
            "apps/l2_learning.py", "--ofp-tcp-listen-port", str(port), "--prometheus-port", "0"
        )
    assert result.returncode == 2 and "cannot listen" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0_within_2_seconds(sig):
    port = free_port()
    proc = subprocess.Popen(
        MANAGER
        + ["apps/l2_learning.py", "--ofp-tcp-listen-port", str(port), "--prometheus-port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_listening(port, 20)  # until it accepts OpenFlow connections
        start = time.time()
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
        assert time.time() - start < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_reload_on_file_change_and_sighup_keeps_running_config_on_error(tmp_path):
    from topologies.harness import Controller

    cfg = tmp_path / "lab.yaml"
    cfg.write_text("l2:\n  mac_age: 300\n")
    ctl = Controller(["apps/l2_learning.py"], config=str(cfg), log_path=str(tmp_path / "c.log"))
    with ctl:
        time.sleep(1.2)
        cfg.write_text("l2:\n  mac_age: -1\n")
        assert ctl.wait_log(r"config reload rejected.*lab.yaml:2: l2.mac_age", timeout=10)
        cfg.write_text("l2:\n  mac_age: 60\n")
        assert ctl.wait_log(r"config reloaded from", timeout=10)
        ctl.proc.send_signal(signal.SIGHUP)
        assert ctl.wait_log(r"SIGHUP: reloading", timeout=10)
        assert ctl.wait_log(r"config reloaded from", count=2, timeout=10)
        assert ctl.proc.poll() is None


def test_a_route_of_the_wrong_shape_at_start_is_one_line_and_exit_2(tmp_path):
    """It was a traceback and exit 1 (issue 12, item 6)."""
    (tmp_path / "route.yaml").write_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
        "spec:\n  rules:\n    - matches: [{path: /}]\n      backendRefs: [{name: web}]\n"
    )
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("routing: [route.yaml]\n")
    result = run("apps/services", "--config", str(cfg), "--prometheus-port", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"osken-manager: bad config: {tmp_path}/route.yaml:6: spec.rules[0].matches[0].path: "
        "'/' is not of type 'object'"
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ctl-privkey", "key.pem"], "needs both --ctl-privkey and --ctl-cert"),
        (["--ca-certs", "ca.pem"], "--ca-certs needs --ctl-privkey and --ctl-cert"),
        (["--ctl-privkey", "nope.pem", "--ctl-cert", "nope.pem"], "TLS: cannot load"),
    ],
)
def test_tls_flags_that_cannot_work_are_one_line_and_exit_2(tmp_path, flags, message):
    result = run("apps/l2_learning.py", "--prometheus-port", "0", *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.parametrize(
    "flags",
    [
        ["--ofp-tcp-listen-port", "99999"],
        ["--ofp-tcp-listen-port", "-1"],
        ["--prometheus-port", "99999"],
        ["--prometheus-port", "7001", "--ofp-tcp-listen-port", "7001"],
    ],
)
def test_ports_that_cannot_work_are_refused_at_start_with_exit_2(flags):
    """They were a traceback and exit 1, or a controller that stopped after starting."""
    result = run("apps/l2_learning.py", *flags)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "port" in result.stderr.strip().splitlines()[-1]


def test_a_folder_given_as_the_config_is_one_line(tmp_path):
    result = run("apps/l2_learning.py", "--config", str(tmp_path), "--prometheus-port", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"osken-manager: bad config: {tmp_path}: cannot read: not a regular file"
    ]


def test_check_a_good_config_exits_0_without_listening(tmp_path):
    """`--check` (issue 16): a config a reload would take exits 0, and nothing starts: the
    OpenFlow port may be busy."""
    (tmp_path / "rules.json").write_text(
        '{"rules": [{"action": "deny", "protocol": "tcp", "port": 22}]}\n'
    )
    cfg = tmp_path / "lab.yaml"
    cfg.write_text("firewall:\n  rules_file: rules.json\n  default: allow\n")
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        busy = str(s.getsockname()[1])
        result = run(
            "apps/firewall", "--check", "--config", str(cfg), "--ofp-tcp-listen-port", busy
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"osken-manager: {cfg}: config OK for l2_learning, firewall"


@pytest.mark.parametrize(
    ("files", "located"),
    [
        ({"lab.yaml": "l2:\n  mac_age: zero\n"}, "lab.yaml:2: l2.mac_age"),
        (  # the error is in a file the config names: located there
            {
                "lab.yaml": "firewall:\n  rules_file: rules.json\n",
                "rules.json": '{"rules": [\n  {"action": "allow"},\n  {"action": "nope"}\n]}\n',
            },
            "rules.json:3: rules[1].action",
        ),
        (  # only an app's parse_config finds it, as at a reload
            {
                "lab.yaml": "firewall:\n  rules_file: rules.json\n  default: deny\n",
                "rules.json": '{"default": "allow", "rules": []}\n',
            },
            "lab.yaml:3: firewall.default",
        ),
        ({"lab.yaml": "firewal: {}\n"}, "lab.yaml:1: firewal: unknown key"),
    ],
)
def test_check_a_bad_config_exits_2_with_the_located_error(tmp_path, files, located):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cfg = str(tmp_path / "lab.yaml")
    result = run("apps/firewall", "--check", "--config", cfg)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"osken-manager: bad config: {tmp_path}/{located}"), line


def test_check_is_the_check_a_reload_runs(tmp_path):
    """Whatever --check refuses, a reload refuses too (one code path: Core.parse)."""
    from controller.cli import check_config, import_apps
    from controller.config import load_config
    from controller.core import Core
    from controller.metrics import Metrics

    cfg = tmp_path / "lab.yaml"
    cfg.write_text("firewall:\n  rules: [{action: deny, protocol: tcp, port: 99999}]\n")
    modules = import_apps(["apps/firewall"])
    with pytest.raises(LaunchError, match=r"lab.yaml:2: firewall.rules\[0\]"):
        check_config(str(cfg), modules)
    core = Core(metrics=Metrics())
    from apps.firewall import Firewall

    core.add_app(Firewall)
    assert core.reload(lambda: load_config(str(cfg)), 0.0) == {}
    assert core.metrics.config_reloads.labels("rejected")._value.get() == 1


def test_check_needs_a_config():
    result = run("apps/l2_learning.py", "--check")
    assert result.returncode == 2
    assert result.stderr.strip() == "osken-manager: --check needs --config FILE"
