"""A validation that does not finish refuses the config with a reason: before, Python's
subprocess.TimeoutExpired went out of `envoy.check`, so `--check` ended in a traceback and a
reload was logged as a bug in the controller instead of naming mesh.waypoint."""

import pytest

from controller.config import ConfigError
from tests.unit.test_waypoint import config, fake_runner, settings_of  # noqa: F401 (autouse)
from vnf.waypoint import envoy


def test_an_envoy_that_gives_no_verdict_in_time_refuses_the_config_at_mesh_waypoint(
    tmp_path, monkeypatch
):
    slow = tmp_path / "envoy"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    monkeypatch.setattr(envoy, "envoy_binary", lambda: str(slow))
    monkeypatch.setattr(envoy, "VALIDATE_TIMEOUT", 0.2)
    with pytest.raises(ConfigError) as refused:
        settings_of(config(tmp_path, ["traffic-routing.yml"]))
    assert "mesh.waypoint" in str(refused.value)
    assert "gave no verdict in 0.2 s" in str(refused.value)
