"""`osken-manager`: the classic launcher, which os-ken 4 no longer ships.

    osken-manager [--ofp-tcp-listen-port 6653] [--config lab.yaml] [--verbose] APP...
    osken-manager --ctl-privkey key.pem --ctl-cert cert.pem --ca-certs ca.pem APP...  # TLS
    osken-manager --check --config lab.yaml APP...  # check the config as a reload would, exit

APP is a file path (apps/firewall) or a module (apps.firewall). Everything that can be checked
before starting is checked first: an unknown app, a bad config or a busy port gives one line on
stderr and exit status 2. SIGTERM or SIGINT exits 0 at once (os-ken's native hub cannot stop its
threads, so we do not wait for them); SIGHUP reloads the config. Apps written for Ryu run
unmodified, alone (controller/ryu_compat.py, docs/coming-from-ryu.md).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import logging
import os
import signal
import socket
import ssl
import sys
import time
from types import MappingProxyType

EXIT_USAGE = 2
OFP_HANDLER = "os_ken.controller.ofp_handler"
LOG = logging.getLogger("osken_suite.cli")


class LaunchError(Exception):
    """Something that stops a start; its text is the one line the user sees."""


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (argparse reports anything else as a usage error, exit 2)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return port


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line of osken-manager, checked.

    Parameters
    ----------
    argv : list of str
        The arguments after the program name.

    Returns
    -------
    argparse.Namespace

    Raises
    ------
    SystemExit
        Bad usage (argparse prints the message and exits with status 2).
    """
    p = argparse.ArgumentParser(prog="osken-manager", description=__doc__.split("\n\n")[0])
    p.add_argument("apps", nargs="+", metavar="APP", help="app file path or module name")
    p.add_argument("--ofp-tcp-listen-port", type=port_number, default=6653)
    p.add_argument("--ofp-listen-host", default="0.0.0.0")
    p.add_argument("--config", help="YAML config file (see docs/config.md)")
    p.add_argument(
        "--check",
        action="store_true",
        help="check --config as a reload would and exit: 0, or 2 with the located error",
    )
    p.add_argument(
        "--config-file",
        action="append",
        default=[],
        metavar="FILE",
        help="oslo.config INI file for os-ken and Ryu app options, as ryu-manager's (repeatable)",
    )
    p.add_argument(
        "--prometheus-port",
        type=port_number,
        default=9302,
        help="serve /metrics on this port of 127.0.0.1 (0: off)",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.add_argument(
        "--observe-links",
        action="store_true",
        help="os-ken's LLDP link discovery, for classic apps; suite apps always discover links",
    )
    ha = p.add_argument_group("replicas (docs/ha.md); without --cluster, a single controller")
    ha.add_argument("--cluster", metavar="URL[,URL]", help="etcd client URLs: join a replica set")
    ha.add_argument("--replica-id", metavar="NAME", help="this replica's name, unique in the set")
    tls = p.add_argument_group(
        "OpenFlow over TLS (with --ctl-privkey and --ctl-cert, only TLS is accepted)"
    )
    tls.add_argument("--ctl-privkey", metavar="PEM", help="the controller's private key")
    tls.add_argument("--ctl-cert", metavar="PEM", help="the controller's certificate")
    tls.add_argument(
        "--ca-certs", metavar="PEM", help="switches must present a certificate signed by these"
    )
    tls.add_argument("--ofp-ssl-listen-port", type=port_number, default=6653, metavar="PORT")
    return p.parse_args(argv)


def tls_options(args: argparse.Namespace) -> list[str]:
    """os-ken's options for OpenFlow over TLS, after checking the files load; [] for plain TCP.

    Raises:
        LaunchError: only one of key and certificate given, or a file that does not load.
    """
    if not (args.ctl_privkey or args.ctl_cert):
        if args.ca_certs:
            raise LaunchError("--ca-certs needs --ctl-privkey and --ctl-cert")
        return []
    if not (args.ctl_privkey and args.ctl_cert):
        raise LaunchError("OpenFlow over TLS needs both --ctl-privkey and --ctl-cert")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(args.ctl_cert, args.ctl_privkey)
        if args.ca_certs:
            context.load_verify_locations(args.ca_certs)
    except (OSError, ssl.SSLError) as exc:
        raise LaunchError(f"TLS: cannot load the key, certificate or CA: {exc}") from None
    if not args.ca_certs:
        LOG.warning("TLS without --ca-certs: any switch can connect and claim any dpid")
    options = ["--ctl-privkey", args.ctl_privkey, "--ctl-cert", args.ctl_cert]
    options += ["--ca-certs", args.ca_certs] if args.ca_certs else []
    return options + ["--ofp-ssl-listen-port", str(args.ofp_ssl_listen_port)]


# Earlier spellings of the suite's apps, still accepted: module name -> the app's name now.
RENAMED = MappingProxyType({"apps.canary": "apps.services", "apps.sfc": "apps.chains"})


def module_name(app: str) -> str:
    """The module to import for an app given on the command line.

    A file (`apps/l2_learning.py`) or package folder (`apps/firewall`) path gives its dotted
    name, with its package root put on sys.path; a dotted name is taken as it is. The earlier
    spellings keep working: `apps/firewall.py` for the package `apps/firewall/`,
    `apps/mirror` for the file `apps/mirror.py`, and the names in `RENAMED`
    (`apps/canary.py`, `apps.sfc`, ...), which log a warning naming the app now. A file that
    exists is always itself: a user's own `apps/canary.py` is never taken for ours.

    Raises:
        LaunchError: a path that is neither a file nor a package folder.
    """
    if not (app.endswith(".py") or os.sep in app):
        return _renamed(app, app)
    path = os.path.abspath(app.rstrip(os.sep))
    package = path.removesuffix(".py")
    if os.path.isfile(os.path.join(package, "__init__.py")):
        path = package
    elif not os.path.exists(path) and os.path.isfile(path + ".py"):
        path += ".py"
    parts = [os.path.splitext(os.path.basename(path))[0]]
    folder = os.path.dirname(path)
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        parts.insert(0, os.path.basename(folder))
        folder = os.path.dirname(folder)
    name = ".".join(parts)
    if os.path.exists(path):
        if folder not in sys.path:
            sys.path.insert(0, folder)
        return name
    if name not in RENAMED:
        raise LaunchError(f"unknown app {app!r}: no such file")
    return _renamed(app, name)


def _renamed(app: str, name: str) -> str:
    """`name`, or the app it was renamed to, with a warning saying so (and which metric names
    changed with it: `osken_canary_*` are `osken_services_*` now)."""
    if name not in RENAMED:
        return name
    now = RENAMED[name]
    old, new = name.rpartition(".")[2], now.rpartition(".")[2]
    LOG.warning(
        "app %r is now called %s and runs as that; its metrics are osken_%s_*, once osken_%s_*",
        app,
        now,
        new,
        old,
    )
    return now


def suite_apps(module) -> list[type]:
    """The suite apps a module (or an app package) defines, in source order."""
    from controller.app import SuiteApp, defined_in

    own = [
        c
        for c in vars(module).values()
        if inspect.isclass(c)
        and issubclass(c, SuiteApp)
        and c is not SuiteApp
        and defined_in(c, module)
    ]
    return sorted(own, key=lambda c: inspect.getsourcelines(c)[1])


def import_app(app: str):
    """Import an app module and return it; it must define a suite app (a SuiteApp subclass)
    or an os-ken app class of its own.

    Raises
    ------
    LaunchError
        No such file or module, an import of a Ryu module os-ken dropped, any exception while
        the module runs, or no app class in it; one line naming the app.
    """
    from os_ken.base.app_manager import OSKenApp

    from controller.app import defined_in
    from controller.ryu_compat import RyuModuleGone

    name = module_name(app)
    try:
        module = importlib.import_module(name)
    except RyuModuleGone as exc:
        raise LaunchError(f"app {app!r} imports {exc}") from None
    except ImportError as exc:
        raise LaunchError(f"unknown app {app!r}: {exc}") from None
    except Exception as exc:  # a broken app file: say which and why, in one line
        raise LaunchError(f"app {app!r} failed to import: {type(exc).__name__}: {exc}") from None
    own = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, OSKenApp) and defined_in(c, module)
    ]
    if not own and not suite_apps(module):
        raise LaunchError(f"unknown app {app!r}: it defines no suite app or os-ken app class")
    return module


