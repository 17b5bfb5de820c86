#!/usr/bin/env bash
# The main job on the example policies: check them, compile the finance
# policy into a signed bundle, verify the signature, and evaluate the
# recorded finance requests against the bundle, printing each decision.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip1 >/dev/null 2>&1 || true

cargo build --quiet --release --locked -p aegis-compiler --bin aegis
aegis=target/release/aegis
out=out
mkdir -p "$out"

echo "==> aegis check policies/*"
for d in policies/*/; do
  "$aegis" check "$d"
done

echo "==> aegis keygen"
rm -f "$out/demo.key" "$out/demo.pub"
"$aegis" keygen --out "$out/demo"

echo "==> aegis compile policies/finance"
"$aegis" compile policies/finance -o "$out/finance.bundle" --key "$out/demo.key"

echo "==> aegis verify"
"$aegis" verify "$out/finance.bundle" --pubkey "$out/demo.pub"

echo "==> aegis eval (bundle) on policies/finance/finance.cases.yaml"
"$aegis" eval "$out/finance.bundle" --cases policies/finance/finance.cases.yaml

echo "==> aegis test policies/"
"$aegis" test policies/
