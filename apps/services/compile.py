"""Services as flows and groups: a virtual IP in front of weighted backends.

Two tables. `services` answers ARP for the VIP (through the controller) and sends the
service's packets, and its backends' replies, through conntrack zone 9 with NAT, so a tracked
connection is translated both ways by the switch alone. `services_track` then:

- for a packet of a connection we committed (ct_mark MARK): points the frame at the backend's
  MAC (originals, already NATed to the backend's IP) or makes it come from the VIP's MAC
  (replies, already un-NATed back to the VIP);
- for a new connection to the VIP: asks the controller, which picks the backend (method
  "exact"), or lets a select group pick (method "switch");
- drops anything else sent to the VIP.

A service with an L7 waypoint (method "waypoint") takes none of that: `services` sends its
VIP:port on to `services_track`, where a select group over the waypoint's replicas points the
frame at one replica's MAC and sends it toward it. The replica owns the VIP for that port (on
its loopback) and answers from it; nothing is translated. Every switch holds the same group, and
Open vSwitch hashes a connection's packets alike on each, so a packet already pointed at a
replica keeps that replica at the next switch.

A backend is chosen by committing the connection with nat(dst=backend) and the mark. That
commit sits in a fast-failover group per (service, primary backend) on every switch, whose
first bucket watches the port toward the backend and whose others fall back to the backups:
when a switch sees that way go down, new connections move to a backup before the controller
has heard of it. Established connections never move: conntrack holds their translation.

Hairpin: a backend that calls its own service and is given itself. After the destination
NAT its packet goes from the backend to the backend, which the backend's kernel would drop
(a source address of its own), and back out the port it came in on, which OpenFlow does
only when told OFPP_IN_PORT. So such a packet (known by its addresses: source and
destination both the backend's) is committed a second time, in zone SNAT_ZONE with
nat(src=VIP), and sent back out its in_port: the backend serves a connection from the VIP.
Its replies, sent to the VIP, come through SNAT_ZONE first and then zone CT_ZONE (the
reverse order of the translations), and go back out their in_port as from the VIP. One ct()
takes one nat (Open vSwitch refuses src and dst together), hence the second zone, as OVN
does for its load balancers' hairpin traffic. The service's VIP rides along in SERVICE_REG
(registers survive recirculation) so that the second commit knows which VIP to take.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from os_ken.ofproto.ofproto_v1_3 import OFPP_IN_PORT as IN_PORT

from apps.services.connlimit import COUNTED_MARK
from apps.services.settings import WAYPOINT, Backend, Service
from apps.services.weights import switch_buckets
from controller.flows import (
    Bucket,
    Flow,
    Group,
    apply,
    conntrack,
    flow,
    group,
    group_action,
    nat,
    output,
    set_field,
    to_controller,
)
from controller.matches import CT_NEW, CT_RPL, CT_TRK, IP_PROTOCOLS
from controller.packets import ETH_TYPE_ARP, ETH_TYPE_IP
from controller.pipeline import REGISTRY, Pipeline

COOKIE = REGISTRY.cookie("services")
CT_ZONE = REGISTRY.value("ct_zone", "services")
# Hairpin connections' second translation: the backend's own address to the VIP.
SNAT_ZONE = REGISTRY.value("ct_zone", "services", "snat")
MARK = 0x5E  # ct_mark of the connections this app translated
HAIRPIN_MARK = 0x5F  # ct_mark of their SNAT_ZONE entries
# The VIP, as an integer, of the service whose packet this is (hairpin).
SERVICE_REG = REGISTRY.get("register", "services").field
GROUP_BASE = REGISTRY.get("group", "services").first
MAX_BACKENDS = 127  # per service: group numbers 1..127 are its backends', 128.. its routes'
MAX_ROUTES = 128
PROTOCOLS = {name: IP_PROTOCOLS[name] for name in ("tcp", "udp")}

ARP_PRIORITY = 300
BACKEND_ARP_PRIORITY = 290  # services: a copy of a backend's ARP, to learn its MAC
HAIRPIN_PRIORITY = 350  # services, track: a backend's own connection to its service
COUNTED_PRIORITY = 400  # track: after a capped service's counting zone (limit_flows)
COUNTED_REPLY_PRIORITY = 401  # track: a reply after it (a packet may be from and to the VIP)
COUNTED_HAIRPIN_PRIORITY = 402  # track: a hairpin reply after it, out its in_port
REFUSED_PRIORITY = 390  # track: what its counting zone refused
STEER_PRIORITY = 300  # track: MACs of translated packets
NEW_PRIORITY = 200  # track: new connections to a VIP (+ route order for "switch" sources)
VIP_PRIORITY = 200  # services: to the VIP
REPLY_PRIORITY = 190  # services: from a backend's service port (its replies to the VIP: above)
DROP_PRIORITY = 100  # anything else addressed to a VIP
PACKET_IN_BYTES = 0xFFFF  # the controller sends the whole packet back out


def vip_mac(vip: str) -> str:
    """The MAC the VIP answers ARP with: locally administered, derived from the address.

    >>> vip_mac("10.0.100.10")
    '02:5e:0a:00:64:0a'
    """
    return "02:5e:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(vip).packed)


def ff_group_id(service_index: int, backend_index: int) -> int:
    return GROUP_BASE + service_index * 256 + 1 + backend_index


def select_group_id(service_index: int, route_index: int) -> int:
    return GROUP_BASE + service_index * 256 + 128 + route_index


def _l4(service: Service, direction: str, port: int) -> dict:
    return {"ip_proto": PROTOCOLS[service.protocol], f"{service.protocol}_{direction}": port}


def _vip_number(service: Service) -> int:
    return int(ipaddress.IPv4Address(service.vip))


def service_tag(service: Service):
    """Set SERVICE_REG to the service's VIP: the hairpin commit reads it after the
    recirculation (a packet-out, which starts with clear registers, sets it too)."""
    return set_field(SERVICE_REG, _vip_number(service))


def commit_to(backend: Backend, table: int):
    """Commit a new connection to `backend`: translated, marked, then on to `table`."""
    return conntrack(
        CT_ZONE,
        table,
        commit=True,
        nested=(nat(backend.ip, backend.port), set_field("ct_mark", MARK)),
    )


class ServicesCompiler:
    def __init__(self, pipeline: Pipeline) -> None:
        self.services_table = pipeline.table("services")
        self.track = pipeline.table("services_track")
        self.forwarding = pipeline.table("forwarding")
        self._go_on = pipeline.go_on("services_track")
        self._to_track = pipeline.goto("services", "services_track")
        self._arp_on = pipeline.go_on("services")

    def _f(self, table: int, priority: int, match: dict, *instructions) -> Flow:
        return flow(table, priority, match, *instructions, cookie=COOKIE)

    def _arp(self, service: Service) -> Flow:
        return self._f(
            self.services_table,
            ARP_PRIORITY,
            {"eth_type": ETH_TYPE_ARP, "arp_tpa": service.vip},
            apply(to_controller(128)),
        )

    def _backend_arps(self, service: Service) -> list[Flow]:
        """Backends' MACs are learned here, after the firewall and microseg, never from a frame
        that only reached classify (one ARP from any port could claim a backend). A waypointed
        service learns them too, so they are known the moment a reload takes its waypoint away.
        """
        return [
            self._f(
                self.services_table,
                BACKEND_ARP_PRIORITY,
                {"eth_type": ETH_TYPE_ARP, "arp_spa": b.ip},
                apply(to_controller(128)),
                self._arp_on,
            )
            for b in service.backends
        ]

    def waypoint_flows(self, service: Service) -> list[Flow]:
        """A waypointed service: ARP for its VIP, its VIP:port on to `services_track` untracked
        (where the replicas' select group takes it), anything else to the VIP dropped."""
        vip = {"eth_type": ETH_TYPE_IP, "ipv4_dst": service.vip}
        return [
            self._arp(service),
            *self._backend_arps(service),
            self._f(
                self.services_table,
                VIP_PRIORITY,
                {**vip, **_l4(service, "dst", service.port)},
                self._to_track,
            ),
            self._f(self.services_table, DROP_PRIORITY, vip),
            self._f(self.track, DROP_PRIORITY, vip),
        ]

    def waypoint_group(self, index: int, replicas: list[tuple[Backend, int]]) -> Group:
        """The select group over the live replicas: (replica, the port toward it) each."""
        buckets = [
            Bucket((set_field("eth_dst", b.mac), output(port)), weight=1, watch_port=port)
            for b, port in replicas
        ]
        return group(select_group_id(index, 0), "select", buckets)

    def service_flows(self, service: Service, limit_zone: int | None = None) -> list[Flow]:
        """Per switch, the same for all: catch the VIP, track it, steer replies back. With
        `limit_zone`, its connections are counted there first (limit_flows)."""
        if service.method == WAYPOINT:
            return self.waypoint_flows(service)
        vip = {"eth_type": ETH_TYPE_IP, "ipv4_dst": service.vip}
        track = conntrack(CT_ZONE, self.track, nested=(nat(),))
        # A capped service's replies pass its counting zone last (limit_flows go on from there).
        count = () if limit_zone is None else (conntrack(limit_zone, self.track),)
        first = track if limit_zone is None else self._count(limit_zone)
        flows = [
            self._arp(service),
            *self._backend_arps(service),
            self._f(
                self.services_table,
                VIP_PRIORITY,
                {**vip, **_l4(service, "dst", service.port)},
                apply(service_tag(service), first),
            ),
            self._f(self.services_table, DROP_PRIORITY, vip),
            self._f(self.track, DROP_PRIORITY, vip),
            # A hairpin reply whose source translation is undone: now the destination's.
            self._f(
                self.track,
                HAIRPIN_PRIORITY,
                {
                    "eth_type": ETH_TYPE_IP,
                    "ct_state": (CT_TRK | CT_RPL, CT_TRK | CT_RPL),
                    "ct_mark": HAIRPIN_MARK,
                },
                apply(track),
            ),
            self._f(
                self.track,
                STEER_PRIORITY,
                {
                    "eth_type": ETH_TYPE_IP,
                    "ipv4_src": service.vip,
                    "ct_state": (CT_TRK | CT_RPL, CT_TRK | CT_RPL),
                    "ct_mark": MARK,
                },
                *((apply(*count),) if count else self._from_vip(service)),
            ),
        ]
        if limit_zone is not None:
            flows += self.limit_flows(service, limit_zone, track)
        for b in service.backends:
            flows.append(
                self._f(
                    self.services_table,
                    REPLY_PRIORITY,
                    {"eth_type": ETH_TYPE_IP, "ipv4_src": b.ip, **_l4(service, "src", b.port)},
                    apply(track),
                )
            )
            if b.mac:
                flows.append(
                    self._f(
                        self.track,
                        STEER_PRIORITY,
                        {
                            "eth_type": ETH_TYPE_IP,
                            "ipv4_dst": b.ip,
                            "ct_state": (CT_TRK, CT_TRK | CT_RPL),
                            "ct_mark": MARK,
                        },
                        apply(set_field("eth_dst", b.mac)),
                        self._go_on,
                    )
                )
                flows += self.hairpin_flows(service, b, limit_zone)
        return flows

    def _from_vip(self, service: Service) -> tuple:
        """A reply, its translation undone: from the VIP's MAC, on to the next stage."""
        return apply(set_field("eth_src", vip_mac(service.vip))), self._go_on

    def _count(self, zone: int):
        """Commit to the counting zone, marked: a commit past the zone's limit is refused, and
        the packet comes back unmarked (Open vSwitch says nothing else)."""
        return conntrack(
            zone, self.track, commit=True, nested=(set_field("ct_mark", COUNTED_MARK),)
        )

    def limit_flows(self, service: Service, zone: int, track) -> list[Flow]:
        """After the counting zone: a counted packet to the VIP goes on to the translation
        (zone CT_ZONE), an uncounted one (refused: the cap is reached) is dropped before the
        new-connection flows could take it, and a reply goes on as from the VIP."""
        to_vip = {"eth_type": ETH_TYPE_IP, "ipv4_dst": service.vip, "ct_zone": zone}
        to_vip.update(_l4(service, "dst", service.port))
        from_vip = {"eth_type": ETH_TYPE_IP, "ipv4_src": service.vip, "ct_zone": zone}
        from_vip.update(_l4(service, "src", service.port))
        return [
            self._f(
                self.track, COUNTED_PRIORITY, {**to_vip, "ct_mark": COUNTED_MARK}, apply(track)
            ),
            self._f(self.track, REFUSED_PRIORITY, to_vip),
            self._f(self.track, COUNTED_REPLY_PRIORITY, from_vip, *self._from_vip(service)),
        ]

    def hairpin_flows(
        self, service: Service, b: Backend, limit_zone: int | None = None
    ) -> list[Flow]:
        """A backend's connections to its own service that were given the backend itself:
        the second translation, to the VIP, both ways, and out the port they came in on. With
        `limit_zone` (a capped service), the reply passes that counting zone last."""
        ip = {"eth_type": ETH_TYPE_IP}
        tagged = {SERVICE_REG: _vip_number(service)}
        original = {"ct_state": (CT_TRK, CT_TRK | CT_RPL)}
        reply = {"ct_state": (CT_TRK | CT_RPL, CT_TRK | CT_RPL)}
        as_vip = (set_field("eth_src", vip_mac(service.vip)), set_field("eth_dst", b.mac))
        back = {
            **ip,
            "ipv4_src": service.vip,
            **_l4(service, "src", service.port),
            "ipv4_dst": b.ip,
        }
        snat = conntrack(
            SNAT_ZONE,
            self.track,
            commit=True,
            nested=(nat(src=service.vip), set_field("ct_mark", HAIRPIN_MARK)),
        )
        flows = [
            # Its reply to the VIP: undo the source translation first.
            self._f(
                self.services_table,
                HAIRPIN_PRIORITY,
                {**ip, "ipv4_src": b.ip, **_l4(service, "src", b.port), "ipv4_dst": service.vip},
                apply(service_tag(service), conntrack(SNAT_ZONE, self.track, nested=(nat(),))),
            ),
            # From the backend to the backend after the destination NAT: from the VIP instead.
            self._f(
                self.track,
                HAIRPIN_PRIORITY,
                {
                    **ip,
                    "ipv4_src": b.ip,
                    "ipv4_dst": b.ip,
                    **_l4(service, "dst", b.port),
                    **tagged,
                    **original,
                    "ct_mark": MARK,
                },
                apply(snat),
            ),
            self._f(
                self.track,
                HAIRPIN_PRIORITY,
                {
                    **ip,
                    "ipv4_src": service.vip,
                    "ipv4_dst": b.ip,
                    **_l4(service, "dst", b.port),
                    **original,
                    "ct_mark": HAIRPIN_MARK,
                },
                apply(*as_vip, output(IN_PORT)),
            ),
            # The reply, both translations undone: from the VIP, back out its in_port.
            self._f(
                self.track,
                HAIRPIN_PRIORITY,
                {**back, **tagged, **reply, "ct_mark": MARK},
                apply(*as_vip, output(IN_PORT))
                if limit_zone is None
                else apply(conntrack(limit_zone, self.track)),
            ),
        ]
        if limit_zone is not None:  # counted: above limit_flows' reply, which would forward it
            flows.append(
                self._f(
                    self.track,
                    COUNTED_HAIRPIN_PRIORITY,
                    {**back, **tagged, "ct_zone": limit_zone},
                    apply(*as_vip, output(IN_PORT)),
                )
            )
        return flows

    def new_connection_flows(self, index: int, service: Service, has_group) -> list[Flow]:
        """New connections to the VIP: to the controller, or per route to its select group."""
        match = {
            "eth_type": ETH_TYPE_IP,
            "ipv4_dst": service.vip,
            **_l4(service, "dst", service.port),
            "ct_state": (CT_TRK | CT_NEW, CT_TRK | CT_NEW | CT_RPL),
            "ct_mark": 0,
        }
        if service.method == "exact":
            return [self._f(self.track, NEW_PRIORITY, match, apply(to_controller(PACKET_IN_BYTES)))]
        if service.method == WAYPOINT:  # untracked: every packet clients send it
            match = {k: v for k, v in match.items() if k not in ("ct_state", "ct_mark")}
        flows = []
        n = len(service.routes)
        for r, route in enumerate(service.routes):
            if not has_group(r):
                continue
            act = apply(group_action(select_group_id(index, r)))
            if route.sources is None:
                flows.append(self._f(self.track, NEW_PRIORITY + n - r, match, act))
                continue
            for net in route.sources:
                m = {**match, "ipv4_src": (str(net.network_address), str(net.netmask))}
                flows.append(self._f(self.track, NEW_PRIORITY + n - r, m, act))
        return flows

    def failover_group(
        self,
        index: int,
        service: Service,
        backend: Backend,
        backups: list[Backend],
        watch: Callable[[Backend], list[int]],
    ) -> Group | None:
        """This switch's fast-failover group for `backend`: it, while any port toward it is
        up (one bucket per port), else the first backup that way. None when the switch has no
        port to watch for it."""
        ports = watch(backend)
        if not ports:
            return None
        buckets = [Bucket((commit_to(backend, self.track),), watch_port=p) for p in ports]
        for k in backups:
            if k.key != backend.key:
                buckets += [Bucket((commit_to(k, self.track),), watch_port=p) for p in watch(k)]
        return group(ff_group_id(index, service.backends.index(backend)), "ff", buckets)

    def select_group(
        self, index: int, r: int, choices: list[tuple[Backend, object]], via: Callable
    ) -> Group:
        """A route's split as a select group: Open vSwitch hashes each new flow to a bucket.
        The buckets are weights.switch_buckets': its table of 256 hash values comes within 0.2
        points of the split (a backend may have two buckets)."""
        buckets = [
            Bucket((via(choices[i][0]),), weight=w)
            for i, w in switch_buckets([w for _, w in choices])
        ]
        return group(select_group_id(index, r), "select", buckets)
