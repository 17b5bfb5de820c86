#!/usr/bin/env bash
# Validates every shipped Envoy config as it is, with the pinned Envoy:
#   envoy --mode validate -c envoy/<name>.yaml
# Validation loads the wasm module and runs the filter's configure step, so
# the blob the configs name (out/envoy/filter.wasm) must exist and be
# signed by a key in their `trusted_keys`: envoy/demo-blob.sh builds it.
# envoy/ecds.yaml needs the ECDS resource it watches to exist
# (envoy/ecds-deliver.sh writes it); validation does not read the
# resource, so its filter is not configured here (the e2e tests validate
# it inlined and run it).
set -euo pipefail
cd "$(dirname "$0")/.."

envoy="$(scripts/install-envoy.sh)"
envoy/demo-blob.sh >/dev/null
envoy/ecds-deliver.sh out/envoy/filter.wasm >/dev/null

status=0
for config in envoy/*.yaml; do
  if log="$("$envoy" --mode validate --disable-hot-restart -l info -c "$config" 2>&1)"; then
    echo "ok      $config"
  else
    echo "FAILED  $config"
    printf '%s\n' "$log" | grep -E 'critical|error|wasm log' >&2 || printf '%s\n' "$log" >&2
    status=1
  fi
done
exit "$status"
