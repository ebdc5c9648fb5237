"""What the apps share on a switch, and who owns which part: one declared table.

Flow cookies, group and meter ids, conntrack zones, metadata and register bits and VLAN ids
live in one number space per switch. The table itself, `REGISTRY`, is declared beside the stages
in controller/pipeline.py (the one place an app is added); each app takes its part from there
(`REGISTRY.cookie(app)`, `REGISTRY.value("ct_zone", app)`, ...) instead of a constant of its
own, so two apps can never pick the same number unnoticed: `Registry.overlaps()` lists any two
owners whose ranges meet (a unit test keeps it empty), and `Pipeline.check` refuses a flow that
uses a number its app does not own.

>>> r = Registry([Allocation("cookie", "a", 7, 7), Allocation("ct_zone", "a", 3, 3)])
>>> r.cookie("a") == 7 << 56, r.owner("cookie", 7), r.overlaps()
(True, 'a', [])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations

COOKIE_SHIFT = 56  # an app's flows carry its byte in the cookie's top 8 bits
KINDS = ("cookie", "group", "meter", "ct_zone", "metadata", "register", "vlan_vid")


@dataclass(frozen=True)
class Allocation:
    """`owner`'s numbers `first`..`last` (inclusive) of one kind.

    Kinds: "cookie" (the cookie's top byte), "group" and "meter" (ids), "ct_zone" (Open
    vSwitch conntrack zones), "metadata" and "register" (bit positions of the OpenFlow metadata
    or of the Nicira register named in `field`, e.g. "reg0"), "vlan_vid" (VLAN ids, 12 bits).
    `name` tells an owner's allocations of one kind apart; `purpose` is for the docs;
    `users`: other apps whose flows may use these numbers too (a meter the core keeps for them).
    """

    kind: str
    owner: str
    first: int
    last: int
    name: str = ""
    purpose: str = ""
    field: str = ""
    users: tuple[str, ...] = ()

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

    def usable(self, kind: str, app: str) -> tuple[Allocation, ...]:
        """The allocations of `kind` whose numbers `app`'s flows may use: its own, and those
        another owner shares with it (`Allocation.users`)."""
        return self.of(kind, app) + tuple(
            a for a in self.allocations if a.kind == kind and app in a.users
        )

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
            users = f" (used by {', '.join(a.users)})" if a.users else ""
            rows.append(f"| {kind} | {a.owner} | {numbers} | {a.purpose}{users} |")
        return "\n".join(rows) + "\n"
