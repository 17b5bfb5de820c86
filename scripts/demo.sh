#!/usr/bin/env bash
# The main job, end to end: build the filter and `aegis`, compile and sign
# the finance policies into one .wasm, start the control plane (`aegis
# serve`, SQLite in a temp dir) and a real Envoy (pinned, from PyPI, in
# .venv/) with the blob in front of an echo upstream, send the seed
# scenarios as an agent would, and print each decision. Then a payment
# that needs a person: the agent gets the approval's id, an approver
# approves it, the retry goes through once; and an agent's daily budget
# running out (429 with retry-after). Exits non-zero on any answer it did
# not expect.
#
# Uses 127.0.0.1:10000 (Envoy listener), :9901 (Envoy admin), :8080
# (upstream), :9000 (aegis serve). Everything it writes goes to out/.
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

# The finance policies, the demo's identity, and the demo's own agent on a
# small budget (scripts/demo-policy/): the blob and the control plane get
# the same policies.
policy=(policies/finance "$out/identity.yaml" scripts/demo-policy)
echo "==> aegis build ${policy[*]} -> $out/filter.wasm (signed with the demo key envoy/*.yaml trust)"
AEGIS_BIN=target/release/aegis envoy/demo-blob.sh "${policy[@]}" >/dev/null
"$aegis" inspect "$out/filter.wasm" | sed 's/^/    /'

pids=()
control_dir="$(mktemp -d)"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$control_dir"
}
trap cleanup EXIT

echo "==> starting the control plane: aegis serve on 127.0.0.1:9000 (SQLite in $control_dir)"
db="sqlite://$control_dir/aegis.db"
serve=(--db "$db" --listen 127.0.0.1:9000)
for p in "${policy[@]}"; do serve+=(--policies "$p"); done
"$aegis" serve "${serve[@]}" 2> "$out/control.log" &
pids+=($!)
for _ in $(seq 1 100); do
  if curl -fsS http://127.0.0.1:9000/readyz >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS http://127.0.0.1:9000/readyz >/dev/null || { echo "aegis serve did not start; see $out/control.log"; exit 1; }
# The filter's service token, and an approver's: the operator's side.
gateway="$("$aegis" admin token --db "$db" --role gateway --subject demo-envoy --ttl 1h)"
export AEGIS_SERVER=http://127.0.0.1:9000
export AEGIS_TOKEN
AEGIS_TOKEN="$("$aegis" admin token --db "$db" --role approver --subject alice --ttl 1h)"

# envoy/sidecar.yaml with the filter calling the control plane: its
# configuration gets `control_plane` (with the gateway token, known only
# now) and the bootstrap a cluster for aegis serve.
python3 - "$gateway" envoy/sidecar.yaml "$out/sidecar-control.yaml" <<'PY'
import json, sys
token, src, dst = sys.argv[1:]
text = open(src).read()
end = '                      "allow_on_headers_stop_iteration": true\n                    }\n'
control = {"cluster": "aegis_control", "token": token, "bundle_poll_ms": 0}
new = ('                      "allow_on_headers_stop_iteration": true,\n'
       f'                      "control_plane": {json.dumps(control)}\n                    }}\n')
cluster = """  - name: aegis_control
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {idle_timeout: 5s}
        explicit_http_config: {http_protocol_options: {}}
    load_assignment:
      cluster_name: aegis_control
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {address: 127.0.0.1, port_value: 9000}
"""
if text.count(end) != 1 or not text.endswith("port_value: 8080}\n"):
    sys.exit(f"{src} changed: cannot add the control plane to it")
open(dst, "w").write(text.replace(end, new) + cluster)
PY

echo "==> starting the echo upstream and Envoy ($out/sidecar-control.yaml: envoy/sidecar.yaml + the control plane)"
python3 scripts/echo-upstream.py 8080 2> "$out/upstream.log" &
pids+=($!)
"$envoy" -c "$out/sidecar-control.yaml" --disable-hot-restart -l warning --file-flush-interval-msec 100 \
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

