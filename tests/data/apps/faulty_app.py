"""A suite app that raises in every event hook: the controller must carry on without it.

Used by tests/integration/test_failure_isolation.py as `osken-manager ... faulty_app.py`.
"""

from controller.app import SuiteApp


class Faulty(SuiteApp):
    name = "faulty"

    def _fail(self, *args) -> None:
        raise RuntimeError("faulty app")

    on_packet_in = on_topology_change = on_switch_ready = on_switch_synced = tick = _fail
