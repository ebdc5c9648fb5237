"""Deploy, inspect and delete VNF deployments: replicas running and plugged into a switch.

Each replica gets two veth pairs: `eth0` and `eth1` inside, `vf<key><nn>a` and `...b` on the
switch (vnf/naming.py), with TX checksum offload off (the userspace datapath's TCP trap). The
ConfigMaps are written to a folder mounted into every replica: deploying the same file again
with a changed ConfigMap updates that folder, and the agents re-apply it without a restart.
What was deployed is kept in /run/osken-vnf/<name>.json, so status and delete work from any
later process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time

from pyroute2 import IPRoute

from vnf.firewall.agent import digest
from vnf.manifest import Deployment, Manifest, resolved_env
from vnf.naming import port_name, replica_name
from vnf.runtime import CONFIG_MOUNT, DockerRuntime, NamespaceRuntime

LOG = logging.getLogger("osken_suite.vnf")
STATE_DIR = "/run/osken-vnf"
SIDES = (("a", "eth0"), ("b", "eth1"))


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def _write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class Deployer:
    def __init__(self, state_dir: str = STATE_DIR, use_docker: bool | None = None) -> None:
        self.state_dir = state_dir
        if use_docker is None:
            use_docker = DockerRuntime.available()
        self.runtime = DockerRuntime() if use_docker else NamespaceRuntime(state_dir)

    # --- state ---------------------------------------------------------------------------------

    def _state_file(self, name: str) -> str:
        return os.path.join(self.state_dir, f"{name}.json")

    def load(self, name: str) -> dict | None:
        try:
            with open(self._state_file(name)) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def _existing(self, name: str) -> dict:
        state = self.load(name)
        if state is None:
            raise KeyError(f"no deployment named {name!r} here")
        return state

    def _config_dir(self, name: str) -> str:
        return os.path.join(self.state_dir, "configmaps", name)

    # --- deploy --------------------------------------------------------------------------------

    def deploy(self, manifest: Manifest, bridge: str) -> dict[str, float]:
        """Every Deployment of `manifest` running on `bridge`; seconds each took. A deployment
        already running with the same spec only gets its ConfigMaps updated."""
        took = {}
        for d in manifest.deployments:
            start = time.time()
            self._write_configmaps(d, manifest)
            old = self.load(d.name)
            spec = json.loads(json.dumps(_spec(d, manifest)))  # as it reads back from the file
            if old and old["spec"] == spec and old["bridge"] == bridge and self._all_running(old):
                self._wait_applied(d, manifest, old)
            else:
                if old:
                    self.delete(d.name)
                self._start(d, manifest, bridge, spec)
            took[d.name] = time.time() - start
        return took

    def _write_configmaps(self, d: Deployment, manifest: Manifest) -> None:
        for _, cm, _ in d.container.env_from:
            for key, text in manifest.configmaps[cm].items():
                _write_atomic(os.path.join(self._config_dir(d.name), cm, key), text)

    def _start(self, d: Deployment, manifest: Manifest, bridge: str, spec: dict) -> None:
        env = resolved_env(d, manifest.configmaps)
        for var, cm, key in d.container.env_from:
            env[f"{var}_FILE"] = f"{CONFIG_MOUNT}/{cm}/{key}"
        state = {"name": d.name, "bridge": bridge, "runtime": self.runtime.kind, "spec": spec}
        state["replicas"] = []
        os.makedirs(self.state_dir, exist_ok=True)
        for i in range(d.replicas):
            name = replica_name(d.name, i)
            started = self.runtime.start(name, d.container, env, self._config_dir(d.name))
            ports = self._wire(started.netns, d.name, i, bridge)
            state["replicas"].append({"name": name, "netns": started.netns, "ports": ports})
            _write_atomic(self._state_file(d.name), json.dumps(state, indent=1))
        _write_atomic(self._state_file(d.name), json.dumps(state, indent=1))
        LOG.info("%s: %d replicas on %s (%s)", d.name, d.replicas, bridge, self.runtime.kind)

    @staticmethod
    def _wire(netns: str, deployment: str, replica: int, bridge: str) -> list[str]:
        """Two veth pairs from the replica's namespace to the switch."""
        ports = []
        with IPRoute() as ipr:
            for side, inner in SIDES:
                outer = port_name(deployment, replica, side)
                if ipr.link_lookup(ifname=outer):
                    ipr.link("del", ifname=outer)
                ipr.link(
                    "add", ifname=outer, kind="veth", peer={"ifname": inner, "net_ns_fd": netns}
                )
                ipr.link("set", index=ipr.link_lookup(ifname=outer)[0], state="up")
                _run("ethtool", "-K", outer, "tx", "off", check=False)
                _run("ip", "netns", "exec", netns, "ethtool", "-K", inner, "tx", "off", check=False)
                _run("ovs-vsctl", "--may-exist", "add-port", bridge, outer)
                ports.append(outer)
        return ports

    def _wait_applied(self, d: Deployment, manifest: Manifest, state: dict, timeout=5.0) -> None:
        """Running replicas re-read their ConfigMaps by themselves; wait until each reports the
        new version (applied, or refused with the old rules kept), and say which."""
        want = {digest(manifest.configmaps[cm][key]) for _, cm, key in d.container.env_from}
        deadline = time.time() + timeout
        while True:
            agents = [self.runtime.agent_status(r["name"]) or {} for r in state["replicas"]]
            if all(a.get("digest") in want for a in agents) or time.time() > deadline:
                break
            time.sleep(0.1)
        for r, a in zip(state["replicas"], agents, strict=True):
            if a.get("digest") not in want:
                LOG.warning("%s: has not picked up the new ConfigMap yet", r["name"])
            elif not a.get("ok"):
                LOG.warning(
                    "%s: refused the new ConfigMap, old rules in force: %s",
                    r["name"],
                    a.get("error"),
                )
            else:
                LOG.info("%s: new ConfigMap in force, no restart", r["name"])

    # --- inspect -------------------------------------------------------------------------------

    def _all_running(self, state: dict) -> bool:
        return all(self.runtime.state(r["name"])["running"] for r in state["replicas"])

    def status(self, name: str) -> dict:
        state = self._existing(name)
        with IPRoute() as ipr:
            for r in state["replicas"]:
                r["state"] = self.runtime.state(r["name"])
                r["ports_present"] = all(ipr.link_lookup(ifname=p) for p in r["ports"])
                r["agent"] = self.runtime.agent_status(r["name"])
        return state

    def logs(self, name: str) -> dict[str, str]:
        state = self._existing(name)
        return {r["name"]: self.runtime.logs(r["name"]) for r in state["replicas"]}

    # --- delete --------------------------------------------------------------------------------

    def delete(self, name: str) -> None:
        """Stop every replica and remove its ports; only what this deployment made."""
        state = self._existing(name)
        with IPRoute() as ipr:
            for r in state["replicas"]:
                for port in r["ports"]:
                    _run("ovs-vsctl", "--if-exists", "del-port", state["bridge"], port, check=False)
                    if ipr.link_lookup(ifname=port):
                        ipr.link("del", ifname=port)
                self.runtime.stop(r["name"])
        os.remove(self._state_file(name))
        shutil.rmtree(self._config_dir(name), ignore_errors=True)
        parents = (
            os.path.dirname(self._config_dir(name)),
            os.path.join(self.state_dir, "replicas"),
        )
        for folder in (*parents, self.state_dir):
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)  # the last deployment gone: leave nothing behind
        LOG.info("%s: deleted", name)


def _spec(d: Deployment, manifest: Manifest) -> dict:
    """What, if it changes, needs new replicas (ConfigMap contents do not)."""
    return {"replicas": d.replicas, "container": repr(d.container), "labels": d.labels}
