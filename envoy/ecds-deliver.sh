#!/usr/bin/env bash
# Delivers a blob (`aegis build` output) to an Envoy that loads the Aegis
# filter through ECDS from a watched file (envoy/ecds.yaml):
#
#     envoy/ecds-deliver.sh BLOB [DIR]        # prints the resource's version
#
#   1. copies BLOB to DIR/modules/<sha256>.wasm (a temporary name, then a
#      rename: Envoy never reads half a module);
#   2. writes the ECDS resource (a TypedExtensionConfig named `aegis`
#      holding the wasm plugin: that module, FAIL_CLOSED, the trusted key)
#      to a temporary file in DIR/ecds/;
#   3. renames it over DIR/ecds/aegis.yaml, the path Envoy watches. The
#      rename is atomic: Envoy reads either the old resource or the new
#      one, never a partial file.
#
# DIR defaults to out/envoy (what envoy/ecds.yaml names, relative to
# Envoy's working folder). The module path in the resource is DIR/modules/...
# as given: give an absolute DIR when Envoy runs elsewhere.
#
# AEGIS_TRUSTED_KEY: base64 of the public key the filter trusts (the raw
# 32 bytes, as in `trusted_keys`). Default: the public DEMO key of
# envoy/demo-blob.sh, which anyone can sign with: never use it outside a
# demo.
#
# Each module gets its own file named by its hash: Envoy skips a resource
# whose content did not change, so a new module under an old name would
# never load. Old modules may be removed once no resource names them
# (Envoy holds the module it runs in memory).
set -euo pipefail

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
  echo "usage: envoy/ecds-deliver.sh BLOB [DIR]" >&2
  exit 2
fi
blob="$1"
dir="${2:-out/envoy}"
key="${AEGIS_TRUSTED_KEY:-7+V6NitnMhh/86FLWtseen9yZuBStTJZWaQG+HagCcQ=}"
case "$key" in
  *[!A-Za-z0-9+/=]*|"") echo "AEGIS_TRUSTED_KEY: \`$key\` is not base64" >&2; exit 2 ;;
esac
if [ ! -f "$blob" ]; then
  echo "no blob at \`$blob\`" >&2
  exit 2
fi

case "$dir" in
  # The path goes into the resource as a quoted YAML string.
  *'"'*|*'\'*|*$'\n'*) echo "DIR \`$dir\` has a quote, backslash or line break" >&2; exit 2 ;;
esac

mkdir -p "$dir/modules" "$dir/ecds"
hash="$(sha256sum "$blob" | cut -d' ' -f1)"
module="$dir/modules/$hash.wasm"
tmp="$dir/ecds/.aegis.yaml.tmp.$$"
trap 'rm -f "$tmp" "$module.tmp.$$"' EXIT
if [ ! -f "$module" ]; then
  cp "$blob" "$module.tmp.$$"
  mv -f "$module.tmp.$$" "$module"
fi
resource() {
  cat <<EOF
resources:
- "@type": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig
  name: aegis
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: aegis
      root_id: aegis
      # Hold the request headers while the filter waits for the body
      # (Envoy >= 1.35); the filter's own key of the same name agrees.
      allow_on_headers_stop_iteration: true
      # A module that cannot start never waves requests through.
      failure_policy: FAIL_CLOSED
      vm_config:
        vm_id: aegis
        runtime: envoy.wasm.runtime.v8
        code:
          local: {filename: "$module"}
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: |
          {
            "trusted_keys": ["$key"],
            "max_body_bytes": 1048576,
            "allow_on_headers_stop_iteration": true
          }
EOF
}
# The version Envoy reports (stat `version_text`, config dump): a hash of
# the resource, so any change of module or configuration shows.
version="$(resource | sha256sum | cut -c1-16)"
{
  echo "version_info: \"$version\""
  resource
} >"$tmp"
mv -f "$tmp" "$dir/ecds/aegis.yaml"
echo "$version"
