"""The contract's Mininet command line, exactly as users type it, with the real `mn`."""

import subprocess

from topologies.harness import ROOT, remove_leftovers, snapshot
from topologies.leafspine import LeafSpineTopo


def test_mn_custom_topology_pingall(controller, tmp_path):
    ctl = controller()
    before = snapshot()
    try:
        result = subprocess.run(
            [
                "mn",
                "--custom",
                f"{ROOT}/topologies/leafspine.py",
                "--topo",
                "leafspine,2,2,2",
                "--switch",
                "ovs,datapath=user,protocols=OpenFlow13",
                "--controller",
                f"remote,ip=127.0.0.1,port={ctl.port}",
                "--test",
                "pingall",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        remove_leftovers(LeafSpineTopo(2, 2, 2), *before)
    assert "Results: 0% dropped" in result.stdout + result.stderr, result.stderr[-2000:]
