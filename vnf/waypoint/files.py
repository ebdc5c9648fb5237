"""A waypoint's config folder: Envoy's discovery files, swapped in whole, and its admin API.

Layout of a waypoint's folder (the same path inside its containers, which mount it):

    bootstrap-<n>.json      replica n's bootstrap (vnf.waypoint.envoy.bootstrap)
    lds.json -> ..data/lds.json
    cds.json -> ..data/cds.json
    ..data -> ..gen-<version>     the generation in force
    ..gen-<version>/{lds,cds}.json
    <replica>/admin.sock    each replica's admin API

A new generation is written beside the old one and `..data` is swapped to it by one rename, as
Kubernetes does for ConfigMap volumes: Envoy watches the folder for moves (PathConfigSource
`watched_directory`) and reads both files of one generation, never a mix of two.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket

DATA = "..data"
LDS = "lds.json"
CDS = "cds.json"


def write_generation(folder: str, version: str, lds: str, cds: str) -> None:
    """Put generation `version` (the texts of lds.json and cds.json) in force in `folder`,
    atomically; older generations are removed after the swap. lds.json holds the waypoint's
    private key (its TLS listener): each generation is readable by its owner only (0700, 0600).
    """
    os.makedirs(folder, exist_ok=True)
    gen = f"..gen-{version}"
    path = os.path.join(folder, gen)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    for name, text in ((LDS, lds), (CDS, cds)):
        fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    tmp = os.path.join(folder, "..data.tmp")
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(gen, tmp)
    for name in (LDS, CDS):  # the stable names, made once
        link = os.path.join(folder, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(DATA, name), link)
    os.replace(tmp, os.path.join(folder, DATA))
    for entry in os.listdir(folder):
        if entry.startswith("..gen-") and entry != gen:
            shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)


def in_force(folder: str) -> str | None:
    """The version `..data` points at, or None before the first generation."""
    try:
        return os.readlink(os.path.join(folder, DATA)).removeprefix("..gen-")
    except OSError:
        return None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def admin_get(sock: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET `path` from an Envoy admin API listening on the Unix socket `sock`: (status, body).

    Raises:
        OSError: nothing listens there (not started, or stopped).
    """
    conn = _UnixConnection(sock, timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def stats(sock: str, prefix: str = "", timeout: float = 2.0) -> dict[str, str]:
    """Envoy's statistics (counters, gauges and text readouts) whose names start with `prefix`,
    name -> value as text; {} when the admin API does not answer within `timeout` s."""
    try:
        status, body = admin_get(sock, "/stats", timeout)
    except OSError:
        return {}
    if status != 200:
        return {}
    out = {}
    for line in body.splitlines():
        name, sep, value = line.partition(": ")
        if sep and name.startswith(prefix):
            out[name] = value.strip().strip('"')
    return out
