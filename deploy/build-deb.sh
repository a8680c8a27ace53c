#!/usr/bin/env bash
# Builds the weft Debian package offline with dpkg-deb:
#
#   deploy/build-deb.sh WEFT-BINARY [OUT-DIR]
#
# WEFT-BINARY: target/release/weft (or target/debug/weft); OUT-DIR: where the .deb goes
# (default target/deploy). Prints the path of the package. The package holds:
#   /usr/bin/weft                         the binary
#   /lib/systemd/system/weft.service      the unit (deploy/systemd/weft.service)
#   /etc/default/weft                     its settings (a conffile)
#   /opt/cni/bin/weft-net, weft-ipam      the CNI plugin: links to /usr/bin/weft
#   /usr/share/doc/weft/README.md
# It writes no CNI configuration: `weft setup-cni` does, when the host should use it.
set -euo pipefail

usage() {
  echo "usage: $0 WEFT-BINARY [OUT-DIR]" >&2
  exit 2
}
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
case "$1" in -*) usage ;; esac
repo=$(cd "$(dirname "$0")/.." && pwd)
binary=$1
out=${2:-$repo/target/deploy}
for tool in dpkg-deb dpkg; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$0: $tool is missing; install it with: apt-get install $tool" >&2
    exit 1
  fi
done
if [ ! -x "$binary" ] || ! version_line=$("$binary" version 2>/dev/null); then
  echo "$0: $binary is not a runnable weft binary; build one first: cargo build --release" >&2
  exit 1
fi
# `weft version` prints `weft 0.1.0`.
version=${version_line#weft }
if ! [[ "$version" =~ ^[0-9][0-9A-Za-z.+~-]*$ ]]; then
  echo "$0: cannot read a version from \`$binary version\` (printed: $version_line)" >&2
  exit 1
fi
arch=$(dpkg --print-architecture)

mkdir -p "$out"
root=$(mktemp -d "$out/deb.XXXXXX")
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
install -D -m 0755 "$binary" "$root/usr/bin/weft"
# Stripped, as Debian ships binaries (a debug build shrinks from ~170 MB to ~20 MB).
if command -v strip >/dev/null 2>&1; then
  strip --strip-unneeded "$root/usr/bin/weft"
fi
install -D -m 0644 "$repo/deploy/systemd/weft.service" "$root/lib/systemd/system/weft.service"
install -D -m 0644 "$repo/deploy/debian/weft.default" "$root/etc/default/weft"
install -D -m 0644 "$repo/README.md" "$root/usr/share/doc/weft/README.md"
mkdir -p "$root/opt/cni/bin"
ln -s /usr/bin/weft "$root/opt/cni/bin/weft-net"
ln -s /usr/bin/weft "$root/opt/cni/bin/weft-ipam"
mkdir -p "$root/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "$repo/deploy/debian/$script" "$root/DEBIAN/$script"
done
echo /etc/default/weft >"$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: weft
Version: $version
Architecture: $arch
Maintainer: Weft developers <weft@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1, nftables
Recommends: iproute2, containernetworking-plugins
Section: net
Priority: optional
Description: encrypted layer-2 mesh network for containers
 Weft connects containers on many hosts into one encrypted layer-2 network, with
 automatic IP allocation and a CNI plugin. This package holds the weft router and
 CLI, a systemd unit (weft.service, not enabled: put the network secret in
 /etc/weft/secret first) and the CNI plugin links in /opt/cni/bin.
CONTROL
deb=$out/weft_${version}_${arch}.deb
# gzip: quick, also for a 170 MB debug binary; files owned by root whoever builds.
dpkg-deb --build --root-owner-group -Zgzip "$root" "$deb" >/dev/null
echo "$deb"