def import_apps(apps: list[str]) -> list:
    """Import every app and, first, the apps its suite apps name in `requires`; each module
    once. Apps that import `ryu` get it aliased to os-ken (controller/ryu_compat.py); classic
    apps cannot be mixed with suite apps.

    Raises
    ------
    LaunchError
        An app that does not import (see `import_app`), a required Ryu app os-ken dropped, or
        classic and suite apps mixed.
    """
    from controller import ryu_compat

    alias = ryu_compat.install()
    modules: list = []
    for app in apps:
        module = import_app(app)
        required = [name for cls in suite_apps(module) for name in cls.requires]
        for dep in [*required, None]:
            m = module if dep is None else import_app(dep)
            if all(m is not other for other in modules):
                modules.append(m)
    ryu_compat.uninstall_if_unused(alias)
    try:
        ryu_compat.resolve_required(modules)
        ryu_compat.check_no_mix(modules)
    except ryu_compat.RyuModuleGone as exc:
        raise LaunchError(f"an app requires {exc}") from None
    except ryu_compat.MixError as exc:
        raise LaunchError(str(exc)) from None
    return modules


def check_config(path: str | None, modules: list, warn: bool = False):
    """Load the config and let every suite app check its section, before anything starts
    (`warn`: log the warnings a reload logs, e.g. a section no loaded app reads).

    Returns the Config (an empty one without `path`); LaunchError ("bad config: " and the
    located ConfigError) if it does not load or a section is invalid.
    """
    from controller.config import Config, ConfigError, load_config
    from controller.core import Core

    try:
        config = load_config(path) if path else Config()
        core = Core()
        for cls in [c for module in modules for c in suite_apps(module)]:
            core.add_app(cls)
        core.parse(config, warn=warn)  # else the controller itself warns once, at start
    except ConfigError as exc:
        raise LaunchError(f"bad config: {exc}") from None
    return config


