# Sourced by scripts/test.sh and examples/demo.sh: `need_packages PKG...` installs the
# Debian packages among PKG that are missing (apt-get, as root), or stops at once with
# the exact command to run where apt-get is not there.
need_packages() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$(basename "$0"): missing packages: ${missing[*]}" >&2
    echo "this script installs them with apt-get on Debian 12; elsewhere install their equivalents, then run it again" >&2
    exit 1
  fi
  echo "==> apt-get install ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The C toolchain: rustc links through `cc`, and the tun-tap crate's build script
# compiles C. A fresh Debian 12 with rustup has neither gcc nor the C library headers.
BUILD_PACKAGES=(gcc libc6-dev)

# Under `sudo`, files that cargo writes as root into the invoking user's target/ and
# cargo home are given back to that user when the script ends, so that a later
# `cargo build` as the user still works.
give_back_to_sudo_user() {
  [ -n "${SUDO_UID:-}" ] && [ "${SUDO_UID}" != 0 ] || return 0
  local d
  for d in target "${CARGO_HOME:-}"; do
    [ -n "$d" ] && [ -d "$d" ] || continue
    # Only what lies in a directory the user owns (their checkout, their cargo home).
    [ "$(stat -c %u "$(dirname "$(realpath "$d")")")" = "$SUDO_UID" ] || continue
    chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$d" 2>/dev/null || true
  done
}
