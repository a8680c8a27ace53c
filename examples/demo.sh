#!/usr/bin/env bash
# Weft demo: three hosts, each a network namespace on one underlay switch
# (198.18.0.1-3), one `weft` router per host, one shared network secret.
# h1 starts alone; h2 and h3 are given only h1; the routers find each other and
# form an encrypted full mesh. Everything is removed on exit, also on Ctrl-C or error.
#
#   sudo examples/demo.sh               builds with `cargo build --release` first
#   sudo WEFT=target/debug/weft examples/demo.sh    uses that binary instead
#
# Nothing is added to the root network namespace: every link is created inside a
# namespace named demo-*, and every process is ended by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."

P=demo-                       # namespace prefix
HOSTS=(1 2 3)
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: needs root (it creates network namespaces); run: sudo examples/demo.sh" >&2
  exit 1
fi

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
# A C toolchain to build, iproute2 for the namespaces, ping for the pods, nftables for
# the router's firewall table.
need_packages "${BUILD_PACKAGES[@]}" iproute2 iputils-ping nftables

if [ -z "${WEFT:-}" ]; then
  # shellcheck source=scripts/cargo-env.sh
  . scripts/cargo-env.sh
  say "cargo build --release"
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && [ -O . ] && [ "$(stat -c %U .)" = "$SUDO_USER" ]; then
    # Build as the invoking user, so target/ does not end up owned by root.
    sudo -u "$SUDO_USER" env PATH="$PATH" CARGO_HOME="${CARGO_HOME:-}" RUSTUP_HOME="${RUSTUP_HOME:-}" cargo build --release
  else
    cargo build --release
  fi
  WEFT=target/release/weft
fi
WEFT=$(realpath "$WEFT")
STATE=$(mktemp -d /tmp/weft-demo.XXXXXX)

pids=()
cleanup() {
  local pid ns
  set +e
  say "tearing down"
  for pid in "${pids[@]}"; do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = weft ] || continue
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 30); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
  done
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^${P}(sw|[hp][0-9]+)$"); do
    for pid in $(ip netns pids "$ns"); do     # anything left in our namespaces is ours
      echo "killing leftover pid $pid in $ns"; kill -KILL "$pid" 2>/dev/null
    done
    ip netns del "$ns"
  done
  rm -rf "$STATE"
}
trap cleanup EXIT

if ip netns list | awk '{print $1}' | grep -qE "^${P}(sw|[hp][0-9]+)$"; then
  say "removing namespaces left by an earlier demo"
  cleanup
  STATE=$(mktemp -d /tmp/weft-demo.XXXXXX)
fi

say "underlay: switch ${P}sw, hosts ${HOSTS[*]/#/${P}h} on 198.18.0.0/24"
ip netns add "${P}sw"
ip -n "${P}sw" link set lo up
ip -n "${P}sw" link add br0 type bridge
ip -n "${P}sw" link set br0 up
for i in "${HOSTS[@]}"; do
  ip netns add "${P}h$i"
  ip -n "${P}h$i" link set lo up
  ip -n "${P}sw" link add "h$i" type veth peer name eth0 netns "${P}h$i"
  ip -n "${P}sw" link set "h$i" master br0 up
  ip -n "${P}h$i" addr add "198.18.0.$i/24" dev eth0
  ip -n "${P}h$i" link set eth0 up
  mkdir -p "$STATE/h$i/run" "$STATE/h$i/data"
done

say "weft secret generate > $STATE/secret (mode 0600)"
(umask 077; "$WEFT" secret generate >"$STATE/secret")

# Runs weft inside host $1's namespace, with that host's run and data dirs.
weft_on() {
  local i=$1; shift
  ip netns exec "${P}h$i" env WEFT_RUN_DIR="$STATE/h$i/run" WEFT_DATA_DIR="$STATE/h$i/data" "$WEFT" "$@"
}

for i in "${HOSTS[@]}"; do
  peers=()
  [ "$i" = 1 ] || peers=(198.18.0.1)
  say "h$i: weft launch --password-file secret --nickname h$i ${peers[*]:-}"
  if ! weft_on "$i" launch --password-file "$STATE/secret" --nickname "h$i" "${peers[@]}"; then
    echo "launch failed on h$i; its log:" >&2
    tail -n 30 "$STATE/h$i/run/weft.log" >&2 2>/dev/null || true
    exit 1
  fi
  pids+=("$(cat "$STATE/h$i/run/weft.pid")")
done

say "waiting for the full mesh (every host: 2 established encrypted connections)"
start=$(date +%s%N)
for _ in $(seq 600); do
  ok=1
  for i in "${HOSTS[@]}"; do
    n=$(weft_on "$i" status connections 2>/dev/null | grep ' established ' | grep -vc 'unencrypted' || true)
    [ "$n" = 2 ] || ok=0
  done
  [ "$ok" = 1 ] && break
  sleep 0.1
done
if [ "$ok" != 1 ]; then
  echo "no full mesh after 60 s" >&2
  for i in "${HOSTS[@]}"; do weft_on "$i" status connections >&2 || true; done
  exit 1
fi
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'mesh formed in %d.%03d s\n' $((ms / 1000)) $((ms % 1000))

for i in "${HOSTS[@]}"; do
  say "h$i: weft status"
  weft_on "$i" status
  say "h$i: weft status connections"
  weft_on "$i" status connections
done

say "pods: one per host, attached with weft attach (10.40.0.i/16 and fd00:40::i/64)"
for i in "${HOSTS[@]}"; do
  ip netns add "${P}p$i"
  ip -n "${P}p$i" link set lo up
  echo "h$i: weft attach 10.40.0.$i/16 fd00:40::$i/64 ${P}p$i -> $(weft_on "$i" attach "10.40.0.$i/16" "fd00:40::$i/64" "${P}p$i")"
done
sleep 2   # IPv6 duplicate address detection
for i in "${HOSTS[@]}"; do
  for j in "${HOSTS[@]}"; do
    [ "$i" = "$j" ] && continue
    say "pod on h$i pings the pod on h$j (IPv4, then IPv6), across the encrypted sleeve"
    ip netns exec "${P}p$i" ping -c 2 -W 2 "10.40.0.$j"
    ip netns exec "${P}p$i" ping -6 -c 2 -W 2 "fd00:40::$j"
  done
done

say "h1: weft status connections (established = control link up and UDP path confirmed)"
weft_on 1 status connections

say "done; the trap removes the routers and namespaces"
