#!/usr/bin/env bash
# bench-udp-drops.sh BACKEND [SECONDS] - where the 64-byte UDP test loses its packets.
#
# The shared benchmark (../shared/bench/run.sh) reports what iperf3's server reads.
# This runs the same test once on the same testbed (its testbed.sh and backends/, two
# hosts and two pods in network namespaces it creates and removes) and then prints, per
# namespace, the kernel's UDP counters: what the sending pod sent, what reached the
# receiving pod's UDP layer (InDatagrams + RcvbufErrors) and what its socket had to drop
# because iperf3 did not read fast enough (RcvbufErrors). The namespaces are new, so the
# counters (`nstat -a -s`: absolute values, nstat's history file left alone) count this
# test and a few pings only.
#
#   BENCH=path/to/shared/bench   the testbed (default: ../shared/bench from the repo root)
#   WEFT=path/to/weft            as for run.sh's weft backend
# Root only; needs iperf3, jq and nstat (iproute2).
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "bench-udp-drops.sh: run as root (it creates network namespaces)" >&2; exit 1; }
BENCH=${BENCH:-$(cd "$(dirname "$0")/.." && pwd)/../shared/bench}
[ -f "$BENCH/testbed.sh" ] || { echo "no testbed at $BENCH (set BENCH=...)" >&2; exit 1; }
# shellcheck source=/dev/null
. "$BENCH/testbed.sh"
b=${1:?usage: bench-udp-drops.sh BACKEND [SECONDS]}
t=${2:-5}
[ -x "$BENCH/backends/$b.sh" ] || { echo "no backend $b in $BENCH/backends" >&2; exit 2; }
cleanup() {
  tb_kill _iperf3 || true
  "$BENCH/backends/$b.sh" down >/dev/null 2>&1 || true
  tb_down
}
trap cleanup EXIT
tb_up 2
mkdir -p "$TB_STATE/logs"
"$BENCH/backends/$b.sh" up >"$TB_STATE/logs/_up.log" 2>&1 || { tail "$TB_STATE/logs/_up.log" >&2; exit 1; }
for _ in $(seq 30); do tb_x p1 ping -c1 -W1 10.40.2.2 >/dev/null 2>&1 && break; done
tb_spawn _iperf3 p2 iperf3 -s
sleep 0.5
tb_x p1 iperf3 -c 10.40.2.2 -u -l 64 -b 0 -t "$t" -J |
  jq -r --argjson t "$t" '.end | "iperf3: sent \(.sum_sent.packets), read by the server \(.sum_received.packets - .sum_received.lost_packets) (\((.sum_received.packets - .sum_received.lost_packets) / $t / 1000 | floor) kpps)"'
count() { tb_x "$1" nstat -a -s 2>/dev/null | awk -v k="$2" '$1 == k {print $2}' | grep . || echo 0; }
sent=$(count p1 UdpOutDatagrams)
read_=$(count p2 UdpInDatagrams)
full=$(count p2 UdpRcvbufErrors)
arrived=$((read_ + full))
echo "pod p1 sent $sent datagrams; $arrived reached pod p2's UDP layer ($((arrived / t / 1000)) kpps, $((arrived * 100 / (sent > 0 ? sent : 1))) %)"
echo "pod p2's socket dropped $full of them (receive buffer full: iperf3 did not read them in time)"
for n in h1 h2; do
  echo "host $n: UDP in $(count "$n" UdpInDatagrams), receive buffer drops $(count "$n" UdpRcvbufErrors)"
done
