"""Where a replica runs: a Docker container with its limits, or a plain network namespace.

Both give the replica a named network namespace (`ip netns`), so wiring it into the fabric is
the same either way. Docker is Debian's (`/usr/bin/docker`, the daemon that setup starts with its
own bridge and iptables handling off); the container has no network of its own (`--network
none`) until we plug in its two ports. Without a Docker daemon the same agent runs in a
namespace, as a process of ours; limits are then not enforced, and the log says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass

from vnf.manifest import Container

LOG = logging.getLogger("osken_suite.vnf")
DOCKER = "/usr/bin/docker"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Images we can run without Docker, by the agent that is their code.
AGENTS = {
    "custom/virtual-firewall": "firewall",
    "osken/firewall": "firewall",
    "osken/waypoint": "waypoint",
}
CONFIG_MOUNT = "/etc/vnf/configmaps"
# Per network namespace, and /proc/sys is read-only in a container: set at its creation. Bridged
# IPv4 then crosses the inet hooks with conntrack, which a stateful bridging VNF needs (a
# namespace host's agent sets it itself).
SYSCTLS = ("net.bridge.bridge-nf-call-iptables=1",)


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def agent_for(image: str) -> str | None:
    """Our agent's path for an image we build, else None."""
    kind = AGENTS.get(image.rsplit(":", 1)[0])
    return os.path.join(ROOT, "vnf", kind, "agent.py") if kind else None


@dataclass
class Started:
    netns: str  # a name under /var/run/netns
    pid: int


class DockerRuntime:
    kind = "docker"

    def __init__(self) -> None:
        self._built: set[str] = set()  # our images this runtime has brought up to date

    @staticmethod
    def available() -> bool:
        return os.path.exists(DOCKER) and _run(DOCKER, "info", check=False).returncode == 0

    def ensure_image(self, image: str) -> None:
        """Our own images are built from this checkout's code (cached by a hash of it: 0.1 s
        when nothing changed), so a tag never names an older agent; others must be here."""
        if agent_for(image) is not None:
            if image not in self._built:
                _run(os.path.join(ROOT, "scripts", "build_vnf_images.sh"))
                self._built.add(image)
        elif _run(DOCKER, "image", "inspect", image, check=False).returncode != 0:
            raise RuntimeError(f"image {image} is not here and no registry is reachable")

    def start(
        self,
        name: str,
        c: Container,
        env: dict[str, str],
        config_dir: str,
        volumes: tuple[str, ...] = (),
    ) -> Started:
        """Run replica `name`; `volumes`: host folders mounted read-write at the same path."""
        self.ensure_image(c.image)
        _run(DOCKER, "rm", "-f", name, check=False)  # a leftover of ours with this name
        cmd = [DOCKER, "run", "-d", "--name", name, "--network", "none", "--label", "osken-vnf=1"]
        cmd += [f"--cap-add={cap}" for cap in c.capabilities]
        cmd += [f"--sysctl={sysctl}" for sysctl in SYSCTLS]
        if c.memory_limit:
            cmd += ["--memory", str(c.memory_limit)]
        if c.memory_request:
            cmd += ["--memory-reservation", str(c.memory_request)]
        if c.cpu_limit:
            cmd += ["--cpus", f"{c.cpu_limit:g}"]
        if c.cpu_request:
            cmd += ["--cpu-shares", str(max(2, int(c.cpu_request * 1024)))]
        cmd += ["-v", f"{config_dir}:{CONFIG_MOUNT}:ro"]
        for folder in volumes:
            cmd += ["-v", f"{folder}:{folder}"]
        for key, value in env.items():
            cmd += ["-e", f"{key}={value}"]
        cmd.append(c.image)
        _run(*cmd)
        pid = int(_run(DOCKER, "inspect", "-f", "{{.State.Pid}}", name).stdout)
        if pid == 0:
            tail = self.logs(name).strip().splitlines()[-3:]
            raise RuntimeError(f"{name} exited as it started: {' | '.join(tail)}")
        _run("ip", "netns", "attach", name, str(pid))
        return Started(name, pid)

    def stop(self, name: str) -> None:
        _run(DOCKER, "rm", "-f", name, check=False)
        _run("ip", "netns", "delete", name, check=False)

    def state(self, name: str) -> dict:
        out = _run(DOCKER, "inspect", name, check=False)
        if out.returncode:
            return {"running": False, "status": "gone"}
        info = json.loads(out.stdout)[0]
        return {
            "running": info["State"]["Running"],
            "status": info["State"]["Status"],
            "started": info["State"]["StartedAt"],
            "memory": info["HostConfig"]["Memory"],
            "nano_cpus": info["HostConfig"]["NanoCpus"],
            "id": info["Id"],
        }

    def logs(self, name: str) -> str:
        out = _run(DOCKER, "logs", name, check=False)
        return out.stdout + out.stderr

    def agent_status(self, name: str) -> dict | None:
        out = _run(DOCKER, "exec", name, "cat", "/run/vnf/status.json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout else None


class NamespaceRuntime:
    """No Docker: the agent runs in a network namespace as our own process."""

    kind = "namespace"

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir

    @staticmethod
    def available() -> bool:
        return True

    def _files(self, name: str) -> tuple[str, str, str]:
        folder = os.path.join(self.state_dir, "replicas", name)
        os.makedirs(folder, exist_ok=True)
        return (
            os.path.join(folder, "pid"),
            os.path.join(folder, "log"),
            os.path.join(folder, "status.json"),
        )

    def start(
        self,
        name: str,
        c: Container,
        env: dict[str, str],
        config_dir: str,
        volumes: tuple[str, ...] = (),
    ) -> Started:
        """Run replica `name`'s agent in a namespace; `volumes` are already where it looks."""
        agent = agent_for(c.image)
        if agent is None:
            raise RuntimeError(f"{c.image}: without Docker only our own VNF images can run")
        LOG.warning(
            "no Docker daemon: %s runs as a namespace host; its limits are not enforced", name
        )
        self.stop(name)
        _run("ip", "netns", "add", name)
        pid_file, log_file, status = self._files(name)
        env = {k: v.replace(CONFIG_MOUNT, config_dir) for k, v in env.items()}
        with open(log_file, "w") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", name, "/usr/bin/python3", "-u", agent],
                env={"PATH": os.environ.get("PATH", ""), **env, "VNF_STATUS_FILE": status},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with open(pid_file, "w") as fh:
            fh.write(str(proc.pid))
        return Started(name, proc.pid)

    def _pid(self, name: str) -> int | None:
        try:
            with open(self._files(name)[0]) as fh:
                return int(fh.read())
        except (OSError, ValueError):
            return None

    def stop(self, name: str) -> None:
        pid = self._pid(name)
        if pid is not None and self.state(name)["running"]:
            os.killpg(pid, signal.SIGTERM)  # our own process group, started by start()
        _run("ip", "netns", "delete", name, check=False)
        shutil.rmtree(os.path.dirname(self._files(name)[0]), ignore_errors=True)

    def state(self, name: str) -> dict:
        pid = self._pid(name)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                running = b"agent.py" in fh.read()
        except (OSError, TypeError):
            running = False
        return {"running": running, "status": "running" if running else "exited", "pid": pid}

    def logs(self, name: str) -> str:
        try:
            with open(self._files(name)[1]) as fh:
                return fh.read()
        except OSError:
            return ""

    def agent_status(self, name: str) -> dict | None:
        try:
            with open(self._files(name)[2]) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None
