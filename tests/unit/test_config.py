"""Config errors name the file, the line and the field."""

import math

import pytest
import yaml

from apps.l2_learning import L2Learning
from controller.config import ConfigError, Loader, dump_documents, load_config, load_documents
from controller.core import Core


def check(path, apps=(L2Learning,)):
    """Read a config and check its sections as the controller does, with `apps` loaded."""
    config = load_config(path)
    core = Core()
    for app in apps:
        core.add_app(app)
    core.parse(config, warn=False)
    return config


def write(tmp_path, text):
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return str(path)


def error_of(tmp_path, text, apps=(L2Learning,)):
    with pytest.raises(ConfigError) as info:
        check(write(tmp_path, text), apps)
    return str(info.value)


def test_valid_config_loads(tmp_path):
    cfg = check(write(tmp_path, "l2:\n  mac_age: 60\nendpoints:\n  - {name: a, ip: 10.0.0.1}\n"))
    assert cfg.section("l2") == {"mac_age": 60}
    assert cfg.section("firewall") is None


def test_empty_config_is_fine(tmp_path):
    assert check(write(tmp_path, "")).data == {}


def test_unknown_top_level_key(tmp_path):
    assert error_of(tmp_path, "l2: {}\nfirwall: {}\n").endswith("lab.yaml:2: firwall: unknown key")


def test_unknown_nested_key_points_at_it(tmp_path):
    msg = error_of(tmp_path, "l2:\n  mac_age: 5\n  mac_aeg: 5\n")
    assert msg.endswith("lab.yaml:3: l2.mac_aeg: unknown key")


def test_bad_value_names_field_and_line(tmp_path):
    msg = error_of(
        tmp_path, "endpoints:\n  - name: a\n    ip: 10.0.0.1\n    ports:\n      - {port: 70000}\n"
    )
    assert "lab.yaml:5: endpoints[0].ports[0].port: 70000 is greater than the maximum" in msg


def test_yaml_syntax_error_has_a_line(tmp_path):
    assert "lab.yaml:3: syntax error" in error_of(tmp_path, "l2:\n  mac_age: 5\n bad: [\n")


def test_duplicate_keys_are_errors(tmp_path):
    assert error_of(tmp_path, "l2: {}\nl2: {}\n").endswith("lab.yaml:2: l2: duplicate key")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        check(str(tmp_path / "nope.yaml"))


def test_discovery_and_controller_sections(tmp_path):
    cfg = check(
        write(
            tmp_path,
            "discovery: {probation: 0.5, lldp_interval: 2}\n"
            "controller: {packet_in_rate: 500, packet_in_burst: 50}\n",
        )
    )
    assert cfg.section("discovery")["probation"] == 0.5
    assert "lab.yaml:1: discovery.probe: unknown key" in error_of(
        tmp_path, "discovery: {probe: 1}\n"
    )
    assert "controller.packet_in_rate: -1 is less than the minimum of 0" in error_of(
        tmp_path, "controller: {packet_in_rate: -1}\n"
    )


def test_list_items_checked_once_but_a_changed_item_is_checked_again(tmp_path):
    """Endpoints valid at the last load are not checked again; an edited one is, and located."""
    good = (
        "endpoints:\n  - {name: a, ip: 10.0.0.1}\n"
        "  - {name: b, ip: 10.0.0.2, ports: [{port: 80}]}\n"
    )
    check(write(tmp_path, good))
    check(write(tmp_path, good))
    bad = good.replace("port: 80", "port: 70000")
    assert error_of(tmp_path, bad).endswith(
        "lab.yaml:3: endpoints[1].ports[0].port: 70000 is greater than the maximum of 65535"
    )


# --- YAML 1.2 core schema: every input reads as Kubernetes users write it (docs/semantics.md) --

