"""A lab for service chains: h1 on s1, h2 on s2, the seed's virtual-firewall plugged into s1.

Shared by the VNF integration tests and scripts/bench_vnf.py. The controller runs apps/chains;
the chain sends h1 -> h2 on ports 80, 443 and 22 through the firewall VNF.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import contextmanager

from topologies.harness import ROOT, Controller, Lab
from topologies.linear import LinearTopo
from topologies.wait import seconds_until
from vnf.deploy import Deployer
from vnf.manifest import load_manifest

SEED_VNF = f"{ROOT}/tests/data/seed-vnf/vnf-deployment.yml"
ENDPOINTS = """\
endpoints:
  - {name: client, ip: 10.0.0.1, labels: {role: client}}
  - {name: server, ip: 10.0.0.2, labels: {role: web}}
"""
CHAIN = """\
chains:
  - name: web-via-firewall
    from_labels: {role: client}
    to_labels: {role: web}
    ports: [80, 443, 22, 5201]
    through: [virtual-firewall]
"""


class VnfLab:
    """A running VNF lab (see `vnf_lab`): the controller, a two-host Mininet lab, and the
    deployer of the firewall VNF between them.
    """

    def __init__(self, folder, ctl: Controller, lab: Lab, deployer: Deployer) -> None:
        self.folder, self.ctl, self.lab, self.deployer = folder, ctl, lab, deployer
        self.manifest_path = str(folder / "vnf.yml")

    def deploy(self) -> None:
        """Deploy the manifest in the lab's folder on switch s1."""
        self.deployer.deploy(load_manifest(self.manifest_path), "s1")

    def set_rules(self, rules_json: str | None) -> None:
        """Deploy the seed's Deployment with these rules.json contents (None: the seed's own);
        the replicas re-apply them without a restart."""
        with open(SEED_VNF) as fh:
            seed = fh.read()
        if rules_json is not None:
            head = seed[: seed.index("rules.json: |\n") + len("rules.json: |\n")]
            seed = head + textwrap.indent(rules_json.strip() + "\n", " " * 4)
        with open(self.manifest_path, "w") as fh:
            fh.write(seed)
        self.deploy()

    def crossing(
        self, src: str, dst: str, proto: str, packets: list[tuple[int, int, str]]
    ) -> set[tuple[int, int]]:
        """Which of `packets` (source port, destination port, TCP flags such as "S", "SA", "A";
        "" for UDP), sent as raw frames from `src` to `dst`, reach `dst`: built with scapy on
        src, seen by tcpdump on dst. Returns their (source port, destination port)."""
        a, b = self.lab.host(src), self.lab.host(dst)
        l4 = [
            f"TCP(sport={s}, dport={d}, flags='{f}', seq=1000, ack=1000)"
            if proto == "tcp"
            else f"UDP(sport={s}, dport={d})/b'probe'"
            for s, d, f in packets
        ]
        frames = ", ".join(
            f"Ether(src='{a.MAC()}', dst='{b.MAC()}')/IP(src='{a.IP()}', dst='{b.IP()}')/{x}"
            for x in l4
        )
        send = f"from scapy.all import Ether, IP, TCP, UDP, sendp; sendp([{frames}], "
        out = captured(
            b.popen,
            f"{dst}-eth0",
            f"{proto} and src host {a.IP()} and dst host {b.IP()}",
            lambda: a.cmd(f"{sys.executable} -c \"{send}iface='{src}-eth0', verbose=False)\""),
        )
        seen = re.findall(r"\.(\d+) > [\d.]+\.(\d+): ", out)
        return {(int(s), int(d)) for s, d in seen}

    def reconfigure(self, text: str) -> None:
        """Rewrite the controller's config and wait for the reload.

        Raises
        ------
        RuntimeError
            The controller did not report the reload within 10 s.
        """
        if not self.ctl.rewrite_config(text):
            raise RuntimeError("the controller did not take the config")

    def open_ports(self) -> dict[int, bool]:
        """Which of h2's TCP ports 80, 443 and 22 accept a connection from h1 (1 s each)."""
        return {p: self.lab.connects("h1", "h2", "tcp", p, timeout=1.0) for p in (80, 443, 22)}

    def wait_open(self, port: int, want: bool, timeout: float = 10.0, proto: str = "tcp") -> float:
        """Seconds until a connection to h2:port opens (or stops opening); for UDP, until a
        datagram comes back (or stops coming back). AssertionError after `timeout` seconds."""
        took = seconds_until(
            lambda: self.lab.connects("h1", "h2", proto, port, timeout=0.5) == want, timeout, 0
        )
        if took is not None:
            return took
        raise AssertionError(f"{proto} {port} never became {'open' if want else 'closed'}")


def captured(popen, iface: str, bpf: str, send: Callable[[], object]) -> str:
    """tcpdump's lines for the frames on `iface` that match `bpf` while `send()` runs and for a
    second after (what crosses does so in milliseconds). `popen` starts tcpdump: a Mininet
    host's, or subprocess.Popen for an interface of the root namespace.

    Raises RuntimeError if tcpdump exits before it listens.
    """
    sniff = popen(
        ["tcpdump", "-i", iface, "-n", "-l", "--immediate-mode", bpf],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while "listening on" not in sniff.stderr.readline():
            if sniff.poll() is not None:
                raise RuntimeError(f"tcpdump on {iface} did not start")
        send()
        time.sleep(1.0)
    finally:
        sniff.terminate()
        out = sniff.communicate(timeout=5)[0]
    return out


@contextmanager
def vnf_lab(folder, chain: bool = True, deploy: bool = True):
    """A VNF lab in `folder`: controller with the chains app, h1 - s1 - s2 - h2, servers on
    h2's TCP 80, 443 and 22, and (with `deploy`) the seed's firewall VNF chained in (with
    `chain`). Yields a VnfLab; everything it started is stopped on exit.

    Raises
    ------
    RuntimeError
        The lab did not reach a loss-free pingall within 30 s.
    """
    (folder / "lab.yaml").write_text(ENDPOINTS + (CHAIN if chain else ""))
    shutil.copy(SEED_VNF, folder / "vnf.yml")
    deployer = Deployer()
    ctl = Controller(
        ["apps/chains"], config=str(folder / "lab.yaml"), log_path=str(folder / "ctl.log")
    )
    ctl.start()
    lab = Lab(LinearTopo(2), ctl.port)
    env = VnfLab(folder, ctl, lab, deployer)
    try:
        lab.start()
        if lab.wait_connected(timeout=30) is None:
            raise RuntimeError("the lab never connected")
        lab.serve("h2", "tcp:80", "tcp:443", "tcp:22")
        if deploy:
            env.deploy()
        yield env
    finally:
        if deployer.load("virtual-firewall"):
            deployer.delete("virtual-firewall")
        lab.stop()
        ctl.stop()
