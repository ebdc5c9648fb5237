"""Config errors name the file, the line and the field."""

import pytest

from controller.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return str(path)


def error_of(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def test_valid_config_loads(tmp_path):
    cfg = load_config(
        write(tmp_path, "l2:\n  mac_age: 60\nendpoints:\n  - {name: a, ip: 10.0.0.1}\n")
    )
    assert cfg.section("l2") == {"mac_age": 60}
    assert cfg.section("firewall") is None


def test_empty_config_is_fine(tmp_path):
    assert load_config(write(tmp_path, "")).data == {}


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
        load_config(str(tmp_path / "nope.yaml"))


def test_discovery_and_controller_sections(tmp_path):
    cfg = load_config(
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
    load_config(write(tmp_path, good))
    load_config(write(tmp_path, good))
    bad = good.replace("port: 80", "port: 70000")
    assert error_of(tmp_path, bad).endswith(
        "lab.yaml:3: endpoints[1].ports[0].port: 70000 is greater than the maximum of 65535"
    )