def check_only(path: str | None, modules: list) -> int:
    """`--check`: the config checked as a reload checks it (load, then every loaded app's
    section, `Core.parse`), with the warnings a reload logs; nothing starts. Like `nginx -t`.

    Returns 0 and prints one line naming the file and the apps; raises LaunchError (exit 2)
    for a config that a reload would reject, with its file, line and field.
    """
    if not path:
        raise LaunchError("--check needs --config FILE")
    check_config(path, modules, warn=True)
    apps = [cls.name for module in modules for cls in suite_apps(module)]
    print(f"osken-manager: {path}: config OK for {', '.join(apps) or 'no suite app'}")
    return 0


def check_port(host: str, port: int) -> None:
    """Fail early if `host`:`port` (TCP) cannot be listened on.

    Raises
    ------
    LaunchError
        The bind fails (in use, no permission, no such address); the text names host and port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise LaunchError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def cluster_options(args: argparse.Namespace) -> tuple[str, str]:
    """(etcd URLs, replica id), checked; ("", "") without --cluster.

    Raises:
        LaunchError: --cluster without --replica-id (or the reverse), or a bad URL.
    """
    if not args.cluster:
        if args.replica_id:
            raise LaunchError("--replica-id needs --cluster")
        return "", ""
    if not args.replica_id or "/" in args.replica_id:
        raise LaunchError("--cluster needs --replica-id NAME (unique per replica, no '/')")
    from controller.etcd import endpoints

    try:
        endpoints(args.cluster)
    except ValueError as exc:
        raise LaunchError(f"--cluster: {exc}") from None
    return args.cluster, args.replica_id


def _install_signals(running: list) -> None:
    """SIGTERM/SIGINT stop, SIGHUP reloads; `running` holds the suite's CoreApp once made."""

    def stop(signum, _frame):
        LOG.info("%s: stopping", signal.Signals(signum).name)
        for core_app in running:
            core_app.core.shutdown()
            if core_app.cluster:  # the shared config's private folder
                core_app.cluster.shared.close()
        logging.shutdown()
        os._exit(0)

    def reload(_signum, _frame):
        for core_app in running:
            core_app.request_reload()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)


