#!/usr/bin/env python3
"""VNFs for labs: run the Deployments in a file as containers plugged into a switch.

    sudo .venv/bin/python scripts/vnf.py deploy vnf-deployment.yml --bridge s1
    sudo .venv/bin/python scripts/vnf.py status vnf-deployment.yml   # replicas, limits, rules
    sudo .venv/bin/python scripts/vnf.py logs vnf-deployment.yml
    sudo .venv/bin/python scripts/vnf.py delete vnf-deployment.yml

`deploy` again with an edited ConfigMap updates the replicas' rules in place, no restart. A bad
file: one line naming file, line and field, exit 2. Without a Docker daemon the replicas run
as namespace hosts (the log says so).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from controller.config import ConfigError  # noqa: E402
from vnf.deploy import Deployer  # noqa: E402
from vnf.manifest import load_manifest  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["deploy", "status", "logs", "delete"])
    ap.add_argument("file", help="YAML with Deployments (and the ConfigMaps they use)")
    ap.add_argument("--bridge", help="the switch to plug replicas into (deploy)")
    ap.add_argument("--json", action="store_true", help="status as JSON")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = load_manifest(a.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    deployer = Deployer()
    names = [d.name for d in manifest.deployments]
    if a.command == "deploy":
        if not a.bridge:
            print("deploy needs --bridge", file=sys.stderr)
            return 2
        for name, seconds in deployer.deploy(manifest, a.bridge).items():
            print(f"{name}: deployed in {seconds:.1f} s ({deployer.runtime.kind})")
        return 0
    try:
        if a.command == "status":
            states = [deployer.status(n) for n in names]
            if a.json:
                print(json.dumps(states, indent=1))
            for s in [] if a.json else states:
                print(f"{s['name']} on {s['bridge']} ({s['runtime']}):")
                for r in s["replicas"]:
                    agent = r["agent"] or {}
                    rules = agent.get("rules", "?") if agent.get("ok") else agent.get("error")
                    print(
                        f"  {r['name']}: {r['state']['status']}, ports {'/'.join(r['ports'])}"
                        f" {'up' if r['ports_present'] else 'missing'}, rules: {rules}"
                    )
        elif a.command == "logs":
            for n in names:
                for replica, text in deployer.logs(n).items():
                    print(f"--- {replica}\n{text}", end="")
        else:
            for n in names:
                deployer.delete(n)  # it logs "<name>: deleted"
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
