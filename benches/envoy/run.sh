#!/usr/bin/env bash
# The Envoy load benchmark (benches/envoy/README.md): one Envoy, listeners
# that differ only in their HTTP filter chain, closed-loop capacity and CPU
# per request, then open-loop latency at 50% of bare Envoy's capacity,
# interleaved in rounds. Two sets of workloads: MCP tool calls with the
# agent's JWT (L0 bare / MH Aegis, header identity / MJ Aegis, JWT
# identity) and ledger JSON tool calls with DLP (L0 bare / L1 no-op wasm /
# L2 Aegis / L2B Aegis with budget leases from an `aegis serve` this script
# starts on loopback / L3 native RBAC). Prints a markdown table and writes
# it to target/envoy-bench/results.md.
#
#     benches/envoy/run.sh [--quick] [--workloads all|mcp|ledger] [--jwt-authn]
#                          [--duration S] [--rounds N] [--connections C]
#                          [--warmup S] [--sizes 1024,16384] [--load 0.5]
#                          [--filter-state KEY,KEY] [--probes]
#                          [--token-cache-entries N] [--lease-calls N]
#
# --workloads: mcp, ledger, or all (the default; also "mcp,ledger").
# --jwt-authn: also listener JA for the MCP workloads: Envoy's own
# jwt_authn filter verifying the same token (cache on), no Aegis.
# --filter-state: the Aegis listeners' `filter_state` configuration (the
# filter-state keys they write; "" for none). Default: all nine.
# --token-cache-entries: the Aegis listeners' verified-token cache size
# (0: every token verified, what a cache miss costs). Default: the
# filter's (4096).
# --lease-calls: L2B's `control_plane.lease_calls` (how many calls one
# budget lease covers). Default: 1000 (the filter's default is 10).
# --probes: also run the no-op filter as P0 (no-op, with the callbacks
# Aegis exports), P1 hold, P2 read and P3 calls (closed loop only) and
# report where L2's CPU over L1 goes (ledger workloads).
#
# Environment (flags win): DURATION, ROUNDS, CONNECTIONS, WARMUP, SIZES,
# WORKLOADS. Defaults: 10 s per run, 5 rounds, 32 connections, 3 s warm-up.
# --quick: 1 s per run, 1 round, 0.5 s warm-up (checks that it all works).
#
# Needs 2 CPUs (Envoy on CPU 0; generator and upstream on CPU 1). Installs
# what is missing: Envoy (scripts/install-envoy.sh, into .venv/ or
# $AEGIS_VENV), oha (cargo install, into benches/envoy/.tools/) and nginx
# (apt-get install nginx-light, needs root). Uses only 127.0.0.1, on free
# ports.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '%s\n' "$*" >&2; }

orig_args="$*"
duration="${DURATION:-10}"
rounds="${ROUNDS:-5}"
connections="${CONNECTIONS:-32}"
warmup="${WARMUP:-3}"
sizes="${SIZES:-1024,16384}"
load=0.5
filter_state="-"
probes=""
jwt_authn=""
token_cache=""
lease_calls=1000
workloads="${WORKLOADS:-all}"
quick=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --quick) quick=1; duration=1; rounds=1; warmup=0.5 ;;
    --duration) duration="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --connections) connections="$2"; shift ;;
    --warmup) warmup="$2"; shift ;;
    --sizes) sizes="$2"; shift ;;
    --load) load="$2"; shift ;;
    --filter-state) filter_state="$2"; shift ;;
    --probes) probes="--probes" ;;
    --jwt-authn) jwt_authn="--jwt-authn" ;;
    --token-cache-entries) token_cache="$2"; shift ;;
    --lease-calls) lease_calls="$2"; shift ;;
    --workloads) workloads="$2"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
  shift
done

ledger=""
mcp=""
IFS=, read -ra parts <<<"$workloads"
for part in "${parts[@]}"; do
  case "$part" in
    all) ledger=1; mcp=1 ;;
    ledger) ledger=1 ;;
    mcp) mcp=1 ;;
    *) log "--workloads: unknown set \`$part\` (all, mcp, ledger)"; exit 2 ;;
  esac
done
if [ -z "$ledger$mcp" ]; then
  log "--workloads: give all, mcp or ledger"; exit 2
fi
if [ -n "$probes" ] && [ -z "$ledger" ]; then
  log "--probes splits the ledger workloads' Aegis listener: use it with --workloads ledger or all"; exit 2
fi
if [ -n "$jwt_authn" ] && [ -z "$mcp" ]; then
  log "--jwt-authn adds a listener to the MCP workloads: use it with --workloads mcp or all"; exit 2
