"""A lab for the waypoint's security: the seed's AuthorizationPolicies and STRICT mTLS, real
certificates, real HTTP from lab hosts; microsegmentation guards the backends.

The services lab's leaf-spine (topologies/serviceslab.py). Clients in namespace `production`:
h11 is `web` (ServiceAccount web-service), h12 `mobile` (mobile-service), h13 `nobody`
(default). Service `api` (VIP 10.0.100.20, port 80) has backends api-1 (h21) and api-2 (h31),
labelled `app: api-server`, each answering HTTP with its host's name on ports 80 and 8080. The
policies folder holds the seed's mtls-policy.yml and zero-trust-policy.yml unmodified, plus one
policy of the lab's own that allows h13's address (no principal) to GET /healthz. The
controller runs the services app and microsegmentation; one waypoint replica on leaf 3.
"""

from __future__ import annotations

import os
import shlex
import shutil
import textwrap
from contextlib import contextmanager

from topologies.serviceslab import IPS, leafspine_under_services
from topologies.wait import until
from topologies.waypointlab import HTTP_PROBE, SEEDS, WAYPOINT, WaypointLab

SEED_MESH = os.path.join(os.path.dirname(SEEDS), "seed-mesh")
SEED_FILES = ("mtls-policy.yml", "zero-trust-policy.yml")
VIP = "10.0.100.20"
CLIENTS = {"h11": ("web", "10.0.0.1"), "h12": ("mobile", "10.0.0.2"), "h13": ("nobody", "10.0.0.3")}
BACKENDS = {"h21": "api-1", "h31": "api-2"}
HEALTH_FROM_H13 = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: health-from-h13, namespace: production}
spec:
  selector: {matchLabels: {app: api-server}}
  rules:
    - from: [{source: {ipBlocks: ["10.0.0.3/32"]}}]
      to: [{operation: {methods: ["GET"], paths: ["/healthz"]}}]
"""


def lab_config(folder) -> str:
    """The lab's config text; the seed's security files are copied into folder/policies."""
    policies = folder / "policies"
    policies.mkdir(exist_ok=True)
    for name in SEED_FILES:
        shutil.copy(os.path.join(SEED_MESH, name), policies / name)
    (policies / "zz-health.yaml").write_text(HEALTH_FROM_H13)
    accounts = {"web": "web-service", "mobile": "mobile-service", "nobody": "default"}
    clients = "".join(
        f"  - {{name: {n}, namespace: production, ip: {ip}, service_account: {accounts[n]}}}\n"
        for n, ip in CLIENTS.values()
    )
    backends = "".join(
        f"  - {{name: {n}, namespace: production, ip: {IPS[h]}, labels: {{app: api-server}}}}\n"
        for h, n in BACKENDS.items()
    )
    return (
        "endpoints:\n"
        + clients
        + backends
        + textwrap.dedent(
            f"""\
            services:
              - name: api
                vip: {VIP}
                port: 80
                backends: [{{endpoint: api-1}}, {{endpoint: api-2}}]
            policies: [{policies}]
            mesh:
              waypoint: {{bridge: lf3, addresses: [{WAYPOINT}/8]}}
            """
        )
    )


class AuthzLab(WaypointLab):
    """The running lab, and curl from its hosts with the lab CA's certificates."""

    @property
    def certs(self) -> str:
        """mesh.certs_dir: the default, beside the config."""
        return str(self.folder / "mesh-certs")

    def curl(
        self, client: str, url: str, method: str = "GET", cert: str | None = None
    ) -> tuple[str, int]:
        """One request from `client` with curl: (HTTP status, "000" when none came back; curl's
        exit code). https URLs check the waypoint against the lab CA; `cert` names the endpoint
        whose certificate and key the client presents."""
        args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"]
        args += ["-X", method]
        if url.startswith("https:"):
            args += ["--cacert", f"{self.certs}/ca.pem"]
        if cert is not None:
            args += ["--cert", f"{self.certs}/{cert}/cert.pem"]
            args += ["--key", f"{self.certs}/{cert}/key.pem"]
        out = self.lab.host(client).cmd(shlex.join([*args, url]) + '; echo " $?"')
        status, code = out.split()[-2:]
        return status, int(code)


@contextmanager
def authz_lab(folder):
    """Controller (services and microseg, metrics on), the lab with HTTP backends, the
    waypoint serving; all stopped after. RuntimeError if the lab or the waypoint does not come
    up, or Mininet gave the clients other addresses than the config's."""
    with leafspine_under_services(folder, lab_config(folder), ("apps/microseg",)) as (
        ctl,
        lab,
        port,
    ):
        for host, (_, ip) in CLIENTS.items():
            if lab.host(host).IP() != ip:
                raise RuntimeError(f"{host} is {lab.host(host).IP()}, the config says {ip}")
        for host in BACKENDS:
            for p in ("80", "8080"):
                lab.run_server(host, ["/usr/bin/python3", HTTP_PROBE, "serve", p, "--name", host])
        env = AuthzLab(ctl, lab, folder, port)
        url = f"https://{VIP}:80/api/v1/ready"
        if not until(lambda: env.curl("h12", url, cert="mobile")[0] == "200", 60, 0.5):
            raise RuntimeError("the waypoint never served:\n" + ctl.log()[-3000:])
        yield env