def run(args: argparse.Namespace) -> int:
    """Start os-ken with the apps and config in `args`, and block while its threads run.

    Returns
    -------
    int
        1 once any os-ken thread has ended (SIGTERM, SIGINT exit the process directly with 0).

    Raises
    ------
    LaunchError
        An app that does not import, a bad config or config file, TLS files missing, or a port
        that cannot be listened on: everything checked before os-ken starts.
    """
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    running: list = []  # the suite's CoreApp, once os-ken has made it
    _install_signals(running)
    modules = import_apps(args.apps)
    if args.check:
        return check_only(args.config, modules)
    config = check_config(args.config, modules)
    tls = tls_options(args)
    cluster, replica_id = cluster_options(args)
    port = args.ofp_ssl_listen_port if tls else args.ofp_tcp_listen_port
    check_port(args.ofp_listen_host, port)
    if args.prometheus_port:
        if args.prometheus_port == port:
            raise LaunchError(f"--prometheus-port {port} is the OpenFlow port too")
        check_port("127.0.0.1", args.prometheus_port)

    from os_ken import cfg
    from os_ken.base.app_manager import AppManager
    from os_ken.controller import controller as _ofp_controller  # noqa: F401 (registers options)
    from os_ken.topology import switches as _switches  # noqa: F401 (registers --observe-links)
    from oslo_config import cfg as oslo_cfg

    from controller import ryu_compat, shim

    oslo_args = [
        "--ofp-tcp-listen-port",
        str(args.ofp_tcp_listen_port),
        "--ofp-listen-host",
        args.ofp_listen_host,
        *(["--observe-links"] if args.observe_links else []),
        *tls,
    ]
    for path in args.config_file:
        oslo_args += ["--config-file", path]
    try:
        cfg.CONF(args=oslo_args, project="os_ken")
    except oslo_cfg.Error as exc:
        raise LaunchError(f"bad config file: {exc}") from None
    # A controller keeps tens of thousands of long-lived flow objects; the default thresholds
    # would rescan them all many times a second under a packet-in storm.
    gc.set_threshold(50_000, 50, 100)
    suite = [cls for module in modules for cls in suite_apps(module)]
    classic = [m.__name__ for m in modules if not suite_apps(m)]
    manager = AppManager.get_instance()
    # Suite apps are plain Python: one os-ken app (controller/host.py) hosts them all.
    manager.load_apps(classic + (["controller.host"] if suite else []) + [OFP_HANDLER])
    contexts = manager.create_contexts()
    if suite:
        core_app = contexts[shim.CONTEXT]
        from controller.cluster import DuplicateReplica, StoreUnavailable
        from controller.config import ConfigError

        options = shim.RuntimeOptions(
            config, args.prometheus_port, cluster=cluster, replica_id=replica_id
        )
        try:
            core_app.setup(options, suite)
        except StoreUnavailable as exc:
            raise LaunchError(f"--cluster: etcd does not answer ({exc})") from None
        except DuplicateReplica as exc:
            raise LaunchError(f"--replica-id: {exc}") from None
        except ConfigError as exc:  # the cluster's config, or ours as it would be shared
            raise LaunchError(f"--cluster: bad config: {exc}") from None
        running.append(core_app)
    with ryu_compat.eventlet_start_order():
        threads = manager.instantiate_apps(**contexts)
    LOG.info(
        "listening for OpenFlow 1.3%s on %s:%d",
        " over TLS" if tls else "",
        args.ofp_listen_host,
        port,
    )
    LOG.info("apps: %s", ", ".join([cls.name for cls in suite] + classic))
    # The shared contexts (the suite's core) run event loops of their own: watch them too.
    threads += [t for c in contexts.values() for t in getattr(c, "threads", [])]
    while all(t.is_alive() for t in threads):
        time.sleep(0.5)
    LOG.error("an os-ken thread ended unexpectedly; stopping")
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of osken-manager: parse `argv` (default: sys.argv[1:]) and run.

    Returns
    -------
    int
        The exit status: 2 (EXIT_USAGE) after printing a LaunchError's one line to stderr.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except LaunchError as exc:
        print(f"osken-manager: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
