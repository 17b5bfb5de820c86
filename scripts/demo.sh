#!/usr/bin/env bash
# The main job, end to end: build the filter and `aegis`, compile and sign
# the finance policies into one .wasm, start a real Envoy (pinned, from
# PyPI, in .venv/) with it in front of an echo upstream, send the seed
# scenarios as an agent would, and print each decision.
#
# Uses 127.0.0.1:10000 (Envoy listener), :9901 (Envoy admin), :8080
# (upstream). Everything it writes goes to out/.
set -euo pipefail
cd "$(dirname "$0")/.."

out=out/envoy
mkdir -p "$out"
scripts/toolchain.sh
envoy="$(scripts/install-envoy.sh)"

echo "==> aegis test policies/ (every recorded case, native engine)"
cargo build --quiet --release --locked -p aegis-compiler --bin aegis
aegis=target/release/aegis
"$aegis" test policies/ | tail -1

echo "==> identity: an issuer key and an Identity document for the demo"
rm -f "$out/issuer.key" "$out/issuer.pub"
"$aegis" keygen --out "$out/issuer" >/dev/null
cat > "$out/identity.yaml" <<'YAML'
kind: Identity
issuer: https://tokens.demo.example
audience: aegis-demo
keys:
  - kid: demo-issuer
    public_key_file: issuer.pub
YAML

echo "==> aegis build policies/finance -> $out/filter.wasm (signed with the demo key envoy/*.yaml trust)"
AEGIS_BIN=target/release/aegis envoy/demo-blob.sh policies/finance "$out/identity.yaml" >/dev/null
"$aegis" inspect "$out/filter.wasm" | sed 's/^/    /'

echo "==> starting the echo upstream and Envoy (envoy/sidecar.yaml)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
python3 scripts/echo-upstream.py 8080 2> "$out/upstream.log" &
pids+=($!)
"$envoy" -c envoy/sidecar.yaml --disable-hot-restart -l warning --file-flush-interval-msec 100 \
  > "$out/access.log" 2> "$out/envoy.log" &
pids+=($!)
for _ in $(seq 1 100); do
  if curl -fsS http://127.0.0.1:9901/ready >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS http://127.0.0.1:9901/ready >/dev/null || { echo "envoy did not start; see $out/envoy.log"; exit 1; }

token() {
  "$aegis" token issue --key "$out/issuer.key" --kid demo-issuer \
    --issuer https://tokens.demo.example --audience aegis-demo --agent "$1" --ttl 10m
}
seed="$(token finance-agent)"
payments="$(token payments-agent)"

play() { # name token method path body
  local name="$1" tok="$2" method="$3" path="$4" body="$5"
  local args=(-s -o "$out/reply.txt" -D "$out/headers.txt" -w '%{http_code}' -X "$method"
    -H "host: api.stripe.com" -H "content-type: application/x-www-form-urlencoded")
  [ -n "$tok" ] && args+=(-H "authorization: Bearer $tok")
  [ -n "$body" ] && args+=(--data "$body")
  local status
  status="$(curl "${args[@]}" "http://127.0.0.1:10000$path")"
  local decision
  decision="$(grep -i '^x-aegis-decision:' "$out/headers.txt" | tr -d '\r' | cut -d' ' -f2 || true)"
  printf '\n%s\n  %s %s  %s\n  -> HTTP %s %s\n     %s\n' "$name" "$method" "$path" "$body" "$status" \
    "${decision:-(forwarded to the upstream)}" "$(head -c 300 "$out/reply.txt")"
}

echo "==> the seed scenarios through Envoy"
play "small payment is allowed" "$seed" POST /v1/payment_intents "amount=1200&currency=usd"
play "payment above 5000 needs approval" "$seed" POST /v1/payment_intents "amount=7500&currency=usd"
play "refunds are not in the policy" "$seed" POST /v1/refunds "amount=10&charge=ch_1"
play "no token" "" POST /v1/payment_intents "amount=10&currency=usd"
play "payments agent: currency outside the allowlist" "$payments" POST /v1/payment_intents "amount=100&currency=btc&description=coins"
play "payments agent: a card number in the description" "$payments" POST /v1/payment_intents "amount=100&currency=usd&description=card+4111+1111+1111+1111"
play "payments agent: read a customer" "$payments" GET /v1/customers/cus_123 ""

sleep 0.3
echo
echo "==> access log (decision fields from filter state): $out/access.log"
tail -n 7 "$out/access.log" | cut -c1-240
echo "==> metrics: http://127.0.0.1:9901/stats/prometheus"
curl -s http://127.0.0.1:9901/stats/prometheus | grep '^aegis_decision_total' | head -10
