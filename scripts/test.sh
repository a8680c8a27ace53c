#!/usr/bin/env bash
# The project's test command (README, CI): installs the few Debian packages the tests
# use, then runs rustfmt, clippy and every test, the end-to-end tests included.
# Needs root: the end-to-end tests build hosts out of network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the end-to-end tests need root (network namespaces); run: sudo scripts/test.sh" >&2
  exit 1
fi

# tests/operator.rs: python3-jsonschema validates `weft report` against its schema,
# python3-prometheus-client parses /metrics, chromium renders the status page headless.
# tests/fastdp.rs: the router drives nftables through `nft`.
packages=(iproute2 iputils-ping tcpdump iperf3 procps iptables nftables containernetworking-plugins
  python3-jsonschema python3-prometheus-client chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# shellcheck source=scripts/cargo-env.sh
. scripts/cargo-env.sh
for c in fmt clippy; do
  if ! cargo "$c" --version >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo $c is missing; install it with: rustup component add rustfmt clippy" >&2
    exit 1
  fi
done

echo "==> cargo fmt --all -- --check"
cargo fmt --all -- --check
echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test --workspace"
cargo test --workspace
