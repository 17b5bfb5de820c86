#!/usr/bin/env bash
# Makes the toolchain of rust-toolchain.toml ready, with the wasm32-wasip1
# target the filter builds for: installs the toolchain when it is missing,
# and adds the target when the toolchain is there without it (rustup does
# not add a toolchain file's targets to a toolchain already installed).
# Extra arguments are rustup components to add (e.g. `rustfmt clippy`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup show active-toolchain >/dev/null 2>&1; then
  rustup toolchain install >&2
fi
if [ "$#" -gt 0 ]; then
  rustup component add "$@" >/dev/null
fi
rustup target add wasm32-wasip1 >/dev/null
