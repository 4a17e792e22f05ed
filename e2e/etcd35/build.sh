#!/usr/bin/env bash
# Builds etcd v3.5's server from the module proxy into a cache directory and prints the binary's path on
# the last line of stdout:
#
#   ETCD=$(e2e/etcd35/build.sh | tail -n1)
#
# Cache: ${TOPOHA_ETCD35_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/topoha/etcd-v3.5}/etcd, rebuilt only when
# its stamp (go.sum and the Go version) changes. A cold build takes about a minute on 2 cores.
# This nested module is the only place that requires etcd 3.5; the topoha module embeds 3.7.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${TOPOHA_ETCD35_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/topoha/etcd-v3.5}
mkdir -p "$cache"
cd "$here"
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0
stamp="$(go env GOVERSION) $(sha256sum go.sum | cut -c1-16)"
if [[ ! -x $cache/etcd || "$(cat "$cache/etcd.stamp" 2>/dev/null)" != "$stamp" ]]; then
	start=$(date +%s)
	go build -o "$cache/etcd" .
	echo "$stamp" > "$cache/etcd.stamp"
	echo "built etcd 3.5 in $(( $(date +%s) - start ))s" >&2
fi
"$cache/etcd" --version | head -1 >&2
echo "$cache/etcd"
