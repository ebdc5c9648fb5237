#!/usr/bin/env bash
# Idempotent machine setup: Debian packages, the project venv, kernel headers for bcc, and a
# userspace-datapath Open vSwitch. Quick on a rerun: every step checks before it acts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: must run as root (it installs packages and starts Open vSwitch)" >&2
    exit 1
fi

# --- Debian packages -------------------------------------------------------------------------
PACKAGES=(
    mininet openvswitch-switch openvswitch-common ethtool iproute2 iputils-ping iperf3 telnet
    tcpdump tzdata netsniff-ng nftables python3-venv python3-pip python3-bpfcc bpfcc-tools linux-headers-amd64
    libbpf1
    docker.io mmdebstrap chromium
)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- etcd for the replicas' labs (Debian's etcd-server 3.4). Its package starts a system daemon
# on install through invoke-rc.d: forbid that for the install (a policy-rc.d that denies starts,
# unless the machine already has one), and stop a daemon the install started anyway (the init
# script's own pid file). Labs start their own etcd on loopback (topologies/etcdlab.py). ------
if ! dpkg-query -W -f='${Status}' etcd-server 2>/dev/null | grep -q "install ok installed"; then
    log "installing etcd-server (no system daemon is left running)"
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends etcd-server >/dev/null || true
    [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ -x /etc/init.d/etcd ] && /etc/init.d/etcd status >/dev/null 2>&1; then
        log "stopping the etcd daemon the package started"
        /etc/init.d/etcd stop >/dev/null 2>&1 || true
    fi
    dpkg-query -W -f='${Status}' etcd-server 2>/dev/null | grep -q "install ok installed" \
        || { echo "setup: etcd-server did not install" >&2; exit 1; }
fi

# --- Python venv: Debian's interpreter, so Mininet and bcc (system packages) are importable ----
if [ ! -x .venv/bin/python ]; then
    log "creating .venv from /usr/bin/python3"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.setup-stamp
want="$(cat setup.cfg pyproject.toml scripts/setup.sh 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing the project into .venv (pip install -e .[test])"
    .venv/bin/pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e ".[test]"
    echo "$want" > "$stamp"
fi

# --- Kernel headers for bcc: the running kernel has none; Debian's generic headers work for XDP --
kbuild="/lib/modules/$(uname -r)/build"
if [ ! -e "$kbuild/Makefile" ]; then
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1 || true)
    arch=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
    if [ -n "$arch" ] && [ -n "$common" ]; then
        log "linking kernel headers $arch for bcc"
        mkdir -p "/lib/modules/$(uname -r)"
        ln -sfn "$arch" "$kbuild"
        ln -sfn "$common" "/lib/modules/$(uname -r)/source"
    fi
fi

# --- The topology page's graph library: Cytoscape.js from the npm registry, pinned by version
# and tarball hash, served by the controller itself (nothing is loaded from the internet at run
# time; docs/dependencies.md) --------------------------------------------------------------------
CYTOSCAPE=3.34.4
CYTOSCAPE_SHA256=0d02363d99d805ce8d91fdecab7b2a8cb91ee280d67f309ce44c161d117b4679
vendor=controller/web/static/vendor
if [ "$(cat "$vendor/.version" 2>/dev/null)" != "$CYTOSCAPE" ]; then
    log "installing Cytoscape.js $CYTOSCAPE for the topology page"
    if ! command -v npm >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
    fi
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack "cytoscape@$CYTOSCAPE" --silent >/dev/null)
    echo "$CYTOSCAPE_SHA256  $tmp/cytoscape-$CYTOSCAPE.tgz" | sha256sum -c --quiet
    tar -xzf "$tmp/cytoscape-$CYTOSCAPE.tgz" -C "$tmp" package/dist/cytoscape.min.js package/LICENSE
    mkdir -p "$vendor"
    cp "$tmp/package/dist/cytoscape.min.js" "$vendor/cytoscape.min.js"
    cp "$tmp/package/LICENSE" "$vendor/cytoscape.LICENSE"
    echo "$CYTOSCAPE" > "$vendor/.version"
    rm -rf "$tmp"
fi

# --- Open vSwitch, userspace datapath (there is no kernel module here, and no systemd) --------
if ! ovs-vsctl --timeout=2 show >/dev/null 2>&1; then
    log "starting ovsdb-server"
    /usr/share/openvswitch/scripts/ovs-ctl --no-ovs-vswitchd --system-id=random start >/dev/null
fi
if ! ovs-appctl --timeout=2 version >/dev/null 2>&1; then
    log "starting ovs-vswitchd (userspace datapath)"
    ovs-vswitchd --pidfile --detach --log-file unix:/var/run/openvswitch/db.sock
fi
ovs-vsctl --timeout=5 show >/dev/null

# --- Docker, for the VNF containers: its bridge and iptables handling off, so the lab is left
# alone (Debian's client: /usr/local/bin may hold a newer one that speaks another API) --------
if ! /usr/bin/docker info >/dev/null 2>&1; then
    log "starting dockerd (--bridge=none --iptables=false)"
    setsid /usr/sbin/dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
        --log-level=warn >>/var/log/osken-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        /usr/bin/docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    /usr/bin/docker info >/dev/null 2>&1 || log "dockerd did not start (see /var/log/osken-dockerd.log); VNFs will run as namespace hosts"
fi
log "ready"
