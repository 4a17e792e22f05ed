#!/usr/bin/env bash
# Builds the etcd server of one of the versions below (3.5 or 3.6; each its own module, which pins the
# patch release) from the module proxy into a cache directory, and prints the binary's path on the last
# line of stdout:
#
#   ETCD=$(e2e/etcd/build.sh 3.6 | tail -n1)
#
# Cache: ${TOPOHA_ETCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/topoha}/etcd-<version>/etcd, rebuilt only
# when its stamp (go.sum and the Go version) changes. A cold build takes about a minute on 2 cores.
# These nested modules are the only places that require etcd 3.5 and 3.6; the topoha module embeds 3.7.
set -euo pipefail
version=${1:?usage: build.sh 3.5|3.6}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ ! -f $here/$version/go.mod ]]; then
	echo "build.sh: no module for etcd $version in $here (have: $(cd "$here" && ls -d */ | tr -d / | tr '\n' ' '))" >&2
	exit 2
fi
cache=${TOPOHA_ETCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/topoha}/etcd-$version
mkdir -p "$cache"
cd "$here/$version"
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0
stamp="$(go env GOVERSION) $(sha256sum go.sum | cut -c1-16)"
if [[ ! -x $cache/etcd || "$(cat "$cache/etcd.stamp" 2>/dev/null)" != "$stamp" ]]; then
	start=$(date +%s)
	go build -o "$cache/etcd" .
	echo "$stamp" > "$cache/etcd.stamp"
	echo "built etcd $version in $(( $(date +%s) - start ))s" >&2
fi
"$cache/etcd" --version | head -1 >&2
echo "$cache/etcd"
