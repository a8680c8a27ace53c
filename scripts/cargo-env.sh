# Sourced by scripts/test.sh and examples/demo.sh. Under sudo, PATH usually lacks the
# invoking user's ~/.cargo/bin; find cargo there (or in $HOME), or stop with a clear message.
if ! command -v cargo >/dev/null 2>&1; then
  for home in "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)}" "${HOME:-}"; do
    if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
      export PATH="$home/.cargo/bin:$PATH"
      export CARGO_HOME="${CARGO_HOME:-$home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
      break
    fi
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "$(basename "$0"): cargo not found. Install Rust 1.85 or newer with rustup" \
       "(https://rustup.rs), then run this again." >&2
  exit 1
fi
