#!/usr/bin/env bash
# Writes the release binaries (make release):
#
#   bin/release/topoha-<version>-linux-amd64
#   bin/release/topoha-<version>-linux-arm64
#   bin/release/SHA256SUMS                       sha256sum -c SHA256SUMS checks them where they are copied
#
# Static (no cgo, no libc), stamped like make build (build/version.sh), -trimpath so they do not name this
# machine's paths; with SOURCE_DATE_EPOCH set, the same commit, branch and Go version build the same bytes.
# It then checks what it built: each binary's recorded GOOS, GOARCH and CGO_ENABLED, and that the one this
# machine can run names the commit. docs/operations.md says how to install them. RELEASE_DIR names another
# output directory; only the files above are replaced in it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${RELEASE_DIR:-bin/release}
platforms=(linux/amd64 linux/arm64)

version=$(build/version.sh version)
revision=$(build/version.sh revision)
ldflags=$(TOPOHA_BUILD_DATE=$(build/version.sh build-date) build/version.sh ldflags)
if [[ $version == *-dirty ]]; then
	echo "build/release.sh: WARNING: the work tree has uncommitted changes ($version): not a release to ship" >&2
fi
mkdir -p "$out"
rm -f "$out"/topoha-*-linux-* "$out/SHA256SUMS"
names=()
for platform in "${platforms[@]}"; do
	os=${platform%/*} arch=${platform#*/}
	name=topoha-$version-$os-$arch
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -buildvcs=false -ldflags "-s -w $ldflags" -o "$out/$name" ./cmd/topoha
	# go version -m reads the build settings Go recorded in a binary, whatever its architecture.
	settings=$(go version -m "$out/$name")
	for want in "GOOS=$os" "GOARCH=$arch" "CGO_ENABLED=0"; do
		if ! grep -q "build[[:space:]]$want\$" <<<"$settings"; then
			echo "build/release.sh: $name was not built with $want:" >&2
			echo "$settings" >&2
			exit 1
		fi
	done
	names+=("$name")
done
(cd "$out" && sha256sum "${names[@]}" >SHA256SUMS)

native=topoha-$version-$(go env GOHOSTOS)-$(go env GOHOSTARCH)
if [[ ! -x $out/$native ]]; then
	echo "build/release.sh: no binary for this machine ($native): not run" >&2
elif ! "$out/$native" version | grep -qx "revision:   $revision"; then
	echo "build/release.sh: $native does not name revision $revision:" >&2
	"$out/$native" version >&2
	exit 1
fi
ls -l "$out" >&2
echo "$out"