fi

if [ "$(nproc)" -lt 2 ]; then
  log "error: needs 2 CPUs (Envoy pinned to CPU 0, load generator and upstream to CPU 1); nproc is $(nproc)"
  exit 1
fi
command -v taskset >/dev/null || { log "error: taskset (util-linux) is missing"; exit 1; }

# --- tools ------------------------------------------------------------------
envoy="$(scripts/install-envoy.sh)"

oha_version=1.16.0
tools="$PWD/benches/envoy/.tools"
oha="$tools/bin/oha"
if ! { [ -x "$oha" ] && "$oha" --version 2>/dev/null | grep -q " $oha_version"; }; then
  log "==> cargo install oha $oha_version into $tools (once; a few minutes)"
  cargo install oha --version "$oha_version" --locked --root "$tools" >&2
fi

if ! nginx="$(command -v nginx)"; then
  if [ -x /usr/sbin/nginx ]; then
    nginx=/usr/sbin/nginx
  else
    log "==> apt-get install nginx-light (the load upstream)"
    if [ "$(id -u)" -ne 0 ]; then
      log "error: nginx is missing and installing it needs root: apt-get install nginx-light"
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >&2 \
      || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >&2; }
    nginx=/usr/sbin/nginx
  fi
fi

# --- the filters and the blobs ----------------------------------------------
work="$PWD/target/envoy-bench"
rm -rf "$work"
mkdir -p "$work"

log "==> building aegis (release; it carries the generic filter)${ledger:+ and the no-op filter}"
cargo build --quiet --release --locked -p aegis-compiler --bin aegis
if [ -n "$ledger" ]; then
  cargo build --quiet --release --locked -p aegis-bench-noop-filter --target wasm32-wasip1
fi
aegis="$PWD/target/release/aegis"
noop="$PWD/target/wasm32-wasip1/release/aegis_bench_noop_filter.wasm"

log "==> aegis keygen: the key that signs the blobs -> $work/bench.pub"
"$aegis" keygen --out "$work/bench" >/dev/null
args=()

if [ -n "$ledger" ]; then
  policy=benches/envoy/policy
  log "==> aegis test $policy"
  "$aegis" test "$policy" >&2
  log "==> aegis build $policy -> $work/aegis.wasm"
  "$aegis" build "$policy" --key "$work/bench.key" -o "$work/aegis.wasm" >&2
  "$aegis" verify "$work/aegis.wasm" --pubkey "$work/bench.pub" >/dev/null
  args+=(--policy "$policy" --aegis-wasm "$work/aegis.wasm" --noop-wasm "$noop")

  # L2B: the same policy with a budget for the ledger agent (far more than
  # any run spends: 10^9 calls) and a cost on the rule its calls hit,
  # linked beside the rest of the bench policy.
  budget_policy="$work/policy-budget"
  cost_usd=0.0001
  daily_usd=100000
  mkdir -p "$budget_policy"
  ln -s "$PWD/$policy/finance" "$PWD/$policy/identity.yaml" "$PWD/$policy/bench.cases.yaml" "$budget_policy/"
  awk -v daily="$daily_usd" -v cost="$cost_usd" '
    { print }
    /^agent: bookkeeping-agent$/ { print "budget: {daily_usd: " daily "}"; a++ }
    /^    actions: \[create_journal_entry\]$/ { print "    cost_usd: " cost; c++ }
    END { if (a != 1 || c != 1) exit 1 }
  ' "$policy/ledger.yaml" >"$budget_policy/ledger.yaml" \
    || { log "error: cannot add the budget to $policy/ledger.yaml (its agent or rule lines changed)"; exit 1; }
  log "==> aegis test $budget_policy"
  "$aegis" test "$budget_policy" >&2
  log "==> aegis build $budget_policy -> $work/aegis-budget.wasm"
  "$aegis" build "$budget_policy" --key "$work/bench.key" -o "$work/aegis-budget.wasm" >&2
  "$aegis" verify "$work/aegis-budget.wasm" --pubkey "$work/bench.pub" >/dev/null

  # The control plane L2B calls: SQLite in a temp dir, on loopback, on the
  # load generator's CPU (Envoy's CPU stays Envoy's), stopped at exit.
  control_dir="$(mktemp -d)"
  control_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  control_db="sqlite://$control_dir/aegis.db"
  log "==> aegis serve on 127.0.0.1:$control_port (store $control_dir, log $work/aegis-serve.log)"
  taskset -c 1 "$aegis" serve --db "$control_db" --listen "127.0.0.1:$control_port" \
    --policies "$budget_policy" 2>"$work/aegis-serve.log" &
  control_pid=$!
  trap 'kill "$control_pid" 2>/dev/null; wait "$control_pid" 2>/dev/null; rm -rf "$control_dir"' EXIT
  for _ in $(seq 1 300); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "http://127.0.0.1:$control_port/readyz" 2>/dev/null; then
      break
    fi
    kill -0 "$control_pid" 2>/dev/null || { log "error: aegis serve exited; see $work/aegis-serve.log"; exit 1; }
    sleep 0.1
  done
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "http://127.0.0.1:$control_port/readyz" 2>/dev/null \
    || { log "error: aegis serve is not ready after 30 s; see $work/aegis-serve.log"; exit 1; }
  "$aegis" admin token --db "$control_db" --role gateway --subject envoy-bench --ttl 12h >"$work/gateway.token"
  args+=(--budget-wasm "$work/aegis-budget.wasm" --control-port "$control_port"
    --control-token "$work/gateway.token" --control-admin-token "$control_dir/aegis.db.admin.token"
    --cost-usd "$cost_usd" --lease-calls "$lease_calls")
