"""What the apps share on a switch, and who owns which part: one declared table.

Flow cookies, group and meter ids, conntrack zones, metadata and register bits and VLAN ids
live in one number space per switch. Each app takes its part from here (`REGISTRY.cookie(app)`,
`REGISTRY.value("ct_zone", app)`, ...) instead of a constant of its own, so two apps can never
pick the same number unnoticed: `Registry.overlaps()` lists any two owners whose ranges meet
(a unit test keeps it empty), and `Pipeline.check` refuses a flow that uses a number its app
does not own.

>>> REGISTRY.cookie("firewall") == 0x03 << 56
True
>>> REGISTRY.owner("cookie", 0x03)
'firewall'
>>> REGISTRY.overlaps()
[]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations

from os_ken.ofproto import ofproto_v1_3 as ofp

COOKIE_SHIFT = 56  # an app's flows carry its byte in the cookie's top 8 bits
KINDS = ("cookie", "group", "meter", "ct_zone", "metadata", "register", "vlan_vid")


@dataclass(frozen=True)
class Allocation:
    """`owner`'s numbers `first`..`last` (inclusive) of one kind.

    Kinds: "cookie" (the cookie's top byte), "group" and "meter" (ids), "ct_zone" (Open
    vSwitch conntrack zones), "metadata" and "register" (bit positions of the OpenFlow metadata
    or of the Nicira register named in `field`, e.g. "reg0"), "vlan_vid" (VLAN ids, 12 bits).
    `name` tells an owner's allocations of one kind apart; `purpose` is for the docs.
    """

    kind: str
    owner: str
    first: int
    last: int
    name: str = ""
    purpose: str = ""
    field: str = ""

    @property
    def mask(self) -> int:
        """For bit kinds: the bits as a mask (bit 0 is the least significant)."""
        return ((1 << (self.last - self.first + 1)) - 1) << self.first

    def __contains__(self, number: int) -> bool:
        return self.first <= number <= self.last


class Registry:
    """The allocations, looked up by (kind, owner, name).

    Raises:
        ValueError: at construction, for an unknown kind or an empty range.
    """

    def __init__(self, allocations: Iterable[Allocation]) -> None:
        self.allocations = tuple(allocations)
        for a in self.allocations:
            if a.kind not in KINDS or a.first > a.last:
                raise ValueError(f"bad allocation {a}")
        self._by_owner: dict[tuple[str, str], tuple[Allocation, ...]] = {}
        for a in self.allocations:
            key = (a.kind, a.owner)
            self._by_owner[key] = (*self._by_owner.get(key, ()), a)

    def get(self, kind: str, owner: str, name: str = "") -> Allocation:
        """The allocation; KeyError names what is missing."""
        for a in self._by_owner.get((kind, owner), ()):
            if a.name == name:
                return a
        raise KeyError(f"no {kind} allocation {name!r} for {owner!r} in the registry")

    def of(self, kind: str, owner: str) -> tuple[Allocation, ...]:
        """All of `owner`'s allocations of `kind` (empty if it has none)."""
        return self._by_owner.get((kind, owner), ())

    def value(self, kind: str, owner: str, name: str = "") -> int:
        """The single number an allocation holds (a zone, a meter id)."""
        a = self.get(kind, owner, name)
        if a.first != a.last:
            raise ValueError(f"{kind} {name!r} of {owner!r} is a range, not one number")
        return a.first

    def cookie(self, owner: str) -> int:
        """The cookie of `owner`'s flows: its byte in the top 8 bits, the rest zero."""
        return self.value("cookie", owner) << COOKIE_SHIFT

    def owner(self, kind: str, number: int, field: str = "") -> str | None:
        """Who owns `number` of `kind` (for "cookie": the cookie's top byte), or None."""
        for a in self.allocations:
            if a.kind == kind and a.field == field and number in a:
                return a.owner
        return None

    def bits(self, kind: str, owner: str, field: str = "") -> int:
        """Every bit of `kind` (metadata, or register `field`) that `owner` holds, as a mask."""
        mask = 0
        for a in self.of(kind, owner):
            if a.field == field:
                mask |= a.mask
        return mask

    def overlaps(self) -> list[tuple[Allocation, Allocation]]:
        """Pairs of allocations of one kind (and register) with numbers in common."""
        return [
            (a, b)
            for a, b in combinations(self.allocations, 2)
            if (a.kind, a.field) == (b.kind, b.field) and a.first <= b.last and b.first <= a.last
        ]

    def owners(self) -> set[str]:
        """The names of every owner holding at least one allocation ("core" and the apps)."""
        return {a.owner for a in self.allocations}

    def markdown(self) -> str:
        """The allocations as a Markdown table (docs/architecture.md holds this text)."""
        rows = ["| kind | owner | numbers | purpose |", "|---|---|---|---|"]
        for a in self.allocations:
            kind = f"{a.kind} {a.field}".strip()
            form = "#x" if a.kind in ("cookie", "group", "meter") else "d"
            numbers = f"{a.first:{form}}" + (f"-{a.last:{form}}" if a.last != a.first else "")
            if a.kind in ("metadata", "register"):
                numbers = ("bits " if a.last != a.first else "bit ") + numbers
            rows.append(f"| {kind} | {a.owner} | {numbers} | {a.purpose} |")
        return "\n".join(rows) + "\n"


def _cookie(owner: str, byte: int) -> Allocation:
    """An app's cookie byte; its group ids, where it has any, start with the same byte."""
    return Allocation("cookie", owner, byte, byte, purpose="marks its flows")


REGISTRY = Registry(
    [
        _cookie("core", 0x01),
        _cookie("l2_learning", 0x02),
        _cookie("firewall", 0x03),
        _cookie("microseg", 0x04),
        _cookie("services", 0x05),
        _cookie("chains", 0x06),
        Allocation("group", "l2_learning", 0x0200_0000, 0x02FF_FFFF, "", "ECMP select groups"),
        Allocation("group", "services", 0x0500_0000, 0x05FF_FFFF, "", "backends, route splits"),
        Allocation("group", "chains", 0x0600_0000, 0x06FF_FFFF, "", "chain hops' replica groups"),
        Allocation("meter", "firewall", 1, 0xFFFF, "", "rate limits (id: the rule's priority)"),
        Allocation(
            "meter", "core", ofp.OFPM_CONTROLLER, ofp.OFPM_CONTROLLER, "", "packet-in limit"
        ),
        Allocation("ct_zone", "firewall", 7, 7, "", "stateful rules"),
        Allocation("ct_zone", "microseg", 8, 8, "", "allowed connections and their replies"),
        Allocation("ct_zone", "services", 9, 9, "", "VIP to backend translation"),
        Allocation("ct_zone", "services", 10, 10, "snat", "hairpin: backend to VIP translation"),
        Allocation("metadata", "core", 0, 0, "from_fabric", "FROM_FABRIC: came from a switch"),
        Allocation("metadata", "microseg", 8, 23, "src", "source identity"),
        Allocation("metadata", "microseg", 24, 39, "dst", "destination identity"),
        Allocation("register", "microseg", 0, 31, "", "policy generation", field="reg0"),
        Allocation("register", "services", 0, 31, "", "the service's VIP (hairpin)", field="reg1"),
        Allocation("vlan_vid", "chains", 1, 1920, "", "chain transport tags between switches"),
    ]
)
