"""Port mirror: copies of what switch ports receive, sent out of a monitor port (a SPAN session).

    mirror:
      - {dpid: 1, ports: [1, 2], to: 3}   # what s1 receives on ports 1 and 2, also out of 3

The `mirror` stage sits just before forwarding: what the policy stages dropped is not copied.
"""

from types import MappingProxyType

from controller.app import SuiteApp
from controller.flows import apply, flow, output
from controller.pipeline import REGISTRY

PORT = {"type": "integer", "minimum": 1, "maximum": 0xFFFFFF00}  # OpenFlow 1.3: OFPP_MAX
SESSION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["dpid", "ports", "to"],
    "properties": {
        "dpid": {"type": "integer", "minimum": 1},
        "ports": {"type": "array", "items": PORT, "minItems": 1, "uniqueItems": True},
        "to": PORT,
    },
}


class PortMirror(SuiteApp):
    """The `mirror:` sessions, as one flow per mirrored port in the mirror stage."""

    name = "mirror"
    config_section = "mirror"
    config_schemas = MappingProxyType({"mirror": {"type": "array", "items": SESSION}})
    requires = ("apps.l2_learning",)
    cookie = REGISTRY.cookie("mirror")

    def parse_config(self, section, config) -> dict[tuple[int, int], tuple[int, ...]]:
        """{(dpid, mirrored port): monitor ports}; ConfigError if a monitor port is mirrored."""
        sessions: dict[tuple[int, int], tuple[int, ...]] = {}
        for i, s in enumerate(section or []):
            if s["to"] in s["ports"]:
                raise config.error(("mirror", i, "to"), "the monitor port is a mirrored port")
            for port in s["ports"]:
                sessions[s["dpid"], port] = tuple(
                    sorted({*sessions.get((s["dpid"], port), ()), s["to"]})
                )
        return sessions

    def configure(self, settings, now: float) -> None:
        table, go_on = self.core.pipeline.table("mirror"), self.core.pipeline.go_on("mirror")
        flows: dict[int, list] = {}
        for (dpid, port), monitors in settings.items():
            copies = apply(*(output(m) for m in monitors))
            flows.setdefault(dpid, []).append(
                flow(table, 100, {"in_port": port}, copies, go_on, cookie=self.cookie)
            )
        self.desired.put("mirror", flows)
