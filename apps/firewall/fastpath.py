"""The firewall's XDP fast path: which rules go to XDP, on which interfaces, with what counts.

The OpenFlow rules stay in place as the backstop; XDP only drops earlier (and far cheaper) what
OpenFlow would drop anyway. With `offload: all` every deny rule XDP can express is offloaded;
with `offload: adaptive` a deny rule goes to XDP once its OpenFlow hit rate passes
`threshold_pps`, and comes back when XDP has seen nothing of it for `idle_seconds` (a DDoS
scrubber). Blocked sources are always offloaded.

Without bcc, kernel headers, libbpf or privilege the firewall runs in OpenFlow alone and this
says so once, with the reason.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping

from apps.firewall.rules import XdpSettings
from ebpf.offload import plan
from ebpf.xdp import attached_prog_id

LOG = logging.getLogger("osken_suite.firewall.xdp")
_IFNAME = re.compile(r"[^/:\s\0]{1,15}")  # what Linux takes as an interface name (dev_valid_name)
SHUTDOWN_WAIT = 10.0  # seconds shutdown waits for a load under way (a compile takes about one)


class FastPath:
    def __init__(self) -> None:
        self.settings = XdpSettings()
        self.prog = None
        self.off_reason: str | None = None
        self._decisions: dict[int, str | None] = {}
        self.hot: dict[int, float] = {}  # adaptive: rule id -> last time XDP dropped for it
        self._last_seen: dict[int, int] = {}  # adaptive: rule id -> XDP packets at last look
        self._ever: set[int] = set()  # every rule id offloaded: counters stay monotonic
        self._loader: threading.Thread | None = None
        self._planned_for: tuple | None = None
        self._plan: tuple = ([], [])
        self._announced = False
        self._stopping = False  # shutdown has begun: a program loaded from now on is released
        self._handover = threading.Lock()  # the loader's `prog` against shutdown's

    def configure(self, settings: XdpSettings) -> None:
        self.settings = settings
        if settings.mode == "off":
            self.close()
            self._say_off("the config turns it off (firewall.xdp.mode: off)")

    def _ready(self) -> bool:
        """True once the program is loaded. Loading (compiling in a child process, about a
        second) runs in a thread of its own, so the controller keeps serving switches
        meanwhile; `loaded()` tells the caller when to come back."""
        if self.prog is not None:
            return True
        if self.settings.mode == "off" or self.off_reason is not None:
            return False
        if self._loader is None:
            self._loader = threading.Thread(target=self._load, name="xdp-load", daemon=True)
            self._loader.start()
        return False

    def _load(self) -> None:
        from ebpf.xdp import XdpProgram, unavailable

        problem = unavailable()
        if problem is None:
            try:
                prog = XdpProgram()
            except Exception as exc:  # a compile or load failure: say it, run without
                problem = f"the program did not load: {exc}"
        if problem:
            self._say_off(problem)
            return
        with self._handover:
            if not self._stopping:
                LOG.info("XDP fast path on (%s mode)", self.settings.mode)
                self.prog = prog
                return
        prog.close()  # shut down while it compiled: its pins must not outlive this process

    def loaded(self) -> bool:
        """True once, when a load that update() started has finished: time to update again."""
        if self._loader is not None and not self._loader.is_alive() and not self._announced:
            self._announced = True
            return self.prog is not None
        return False

    def wait_loaded(self, timeout: float = 30.0) -> None:
        if self._loader is not None:
            self._loader.join(timeout)

    def _say_off(self, why: str) -> None:
        if self.off_reason is None:
            LOG.warning("XDP fast path off: %s; the firewall runs in OpenFlow alone", why)
        self.off_reason = why

    def update(
        self, rules, blocked, blocked_id: int, stateful: bool, interfaces: Mapping[str, str]
    ) -> None:
        """Offload what can be, attach where traffic enters (`interfaces`: port name -> the MAC
        its switch reports), log what changed and why."""
        local = {name for name, mac in interfaces.items() if is_local(name, mac)}
        if self.prog is None and not local:
            return  # switches on other machines, or none yet: nothing here to attach to
        key = (tuple(rules), blocked, blocked_id, stateful)
        if key != self._planned_for:  # topology changes move interfaces, not the plan
            self._plan, self._planned_for = plan(rules, blocked, blocked_id, stateful), key
        entries, decisions = self._plan
        self._log_decisions(decisions)  # known before the program loads: adapt() needs them
        if not self._ready():
            return
        if self.settings.offload == "adaptive":
            entries = [e for e in entries if e.rule == blocked_id or e.rule in self.hot]
        self._ever.update(e.rule for e in entries)
        written, deleted = self.prog.sync(entries)
        if written or deleted:
            LOG.info(
                "XDP: %d trie entries written, %d deleted (%d in all)",
                written,
                deleted,
                len(self.prog.entries),
            )
        for ifname in sorted(local - self.prog.attached.keys()):
            try:
                mode = self.prog.attach(ifname, self.settings.mode)
            except Exception as exc:
                LOG.warning("XDP: cannot attach to %s: %s", ifname, exc)
                continue
            LOG.info("XDP: attached to %s (%s mode)", ifname, mode)
        for ifname in sorted(self.prog.attached.keys() - local):
            if self.prog.detach(ifname):
                LOG.info("XDP: detached from %s", ifname)
            elif attached_prog_id(ifname) is not None:  # another replica's, since
                LOG.info("XDP: %s left to the program attached there since", ifname)

    def _log_decisions(self, decisions) -> None:
        current = {}
        for rule_id, rule, reason in decisions:
            current[rule_id] = reason
            if rule_id in self._decisions and self._decisions[rule_id] == reason:
                continue
            if reason is None:
                LOG.info("XDP: offloading rule %s (%s)", rule.located(), rule.describe())
            else:
                LOG.info(
                    "XDP: not offloading rule %s (%s): %s", rule.located(), rule.describe(), reason
                )
        self._decisions = current

    def adapt(self, of_rates: dict[int, float], now: float) -> bool:
        """Adaptive offload: hot deny rules in, idle ones out. True if the set changed.

        A rule that turns hot while the program is still loading is remembered, and offloaded
        as soon as the program is up."""
        if self.settings.offload != "adaptive" or self.off_reason is not None:
            return False
        before = set(self.hot)
        xdp = self.counters()
        for rule_id, rate in of_rates.items():
            if rate >= self.settings.threshold_pps and self._decisions.get(rule_id, 1) is None:
                self.hot.setdefault(rule_id, now)
        for rule_id in list(self.hot):
            packets = xdp.get(rule_id, (0, 0))[0]
            if packets != self._last_seen.get(rule_id):
                self.hot[rule_id] = now
            elif now - self.hot[rule_id] > self.settings.idle_seconds:
                del self.hot[rule_id]
            self._last_seen[rule_id] = packets
        for rule_id in set(self.hot) ^ before:
            LOG.info(
                "XDP: rule id %d %s",
                rule_id,
                "offloaded: over the threshold" if rule_id in self.hot else "withdrawn: idle",
            )
        return set(self.hot) != before

    def counters(self) -> dict[int, tuple[int, int]]:
        """Drops per rule id, including rules since withdrawn (their slots keep counting)."""
        return self.prog.counters(self._ever) if self.prog is not None else {}

    def close(self) -> None:
        """Detach from every interface (the config turned the fast path off); the program stays
        loaded for when it comes back on."""
        if self.prog is not None:
            self.prog.detach_all()

    def shutdown(self) -> None:
        """The controller stops: detach, and remove the program's pins from bpffs (the process
        exits without running atexit hooks). A load under way is waited for (up to
        SHUTDOWN_WAIT) and its program released as soon as it is made."""
        with self._handover:
            self._stopping = True
        if self._loader is not None:
            self._loader.join(SHUTDOWN_WAIT)
        self.close()
        if self.prog is not None:
            self.prog.close()


def is_local(name: str, mac: str) -> bool:
    """Is the switch port `name` with MAC `mac` an interface of this machine? The name alone
    is not enough: a switch on another machine may call its uplink "eth0" too, and the fast path
    would then drop this machine's own traffic by the firewall's rules."""
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        return False
    try:
        with open(f"/sys/class/net/{name}/address") as fh:
            return fh.read().strip().lower() == mac.strip().lower()
    except OSError:  # no such interface here
        return False