fi

if [ -n "$mcp" ]; then
  # The MCP policy twice: as committed (header identity, listener MH), and
  # with a per-agent JWT identity (listener MJ): an issuer key made for
  # this run, the policy and its cases linked beside the identity.
  mcp_policy=benches/envoy/policy-mcp
  jwt_policy="$work/policy-mcp-jwt"
  issuer=https://tokens.acme.internal
  audience=aegis-gateway
  kid=bench-issuer
  mkdir -p "$jwt_policy"
  ln -s "$PWD/$mcp_policy/mcp.yaml" "$PWD/$mcp_policy/mcp.cases.yaml" "$jwt_policy/"
  "$aegis" keygen --out "$work/issuer" >/dev/null
  cp "$work/issuer.pub" "$jwt_policy/issuer.pub"
  {
    echo "# Written by benches/envoy/run.sh: agents authenticate with an EdDSA JWT"
    echo "# from the bench's issuer (a key made for this run), in \`authorization\`."
    echo "kind: Identity"
    echo "issuer: $issuer"
    echo "audience: $audience"
    echo "keys:"
    echo "  - {kid: $kid, public_key_file: issuer.pub}"
  } >"$jwt_policy/identity.yaml"
  for p in "$mcp_policy" "$jwt_policy"; do
    log "==> aegis test $p"
    "$aegis" test "$p" >&2
  done
  log "==> aegis build $mcp_policy -> $work/mcp-header.wasm, $jwt_policy -> $work/mcp-jwt.wasm"
  "$aegis" build "$mcp_policy" --key "$work/bench.key" -o "$work/mcp-header.wasm" >&2
  "$aegis" build "$jwt_policy" --key "$work/bench.key" -o "$work/mcp-jwt.wasm" >&2
  for w in mcp-header mcp-jwt; do
    "$aegis" verify "$work/$w.wasm" --pubkey "$work/bench.pub" >/dev/null
  done
  # The agent's token, valid far longer than any run (loadbench.py checks
  # its expiry against the run's length before it measures).
  "$aegis" token issue --key "$work/issuer.key" --kid "$kid" --issuer "$issuer" \
    --audience "$audience" --agent mcp-agent --ttl 12h >"$work/mcp-agent.jwt"
  args+=(--mcp-policy "$mcp_policy" --mcp-jwt-policy "$jwt_policy"
    --mcp-header-wasm "$work/mcp-header.wasm" --mcp-jwt-wasm "$work/mcp-jwt.wasm"
    --mcp-token "$work/mcp-agent.jwt" --mcp-issuer-pub "$work/issuer.pub")
fi

settings="Command: \`benches/envoy/run.sh${orig_args:+ $orig_args}\`."
python3 benches/envoy/loadbench.py \
  --envoy "$envoy" --oha "$oha" --nginx "$nginx" --aegis "$aegis" \
  --trusted-key "$work/bench.pub" --workdir "$work" --workloads "$workloads" "${args[@]}" \
  --duration "$duration" --rounds "$rounds" --connections "$connections" \
  --warmup "$warmup" --sizes "$sizes" --load "$load" --filter-state "$filter_state" \
  --settings "$settings" ${probes:+"$probes"} ${jwt_authn:+"$jwt_authn"} \
  ${token_cache:+--token-cache-entries "$token_cache"}
