"""Run apps written for Ryu unmodified: `ryu` and `ryu.*` imports resolve to os-ken's modules.

os-ken (https://opendev.org/openstack/os-ken) is OpenStack's fork of Ryu
(https://github.com/faucetsdn/ryu): the same tree with the package renamed `ryu` -> `os_ken`, five
public names renamed (`RENAMED`) and some modules removed (`GONE`). Both tables come from comparing
Ryu's tree at faucetsdn/ryu d6cda4f (master, 2022; last release 4.34, 2020) with os-ken 4.2.2.

`RyuAlias` is an `importlib.abc.MetaPathFinder`. osken-manager puts it first on `sys.meta_path`
while it imports the apps and takes it off again if none of them imported `ryu`; once one has, it
stays for the life of the process (apps import lazily, and os-ken loads `require_app` names later).
It serves only `ryu` and names under it, and what it serves *is* the os-ken module
(`ryu.lib.packet.packet is os_ken.lib.packet.packet`), so event classes, handler registries and
`SERVICE_BRICKS` are os-ken's own and a Ryu app's `@set_ev_cls(ofp_event.EventOFPPacketIn, ...)`
receives os-ken's events. On the first `ryu` import the Ryu spelling of each renamed name is added
beside the os-ken one (`os_ken.base.app_manager.RyuApp is OSKenApp`; eagerly, since
`from ryu.base import app_manager` takes an already imported submodule straight from its package,
past any finder). Nothing of os-ken is replaced (but `hub.spawn` while the apps are instantiated,
below) and no file of the user's is edited. A Ryu
installed beside is shadowed on purpose: it no longer starts on current Python, and two copies of
the framework would split its registries.

Also here, for osken-manager:
- `RyuModuleGone` (an `ImportError`) for a module os-ken does not have: its text names the module
  and what to use instead, for the launcher's one-line error;
- `resolve_required`: `require_app` names under `ryu`, and those os-ken's api modules put on the
  wrong module when imported through the alias;
- `eventlet_start_order`: threads Ryu apps spawn in `__init__` start once every app exists
  (`hub.spawn` holds them while `AppManager.instantiate_apps` runs);
- `check_no_mix`: classic apps are refused beside suite apps (docs/coming-from-ryu.md says why).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import logging
import sys
from collections.abc import Iterator
from types import ModuleType

LOG = logging.getLogger("osken_suite.ryu_compat")
DOC = "docs/coming-from-ryu.md"

# Ryu module (under ryu.) -> [(Ryu name, os-ken name)]: the Ryu name is added to the os-ken module.
RENAMED: dict[str, list[tuple[str, str]]] = {
    "base.app_manager": [("RyuApp", "OSKenApp")],
    "exception": [("RyuException", "OSKenException")],
    "services.protocols.bgp.application": [("RyuBGPSpeaker", "OSKenBGPSpeaker")],
    "lib.ofctl_string": [
        ("ofp_ofctl_field_name_to_ryu", "ofp_ofctl_field_name_to_os_ken"),
        ("nxm_field_name_to_ryu", "nxm_field_name_to_os_ken"),
    ],
}

_REST = (
    "Ryu's WSGI REST layer, which os-ken 4 dropped",
    "serve HTTP from your app yourself (http.server in a hub.spawn thread), or port it to a suite "
    f"app, which the metrics port serves ({DOC})",
)
_EXAMPLE = (
    "one of Ryu's bundled example apps, which os-ken 4 dropped",
    "copy the file from Ryu's tree (ryu/app/, Apache-2.0) beside your app and import it from "
    f"there, or use the suite's apps/l2_learning.py ({DOC})",
)
# Ryu modules os-ken 4.2 lacks -> (what it was, what to use instead). Keys match the module and
# everything under it.
GONE: dict[str, tuple[str, str]] = {
    "app.wsgi": _REST,
    "app.ofctl_rest": (
        _REST[0],
        "read and write flows with os_ken.app.ofctl.api (send_msg, get_datapath) from your app, "
        "or with ovs-ofctl -O OpenFlow13 on the switch",
    ),
    "app.rest_topology": (
        _REST[0],
        "ask os_ken.topology.api (get_switch, get_link, get_host) from your app",
    ),
    **{
        f"app.{name}": _REST
        for name in (
            "rest_conf_switch",
            "rest_firewall",
            "rest_qos",
            "rest_router",
            "rest_vtep",
            "simple_switch_rest_13",
            "simple_switch_websocket_13",
            "ws_topology",
            "gui_topology",
            "conf_switch_key",
        )
    },
    **{
        f"app.{name}": _EXAMPLE
        for name in (
            "example_switch_13",
            "simple_monitor_13",
            "simple_switch",
            "simple_switch_12",
            "simple_switch_13",
            "simple_switch_14",
            "simple_switch_15",
            "simple_switch_igmp",
            "simple_switch_igmp_13",
            "simple_switch_lacp",
            "simple_switch_lacp_13",
            "simple_switch_snort",
            "simple_switch_stp",
            "simple_switch_stp_13",
            "bmpstation",
            "cbench",
        )
    },
    "cmd": ("ryu-manager and Ryu's other commands", "run osken-manager APP.py"),
    "services.protocols.bgp.api.jsonrpc": (
        "the BGP speaker's JSON-RPC API over Ryu's WSGI layer",
        "drive os_ken.services.protocols.bgp.bgpspeaker.BGPSpeaker from your app",
    ),
}


class RyuModuleGone(ImportError):
    """A Ryu module os-ken has no counterpart for; the text names it and the replacement.

    An `ImportError` but not a `ModuleNotFoundError`, so `from ryu.app import wsgi` reports it
    instead of importlib turning it into "cannot import name".
    """


def gone(fullname: str) -> RyuModuleGone | None:
    """The error for `fullname` (`ryu.X` or `os_ken.X`) if os-ken has no module X, else None;
    its text names `ryu.X`, what the app asked for."""
    rest = fullname.partition(".")[2]
    for key, (what, instead) in GONE.items():
        if rest == key or rest.startswith(key + "."):
            return RyuModuleGone(f"ryu.{rest} ({what}); instead, {instead}", name=f"ryu.{rest}")
    return None


class _Alias(importlib.abc.Loader):
    """Hands out the already imported os-ken module under its `ryu` name, unchanged."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        __import__(self.target)  # not importlib.import_module: see resolve_required
        module = sys.modules[self.target]
        self._spec = module.__spec__  # importlib overwrites __spec__; exec_module puts it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec


