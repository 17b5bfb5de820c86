#!/usr/bin/env bash
# Installs the real agent SDKs the client suite (e2e/clients) runs through
# the gateway, into two virtualenvs under the repository's gitignored
# .venv/, each from its pinned requirements file:
#
#   .venv/clients-mcp2   e2e/clients/requirements-mcp2.txt  (stripe, openai, mcp 2.x)
#   .venv/clients-mcp1   e2e/clients/requirements-mcp1.txt  (mcp 1.x)
#
# Prints the two virtualenv paths on stdout, one a line (mcp2 first);
# everything else goes to stderr. Idempotent: a virtualenv whose stamp file
# holds the SHA-256 of its requirements file (and the Python it was made
# with) is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '%s\n' "$*" >&2; }

python="${PYTHON:-python3}"
pyversion="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"

install_venv() {
  local name="$1" requirements="$2"
  local venv=".venv/$name"
  local stamp="$venv/.aegis-requirements.sha256"
  local want
  want="$(sha256sum "$requirements" | cut -d' ' -f1) python-$pyversion"

  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    printf '%s\n' "$venv"
    return 0
  fi

  log "==> $venv: pip install -r $requirements"
  rm -rf "$venv"
  mkdir -p .venv
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$requirements" >&2
  printf '%s\n' "$want" >"$stamp"
  printf '%s\n' "$venv"
}

install_venv clients-mcp2 e2e/clients/requirements-mcp2.txt
install_venv clients-mcp1 e2e/clients/requirements-mcp1.txt
