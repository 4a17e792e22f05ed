#!/usr/bin/env bash
# Builds the Vitess binaries topoha's end-to-end tests run (vtctld, vtctldclient, the legacy
# vtctlclient) and the fake tablet, into a cache directory, and prints that bin directory on the
# last line of stdout:
#
#   BIN=$(e2e/vitess/build.sh | tail -n1)
#   BIN=$(e2e/vitess/build.sh vtctldclient vtctlclient | tail -n1)   # only these (make image)
#
# Cache: ${TOPOHA_VITESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/topoha/vitess-v0.22.1}/bin. A binary
# is rebuilt only when its stamp (Vitess version, Go version, and for faketablet a hash of its
# sources and of go.mod/go.sum) differs, so a warm run takes a second. A cold build needs only
# the Go module proxy and takes about 5 minutes on 2 cores (vtctldclient 189 s, vtctld 93 s,
# vtctlclient and faketablet 3 s each).
#
# Why this shape:
#  - The binaries are built inside this nested module (it requires vitess.io/vitess v0.22.1 and
#    lists the commands as `tool`s), because `go install vitess.io/vitess/go/cmd/...@v0.22.1` fails:
#    it asks the proxy for vitess.io/vitess/@v/list (to check for a deprecation), which the proxy
#    here answers 403. Inside a module the version comes from go.mod/go.sum and no list is needed.
#  - -tags goexperiment.swissmap: Vitess v0.22 has a file (go/hack/ensure_swiss_map.go) that fails
#    to compile unless that build tag is set. Go 1.24 set it by default; from Go 1.26 on Swiss maps
#    are the only map implementation and the experiment tag no longer exists, so we set it by hand.
#  - The main topoha module never imports Vitess: only this module does.
set -euo pipefail

VITESS_VERSION=v0.22.1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${TOPOHA_VITESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/topoha/vitess-$VITESS_VERSION}
bin=$cache/bin
mkdir -p "$bin"

cd "$here"
# Keep the caller's GOFLAGS from changing what gets built (e.g. -mod=vendor, -race); keep -trimpath
# so the binaries do not depend on where the module cache is. No cgo: static binaries (make image
# puts vtctldclient and vtctlclient in an image with no libc), and the cold build is a quarter
# faster. -s -w leaves out the symbol table and DWARF: half the size, and stack traces still name
# every function.
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0

gover=$(go env GOVERSION)
fake_hash=$( (cat go.mod go.sum; find faketablet -type f -name '*.go' | LC_ALL=C sort | xargs cat) | sha256sum | cut -c1-16)

start=$(date +%s)
built=()
build() { # name package stamp
	local name=$1 pkg=$2 stamp=$3
	if [[ -x $bin/$name && -f $bin/$name.stamp && $(cat "$bin/$name.stamp") == "$stamp" ]]; then
		return
	fi
	local t0
	t0=$(date +%s)
	echo "building $name ($pkg)..." >&2
	go build -tags goexperiment.swissmap -ldflags="-s -w" -o "$bin/$name.tmp" "$pkg"
	mv "$bin/$name.tmp" "$bin/$name"
	echo "$stamp" >"$bin/$name.stamp"
	echo "built $name in $(($(date +%s) - t0))s" >&2
	built+=("$name")
}

wanted=("$@")
[[ ${#wanted[@]} -gt 0 ]] || wanted=(vtctldclient vtctld vtctlclient faketablet)
for name in "${wanted[@]}"; do
	case $name in
	vtctldclient | vtctld | vtctlclient) build "$name" "vitess.io/vitess/go/cmd/$name" "vitess $VITESS_VERSION $gover stripped" ;;
	faketablet) build faketablet ./faketablet "vitess $VITESS_VERSION $gover stripped faketablet $fake_hash" ;;
	*)
		echo "e2e/vitess/build.sh: unknown binary $name: want vtctldclient, vtctld, vtctlclient or faketablet" >&2
		exit 2
		;;
	esac
done

echo "build wall time: $(($(date +%s) - start))s (built: ${built[*]:-nothing, all up to date})" >&2
echo "$bin"
