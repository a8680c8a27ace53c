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

# shellcheck source=scripts/deps.sh
. scripts/deps.sh
# The C toolchain (BUILD_PACKAGES), then what the tests run:
# iproute2 (ip, ss), iputils-ping, tcpdump (captures), iperf3, procps (sysctl),
# iptables and nftables (the fast path's guard, masquerade; `nft` checks; the NAT
# namespaces of tests/nat.rs and tests/punch.rs, the UDP drop of tests/tcp_fallback.rs), conntrack (tests/nat.rs
# flushes the NAT's mappings, tests/punch.rs reads them),
# containernetworking-plugins (the reference CNI plugins chained with weft-net),
# python3-jsonschema (tests/operator.rs validates `weft report` against its schema),
# python3-prometheus-client (parses /metrics), chromium (renders the status page);
# for tests/deploy.rs: podman and runc (the container image; runc works with every
# cgroup layout), debootstrap (the image's base, from the Debian mirror), systemd
# (systemd-analyze verify of the unit), python3-venv (for kubernetes-validate, below);
# dnsmasq-base (the DNS server that answers --peers-from-dns in tests/dns_peers.rs; the
# binary only, no system service).
need_packages "${BUILD_PACKAGES[@]}" iproute2 iputils-ping tcpdump iperf3 procps iptables \
  nftables conntrack containernetworking-plugins python3-jsonschema python3-prometheus-client \
  chromium podman runc debootstrap systemd python3-venv dnsmasq-base

# kubernetes-validate (PyPI) checks deploy/kubernetes/weft.yaml against the API schemas
# of several Kubernetes releases, offline; tests/deploy.rs finds it in this venv.
venv=${CARGO_TARGET_DIR:-target}/deploy/venv
kubernetes_validate=1.34.1
if ! "$venv/bin/pip" show kubernetes-validate 2>/dev/null | grep -qx "Version: $kubernetes_validate"; then
  echo "==> pip install kubernetes-validate==$kubernetes_validate into $venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "kubernetes-validate==$kubernetes_validate"
fi

# shellcheck source=scripts/cargo-env.sh
. scripts/cargo-env.sh
trap give_back_to_sudo_user EXIT
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
echo "==> scripts/check-security-tests.sh (every test docs/security.md names exists)"
sh scripts/check-security-tests.sh
echo "==> cargo test --workspace"
cargo test --workspace