def add_ryu_names() -> None:
    """Give each os-ken module in `RENAMED` the Ryu spelling of its renamed names."""
    for name, pairs in RENAMED.items():
        module = importlib.import_module(f"os_ken.{name}")
        for ryu_name, osken_name in pairs:
            if not hasattr(module, ryu_name):
                setattr(module, ryu_name, getattr(module, osken_name))


class RyuAlias(importlib.abc.MetaPathFinder):
    """Finds `ryu` and `ryu.X` as `os_ken` and `os_ken.X`; `used` once any was asked for."""

    def __init__(self) -> None:
        self.used = False

    def find_spec(self, fullname: str, path, target=None) -> importlib.machinery.ModuleSpec | None:
        """Serve `ryu.X` as `os_ken.X` (importlib.abc.MetaPathFinder.find_spec, PEP 451).

        Returns None for every other name, so the next finder looks for it.

        Raises
        ------
        ImportError
            A Ryu module os-ken dropped, with a message saying what replaces it.
        """
        top = fullname.partition(".")[0]
        if top == "os_ken" and self.used:
            # `from ryu.app import wsgi` asks for os_ken.app.wsgi: an aliased package's __name__
            # is os-ken's, and importlib builds a from-import's name from it.
            error = gone(fullname)
            if error is not None:
                raise error
        if top != "ryu":
            return None
        if not self.used:
            self.used = True
            add_ryu_names()
            LOG.debug("an app imports ryu: ryu.* is served by os_ken.* (see %s)", DOC)
        error = gone(fullname)
        if error is not None:
            raise error
        target_name = "os_ken" + fullname.removeprefix("ryu")
        found = importlib.util.find_spec(target_name)
        if found is None:
            return None
        return importlib.machinery.ModuleSpec(
            fullname,
            _Alias(target_name),
            is_package=found.submodule_search_locations is not None,
        )


