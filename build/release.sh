#!/usr/bin/env bash
# Writes the release binaries (make release):
#
#   bin/release/topoha-<version>-linux-amd64
#   bin/release/topoha-<version>-linux-arm64
#   bin/release/SHA256SUMS                       sha256sum -c SHA256SUMS checks them
#
# Static (no cgo, no libc), stamped like make build (build/version.sh), -trimpath so they do not name this
# machine's paths. With SOURCE_DATE_EPOCH set, the same commit builds the same bytes. It then checks what
# it wrote: the checksums, that each binary was built for its platform without cgo, and that the one this
# machine can run names the commit. docs/operations.md says how to install them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${RELEASE_DIR:-bin/release}
platforms=(linux/amd64 linux/arm64)

version=$(build/version.sh version)
revision=$(build/version.sh revision)
ldflags=$(BUILD_DATE=$(build/version.sh build-date) build/version.sh ldflags)
rm -rf "$out"
mkdir -p "$out"
names=()
for platform in "${platforms[@]}"; do
	os=${platform%/*} arch=${platform#*/}
	name=topoha-$version-$os-$arch
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -buildvcs=false -ldflags "-s -w $ldflags" -o "$out/$name" ./cmd/topoha
	names+=("$name")
done
(cd "$out" && sha256sum "${names[@]}" >SHA256SUMS && sha256sum --quiet -c SHA256SUMS)

for platform in "${platforms[@]}"; do
	os=${platform%/*} arch=${platform#*/}
	# go version -m reads the build settings Go recorded in a binary, whatever its architecture.
	settings=$(go version -m "$out/topoha-$version-$os-$arch")
	for want in "GOOS=$os" "GOARCH=$arch" "CGO_ENABLED=0"; do
		if ! grep -q "build[[:space:]]$want\$" <<<"$settings"; then
			echo "build/release.sh: topoha-$version-$os-$arch was not built with $want:" >&2
			echo "$settings" >&2
			exit 1
		fi
	done
done
native=$out/topoha-$version-$(go env GOHOSTOS)-$(go env GOHOSTARCH)
if [[ -x $native ]] && ! "$native" version | grep -qx "revision:   $revision"; then
	echo "build/release.sh: $native does not name revision $revision:" >&2
	"$native" version >&2
	exit 1
fi
ls -l "$out" >&2
echo "$out"
