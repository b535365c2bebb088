#!/usr/bin/env bash
# Build the local stand-in for the CUDA base image: a Debian bookworm root filesystem from this machine's own apt
# mirror (debootstrap, minbase), imported into Docker as aha-base:bookworm. Needed where no image registry is
# reachable; docs/docker.md lists every way it differs from nvidia/cuda:13.0.3-devel-ubuntu24.04.
#
#   scripts/docker/base-image.sh [IMAGE]        # default aha-base:bookworm; does nothing if the image exists
#
# Needs root (debootstrap chroots and creates device nodes), debootstrap, and a running Docker engine.
# Exit 2 with one line naming what is missing.
set -euo pipefail

IMAGE=${1:-aha-base:bookworm}
SUITE=bookworm

fail() {
    echo "base-image: $*" >&2
    exit 2
}

docker info >/dev/null 2>&1 || fail "no Docker engine answers (docker info failed): install docker.io and start dockerd as root."
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base-image: $IMAGE exists; remove it (docker rmi $IMAGE) to rebuild"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || fail "debootstrap needs root; run as root (or build $IMAGE elsewhere and docker load it)."
command -v debootstrap >/dev/null || fail "debootstrap is not installed: apt-get install -y debootstrap."

# This machine's Debian mirror: the first URIs: line of a deb822 source, else the first `deb` line of sources.list.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $3 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list."

rootfs=$(mktemp -d /tmp/aha-base-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "base-image: debootstrap --variant=minbase $SUITE from $mirror (about a minute)"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2
    fail "debootstrap failed (full log: $rootfs.log)."
}
rm -f "$rootfs.log"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import - "$IMAGE" >/dev/null
echo "base-image: imported $IMAGE ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