def install() -> RyuAlias:
    """Put the alias first on `sys.meta_path` (once) and return it."""
    for finder in sys.meta_path:
        if isinstance(finder, RyuAlias):
            return finder
    finder = RyuAlias()
    sys.meta_path.insert(0, finder)
    return finder


def uninstall_if_unused(finder: RyuAlias) -> None:
    """Take the alias off again when no app imported `ryu`: suite apps never see it."""
    if not finder.used and finder in sys.meta_path:
        sys.meta_path.remove(finder)


def resolve_required(modules: list[ModuleType]) -> None:
    """Give the apps what `require_app` put on this module, and rewrite the `ryu.*` names apps
    gave `require_app` to their `os_ken.*` names.

    os-ken's `ryu.topology.api` and `ryu.app.ofctl.api` call `require_app(..., api_style=True)`
    as they are imported, which puts the name on the module two frames up the stack: the app that
    imports them, but through the alias that frame is `_Alias.create_module`, so the names land on
    this module. os-ken loads every required app once, whichever app names it, so they go to the
    first app. Renaming makes os-ken load one app per module (`require_app("ryu.topology.switches")`
    and os-ken's own `require_app("os_ken.topology.switches")` are the same Switches app).

    Raises:
        RyuModuleGone: a required module os-ken does not have.
    """
    stray = sys.modules[__name__].__dict__.pop("_REQUIRED_APP", [])
    if stray and modules:
        modules[0]._REQUIRED_APP = [*getattr(modules[0], "_REQUIRED_APP", []), *stray]
    for module in modules:
        required = getattr(module, "_REQUIRED_APP", None)
        if not required:
            continue
        for i, name in enumerate(required):
            if name == "ryu" or name.startswith("ryu."):
                error = gone(name)
                if error is not None:
                    raise error
                required[i] = "os_ken" + name.removeprefix("ryu")


def active() -> bool:
    """Whether an app imported `ryu` in this process."""
    return any(isinstance(f, RyuAlias) and f.used for f in sys.meta_path)


@contextlib.contextmanager
def eventlet_start_order() -> Iterator[None]:
    """While apps are instantiated, hold the threads they spawn; start them all at the end.

    Under ryu-manager's eventlet hub a green thread spawned in an app's `__init__` first runs when
    the main thread yields, after every app exists. os-ken's native hub starts a real thread at
    once, so a Ryu app's monitor thread that asks another app (`get_link` asks os-ken's Switches)
    before that app is instantiated loses the request and waits forever. Only for Ryu apps
    (`active()`) on the native hub; the threads are os-ken's own `hub.HubThread`s, returned
    unstarted to the app that spawned them.
    """
    from os_ken.lib import hub

    if not active() or hub.HUB_TYPE != "native":
        yield
        return
    held: list = []
    spawn = hub.spawn

    def hold(func, *args, **kwargs):
        thread = hub.HubThread(func, args, kwargs)
        held.append(thread)
        return thread

    hub.spawn = hold
    try:
        yield
    finally:
        hub.spawn = spawn
        for thread in held:
            thread.start()


class MixError(Exception):
    """Classic and suite apps in one controller; the text says which and what to do."""


def check_no_mix(modules: list[ModuleType]) -> None:
    """Refuse classic apps (Ryu or plain os-ken apps that program switches themselves) loaded
    together with suite apps: the suite's core owns every table and, on connect, deletes the
    flows it did not ask for, so the two would fight over table 0. Raises `MixError`."""
    from os_ken.base.app_manager import OSKenApp

    from controller.app import SuiteApp, defined_in

    classic: list[str] = []
    suite: list[str] = []
    for module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not defined_in(cls, module):
                continue
            if issubclass(cls, SuiteApp):
                suite.append(cls.__name__)
            elif issubclass(cls, OSKenApp):
                classic.append(cls.__name__)
    if classic and suite:
        raise MixError(
            f"classic app {', '.join(classic)} programs the switches itself and cannot share them "
            f"with suite apps ({', '.join(suite)}), whose pipeline owns every table: run it "
            f"alone, or port it to a suite app ({DOC})"
        )