# Sends one call as an agent would, prints the answer, and stops the demo
# when the status is not the one expected.
play() { # expected-status name token method path body [header...]
  local want="$1" name="$2" tok="$3" method="$4" path="$5" body="$6"
  shift 6
  local args=(-s -o "$out/reply.txt" -D "$out/headers.txt" -w '%{http_code}' -X "$method"
    -H "host: api.stripe.com" -H "content-type: application/x-www-form-urlencoded")
  [ -n "$tok" ] && args+=(-H "authorization: Bearer $tok")
  [ -n "$body" ] && args+=(--data "$body")
  local h
  for h in "$@"; do args+=(-H "$h"); done
  local status
  status="$(curl "${args[@]}" "http://127.0.0.1:10000$path")"
  local decision
  decision="$(header x-aegis-decision)"
  printf '\n%s\n  %s %s  %s%s\n  -> HTTP %s %s\n     %s\n' "$name" "$method" "$path" "$body" \
    "${*:+  ($*)}" "$status" "${decision:-(forwarded to the upstream)}" "$(head -c 300 "$out/reply.txt")"
  if [ "$status" != "$want" ]; then
    echo "demo: unexpected answer: HTTP $status, expected $want" >&2
    exit 1
  fi
}
header() { grep -i "^$1:" "$out/headers.txt" | tr -d '\r' | cut -d' ' -f2- || true; }

echo "==> the seed scenarios through Envoy"
play 200 "small payment is allowed" "$seed" POST /v1/payment_intents "amount=1200&currency=usd"
play 403 "refunds are not in the policy" "$seed" POST /v1/refunds "amount=10&charge=ch_1"
play 403 "no token" "" POST /v1/payment_intents "amount=10&currency=usd"
play 403 "payments agent: currency outside the allowlist" "$payments" POST /v1/payment_intents "amount=100&currency=btc&description=coins"
play 403 "payments agent: a card number in the description" "$payments" POST /v1/payment_intents "amount=100&currency=usd&description=card+4111+1111+1111+1111"
play 200 "payments agent: read a customer" "$payments" GET /v1/customers/cus_123 ""

echo
echo "==> a payment that needs a person: approval through the control plane"
play 403 "payment above 5000 needs approval" "$seed" POST /v1/payment_intents "amount=7500&currency=usd"
approval="$(header x-aegis-approval)"
[ "$(header x-aegis-decision)" = approval_needed ] && [ -n "$approval" ] \
  || { echo "demo: no approval id in the answer" >&2; exit 1; }
echo "  the agent got approval $approval; the operator's queue (aegis approvals list):"
"$aegis" approvals list | sed 's/^/    /'
echo "  alice approves it (aegis approvals approve $approval):"
"$aegis" approvals approve "$approval" --comment "invoice checked" | sed 's/^/    /'
play 200 "the agent retries with the approval" "$seed" POST /v1/payment_intents "amount=7500&currency=usd" \
  "x-aegis-approval: $approval"
play 403 "a second retry: the approval was used" "$seed" POST /v1/payment_intents "amount=7500&currency=usd" \
  "x-aegis-approval: $approval"

echo
echo "==> a daily budget running out (support-agent: 0.03 USD a day, 0.01 USD a lookup)"
support="$(token support-agent)"
for n in 1 2 3; do
  play 200 "support agent: customer lookup $n" "$support" GET /v1/customers/cus_123 ""
done
play 429 "support agent: customer lookup 4, the day's budget is spent" "$support" GET /v1/customers/cus_123 ""
retry="$(header retry-after)"
[ -n "$retry" ] || { echo "demo: no retry-after on the 429" >&2; exit 1; }
echo "  retry-after: $retry s (midnight UTC)"
# The filter reports what its leases spent on its tick (settle_ms, 1 s).
sleep 1.5
echo "  the operator's view (aegis budgets show):"
"$aegis" budgets show | sed 's/^/    /'

sleep 0.3
echo
echo "==> access log (decision fields from filter state): $out/access.log"
tail -n 14 "$out/access.log" | cut -c1-240
echo "==> metrics: http://127.0.0.1:9901/stats/prometheus"
curl -s http://127.0.0.1:9901/stats/prometheus | grep -E '^aegis_(decision|approval)_total' | head -16
