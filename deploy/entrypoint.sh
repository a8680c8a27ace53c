#!/bin/sh
# Entrypoint of the Weft image: installs the CNI plugin onto the node, then runs the
# router in the foreground with the arguments given to the container.
#
# The plugin is *copied* (`setup-cni --copy`), not linked: a link to /usr/bin/weft
# would point into this container's file system, which the node's container runtime
# cannot see. Set WEFT_CNI_BIN_DIR / WEFT_CNI_CONF_DIR to install elsewhere, or
# WEFT_SKIP_CNI=1 to install nothing (a host that only routes).
#
# When the first argument is a program (`podman run IMAGE weft version`, `... sh`),
# that program runs instead; otherwise the arguments (options, then peers) go to
# `weft launch`.
set -eu

case "${1:-}" in
  -*|'') ;;
  *) if command -v "$1" >/dev/null 2>&1; then exec "$@"; fi ;;
esac

if [ "${WEFT_SKIP_CNI:-0}" != 1 ]; then
  bin_dir=${WEFT_CNI_BIN_DIR:-/host/opt/cni/bin}
  conf_dir=${WEFT_CNI_CONF_DIR:-/host/etc/cni/net.d}
  for d in "$bin_dir" "$conf_dir"; do
    if [ ! -d "$d" ]; then
      echo "weft-entrypoint: $d is missing: mount the node's CNI directory there" \
        "(or set WEFT_SKIP_CNI=1)" >&2
      exit 1
    fi
  done
  weft setup-cni --copy --bin-dir "$bin_dir" --conf-dir "$conf_dir"
fi

exec weft launch --foreground "$@"
