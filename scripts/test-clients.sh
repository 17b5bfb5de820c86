#!/usr/bin/env bash
# The real-client suite: real agent SDKs (stripe, openai, the MCP Python
# SDK 1.x and 2.x) through a real Envoy with the Aegis filter blob
# (envoy/agent-gateway.yaml) to local upstreams on loopback, asserting what
# the SDK's user sees. See e2e/clients/harness.py for the setup.
#
# Runs pytest twice: in .venv/clients-mcp2 (every test: stripe, openai,
# mcp 2.x) and in .venv/clients-mcp1 (the MCP tests, with mcp 1.x).
# Extra arguments go to both pytest runs (e.g. `-k stripe -x`).
# Exits non-zero when either run fails.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# One bound for a whole pytest run, on top of the per-test timeout
# (e2e/clients/pytest.ini): a run that hangs ends here.
run_timeout="${AEGIS_CLIENTS_RUN_TIMEOUT:-600}"

step "client SDKs (pinned) into .venv/clients-mcp2 and .venv/clients-mcp1"
mapfile -t venvs < <(scripts/install-clients.sh)
mcp2="${venvs[0]}"
mcp1="${venvs[1]}"

step "aegis (debug build)"
cargo build --quiet --locked -p aegis-compiler --bin aegis
export AEGIS_BIN="$PWD/target/debug/aegis"

step "Envoy"
AEGIS_ENVOY="$(scripts/install-envoy.sh)"
export AEGIS_ENVOY

# No bytecode caches or pytest cache in the work tree.
export PYTHONDONTWRITEBYTECODE=1

status=0
for suite in mcp2 mcp1; do
  if [ "$suite" = mcp2 ]; then venv="$mcp2"; else venv="$mcp1"; fi
  step "pytest e2e/clients in $venv (AEGIS_CLIENTS_SUITE=$suite)"
  if ! AEGIS_CLIENTS_SUITE="$suite" timeout --kill-after=10 "$run_timeout" \
    "$venv/bin/python" -m pytest -q e2e/clients "$@"; then
    echo "client suite ($suite): FAILED" >&2
    status=1
  fi
done
exit "$status"
