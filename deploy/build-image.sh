#!/usr/bin/env bash
# Builds the Weft container image without internet access: the base root file system
# is made from Debian 12 packages with debootstrap (from the Debian mirror apt uses),
# imported into podman, and deploy/Containerfile is built FROM it.
#
#   deploy/build-image.sh [--tag TAG] [--podman-root DIR] WEFT-BINARY
#   deploy/build-image.sh --base-only     (makes the base tarball, prints its path)
#
# WEFT-BINARY: the `weft` to ship (target/release/weft or target/debug/weft).
# --tag: image name (default localhost/weft:latest).
# --podman-root: a separate podman storage (DIR/root, DIR/runroot; the tests use one
#   under target/), instead of the system's.
# The debootstrap tarball is cached in target/deploy/ (WEFT_BASE_CACHE overrides the
# directory); delete it to rebuild the base. Needs root, podman, runc and debootstrap.
set -euo pipefail

usage() {
  echo "usage: $0 [--tag TAG] [--podman-root DIR] WEFT-BINARY | --base-only" >&2
  exit 2
}

repo=$(cd "$(dirname "$0")/.." && pwd)
tag=localhost/weft:latest
podman_root=
binary=
base_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) [ $# -ge 2 ] || usage; tag=$2; shift 2 ;;
    --podman-root) [ $# -ge 2 ] || usage; podman_root=$2; shift 2 ;;
    --base-only) base_only=1; shift ;;
    -h|--help) usage ;;
    -*) echo "$0: unknown option $1" >&2; usage ;;
    *) [ -z "$binary" ] || usage; binary=$1; shift ;;
  esac
done
if [ "$base_only" = 1 ]; then
  [ -z "$binary" ] || usage
elif [ -z "$binary" ]; then
  usage
elif [ ! -x "$binary" ] || ! "$binary" version >/dev/null 2>&1; then
  echo "$0: $binary is not a runnable weft binary; build one first: cargo build --release" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "$0: debootstrap and podman's storage need root; run: sudo $0 ..." >&2
  exit 1
fi
for tool in podman runc debootstrap; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$0: $tool is missing; install it with: apt-get install $tool" >&2
    exit 1
  fi
done

# runc and cgroupfs work with cgroup v1, v2 and the hybrid layout alike (crun refuses
# hybrid), and with or without systemd as PID 1. Podman gives a rootful container the
# largest open-files and process limits, which fails where this shell may not raise
# its own (no CAP_SYS_RESOURCE, e.g. inside another container): keep ours.
podman=(podman --runtime runc --cgroup-manager cgroupfs)
if [ -n "$podman_root" ]; then
  # Absolute: podman records the path in its database and refuses another spelling.
  mkdir -p "$podman_root/root" "$podman_root/runroot"
  podman_root=$(realpath "$podman_root")
  podman+=(--root "$podman_root/root" --runroot "$podman_root/runroot")
fi
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)

# The Debian mirror apt uses on this machine (deb822 sources or the classic list).
mirror() {
  local m
  m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  if [ -z "$m" ]; then
    m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | grep -v -- '-security' | awk '{print $2}' | head -n1 || true)
  fi
  # Debian's cloud images point apt at a list of mirrors (mirror+file:///etc/apt/...):
  # debootstrap wants one URL, the first of that list.
  case "$m" in
    mirror+file:*) m=$(grep -m1 -E '^https?://' "${m#mirror+file:}" 2>/dev/null | awk '{print $1}' || true) ;;
    mirror+*) m=${m#mirror+} ;;
  esac
  echo "${m:-http://deb.debian.org/debian}"
}

# Bump the suffix when the package list changes, so that a stale cache is not used.
base_name=weft-base-bookworm-1
cache=${WEFT_BASE_CACHE:-$repo/target/deploy}
tarball=$cache/$base_name.tar
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  m=$(mirror)
  echo "==> debootstrap bookworm from $m (cached in $tarball)" >&2
  work=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include=nftables,iproute2,ca-certificates \
    bookworm "$work/rootfs" "$m" >"$cache/debootstrap.log" 2>&1 || {
      echo "$0: debootstrap failed; its log:" >&2
      tail -n 30 "$cache/debootstrap.log" >&2
      exit 1
    }
  # What an image does not need: apt's downloaded packages and lists, docs, logs.
  rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/* \
    "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* "$work/rootfs"/var/log/*
  tar --numeric-owner -C "$work/rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$work"
  trap - EXIT
fi
if [ "$base_only" = 1 ]; then
  echo "$tarball"
  exit 0
fi

base=localhost/$base_name:latest
if ! "${podman[@]}" image exists "$base"; then
  echo "==> podman import $tarball as $base"
  "${podman[@]}" import --change 'CMD ["/bin/bash"]' "$tarball" "$base" >/dev/null
fi

# A small build context: only the two files the Containerfile copies.
ctx=$(mktemp -d "$cache/context.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/deploy"
cp "$binary" "$ctx/weft"
cp "$repo/deploy/entrypoint.sh" "$ctx/deploy/entrypoint.sh"
echo "==> podman build $tag FROM $base"
"${podman[@]}" build --network none --pull=never "${limits[@]}" \
  --build-arg "BASE_IMAGE=$base" --build-arg WEFT_BINARY=weft \
  -f "$repo/deploy/Containerfile" -t "$tag" "$ctx"
echo "==> built $tag"