# (scalar as written, value under YAML 1.2 core). The comment is what YAML 1.1 (PyYAML's
# SafeLoader, used before) made of it.
YAML_12_SCALARS = [
    ("20:21", "20:21"),  # 1.1: 1221 (base 60)
    ("22:00", "22:00"),  # 1.1: 1320
    ("1:30:00", "1:30:00"),  # 1.1: 5400
    ("yes", "yes"),  # 1.1: True
    ("no", "no"),  # 1.1: False
    ("on", "on"),  # 1.1: True
    ("off", "off"),  # 1.1: False
    ("Yes", "Yes"),  # 1.1: True
    ("010", 10),  # 1.1: 8 (octal)
    ("0o10", 8),  # 1.1: the string '0o10'
    ("0x10", 16),
    ("0b10", "0b10"),  # 1.1: 2
    ("1_000", "1_000"),  # 1.1: 1000
    ("1e3", 1000.0),  # 1.1 (PyYAML): the string '1e3'
    ("2001-12-14", "2001-12-14"),  # 1.1: a datetime.date
    ("=", "="),  # 1.1 (PyYAML): an error (the 'value' type)
    ("true", True),
    ("False", False),
    ("~", None),
    ("null", None),
    ("", None),
    (".inf", float("inf")),
    ("-.Inf", float("-inf")),
    ("'20:21'", "20:21"),
    ("'yes'", "yes"),
]


@pytest.mark.parametrize(("written", "value"), YAML_12_SCALARS)
def test_yaml_reads_with_1_2_core_semantics(written, value):
    data = yaml.load(f"v: {written}\n", Loader=Loader)
    assert data["v"] == value and type(data["v"]) is type(value)


def test_yaml_nan_reads_as_nan():
    assert math.isnan(yaml.load("v: .nan\n", Loader=Loader)["v"])


def test_merge_keys_merge_and_explicit_keys_win(tmp_path):
    text = "base: &b {a: 1, c: 2}\nx:\n  <<: *b\n  c: 3\ny:\n  <<: [*b, {d: 4}]\n"
    assert yaml.load(text, Loader=Loader) == {
        "base": {"a": 1, "c": 2},
        "x": {"a": 1, "c": 3},
        "y": {"a": 1, "c": 2, "d": 4},
    }
    (tmp_path / "p.yaml").write_text(text)
    assert load_documents(str(tmp_path / "p.yaml"))[0].data["x"] == {"a": 1, "c": 3}


def test_a_merge_of_a_scalar_is_refused_with_its_line(tmp_path):
    assert "lab.yaml:2: syntax error" in error_of(tmp_path, "l2:\n  <<: 5\n")


def test_duplicate_keys_in_policy_files_are_located(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a: 1\n---\nkind: x\nspec:\n  b: 1\n  b: 2\n")
    with pytest.raises(ConfigError, match=r"p.yaml:6: spec.b: duplicate key"):
        load_documents(str(path))


def test_duplicate_key_is_refused_even_if_a_merge_brings_the_same_key(tmp_path):
    msg = error_of(tmp_path, "x: &x {mac_age: 1}\nl2:\n  <<: *x\n  mac_age: 2\n  mac_age: 3\n")
    assert msg.endswith("lab.yaml:5: l2.mac_age: duplicate key")


def test_a_1_1_boolean_is_refused_where_a_boolean_is_wanted(tmp_path):
    from apps.firewall import Firewall

    msg = error_of(tmp_path, "firewall:\n  stateful: yes\n", (Firewall,))
    assert msg.endswith("lab.yaml:2: firewall.stateful: 'yes' is not of type 'boolean'")


def test_dump_documents_reads_back_unchanged():
    docs = [{"a": "yes", "b": "0o10", "c": "1e3", "d": "20:21", "e": True, "f": [1, None]}]
    assert list(yaml.load_all(dump_documents(docs), Loader=Loader)) == docs


def test_label_values_are_strings_as_in_kubernetes(tmp_path):
    """`version: 1.10` would read as the number 1.1 and silently match "1.1", not "1.10"."""
    msg = error_of(
        tmp_path, "endpoints:\n  - name: a\n    ip: 10.0.0.1\n    labels: {version: 1.10}\n"
    )
    assert msg.endswith("lab.yaml:4: endpoints[0].labels.version: 1.1 is not a string: quote it")
    cfg = check(write(tmp_path, "endpoints:\n  - {name: a, ip: 10.0.0.1, labels: {x: yes}}\n"))
    assert cfg.section("endpoints")[0]["labels"] == {"x": "yes"}


def test_an_endpoint_address_with_an_ipv6_zone_is_refused_where_it_is_written(tmp_path):
    """fe80::1%eth0 names an interface of one host; no switch matches a zone, and os-ken's
    encoder (netaddr) cannot send it: the flows failed at send time instead."""
    from apps.microseg import Microseg

    msg = error_of(tmp_path, "endpoints:\n  - {name: a, ip: 'fe80::1%eth0'}\n", (Microseg,))
    assert msg.endswith("lab.yaml:2: endpoints[0].ip: 'fe80::1%eth0': a zone (%...) is a host's")
