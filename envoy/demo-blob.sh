#!/usr/bin/env bash
# Builds the blob the shipped configs load: out/envoy/filter.wasm, the
# example policies given as arguments (default: policies/finance) compiled
# and signed with the DEMO key that envoy/*.yaml trust.
#
# The demo key is derived from a fixed, public text (its Ed25519 seed is
# SHA-256 of it), so everybody can sign with it: it exists only so the
# shipped configs validate and run as they are. For anything real, use
# `aegis keygen`, sign with your key and put your public key in
# `trusted_keys`.
#
#     envoy/demo-blob.sh [POLICY_PATH...]      # prints out/envoy/filter.wasm
#
# It uses the `aegis` named by AEGIS_BIN, else a debug build (the filter
# inside `aegis` is a release build either way, and a debug build shares its
# dependencies with the test suite instead of building them all again with
# LTO).
set -euo pipefail
cd "$(dirname "$0")/.."

out=out/envoy
mkdir -p "$out"

# Same derivation as aegis_e2e::blob::demo_key (e2e/src/blob.rs).
python3 - "$out/demo.key" <<'PY'
import base64, hashlib, os, sys
label = b"aegis envoy demo key: public, never trust it in production"
seed = hashlib.sha256(label).digest()
# PKCS#8 v1 Ed25519 private key (RFC 8410): fixed prefix + 32-byte seed.
der = bytes.fromhex("302e020100300506032b657004220420") + seed
pem = "-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n" % base64.b64encode(der).decode()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write(pem)
PY

if [ "$#" -eq 0 ]; then
  set -- policies/finance
fi
aegis="${AEGIS_BIN:-}"
if [ -z "$aegis" ]; then
  cargo build --quiet --locked -p aegis-compiler --bin aegis >&2
  aegis=target/debug/aegis
fi
"$aegis" build "$@" --key "$out/demo.key" -o "$out/filter.wasm" >&2
echo "$out/filter.wasm"
