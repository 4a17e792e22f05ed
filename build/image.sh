#!/usr/bin/env bash
# Builds topoha's container image (make image) and writes it as an OCI archive:
#
#   bin/topoha-image.tar   image topoha:<version>, for skopeo or podman to push (docs/operations.md)
#
# What is in it, and why (docs/operations.md, "The container image"):
#  - /usr/local/bin/topoha, stamped like make build (build/version.sh);
#  - /usr/local/bin/vtctldclient and vtctlclient from Vitess v0.22.1, the versions the e2e suite runs
#    (e2e/vitess/build.sh builds them into its cache without cgo, so they are static). promote_command and
#    switchover_command run them inside the controller's container;
#  - /etc/passwd and /etc/group naming the user topoha (65532), and an empty /tmp (mode 1777): the Vitess
#    clients write glog files there at every run, and `topoha demo` its etcd data;
#  - no shell and no libc: FROM scratch, every binary static. Hooks that need a shell need another image;
#  - user 65532:65532, not root; OCI labels version, revision, source, created;
#  - entrypoint topoha, default arguments --help: `run` needs --config and --dc, which the deployment gives;
#  - the architecture of the machine that builds it (GOARCH of go env).
#
# It needs buildah (Debian's, 1.28 here), run as root, and no daemon and no registry: storage is vfs in a
# directory of its own that is removed at the end (build/buildah.sh). IMAGE_ARCHIVE names another output.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${IMAGE_ARCHIVE:-bin/topoha-image.tar}
command -v buildah >/dev/null || {
	echo "build/image.sh: buildah is not installed: apt-get install buildah (Debian 12 has 1.28)" >&2
	exit 2
}

start=$(date +%s)
version=$(build/version.sh version)
revision=$(build/version.sh revision)
created=$(build/version.sh build-date)
ldflags=$(TOPOHA_BUILD_DATE=$created build/version.sh ldflags)

vitess_start=$(date +%s)
vitess_bin=$(bash e2e/vitess/build.sh vtctldclient vtctlclient | tail -n1)
vitess_took=$(($(date +%s) - vitess_start))

# shellcheck source=build/buildah.sh
source build/buildah.sh

mkdir -p "$work/rootfs/usr/local/bin" "$work/rootfs/etc" "$work/rootfs/tmp"
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w $ldflags" -o "$work/rootfs/usr/local/bin/topoha" ./cmd/topoha
cp "$vitess_bin/vtctldclient" "$vitess_bin/vtctlclient" "$work/rootfs/usr/local/bin/"
printf 'root:x:0:0:root:/:/sbin/nologin\ntopoha:x:65532:65532:topoha:/tmp:/sbin/nologin\n' >"$work/rootfs/etc/passwd"
printf 'root:x:0:\ntopoha:x:65532:\n' >"$work/rootfs/etc/group"
chmod 0755 "$work/rootfs/usr/local/bin/"*
chmod 0644 "$work/rootfs/etc/passwd" "$work/rootfs/etc/group"
chmod 1777 "$work/rootfs/tmp"

ctr=$(b from --quiet scratch)
b copy --quiet "$ctr" "$work/rootfs" / >/dev/null
b config \
	--user 65532:65532 \
	--workingdir /tmp \
	--env PATH=/usr/local/bin \
	--env HOME=/tmp \
	--entrypoint '["/usr/local/bin/topoha"]' \
	--cmd '["--help"]' \
	--port 9464/tcp \
	--label org.opencontainers.image.title=topoha \
	--label "org.opencontainers.image.description=Keeps a two-datacenter Vitess topo alive: etcd mirror, health, failover" \
	--label "org.opencontainers.image.version=$version" \
	--label "org.opencontainers.image.revision=$revision" \
	--label "org.opencontainers.image.created=$created" \
	--label org.opencontainers.image.source=https://github.com/topoha/topoha \
	--label com.github.topoha.vitess-version=v0.22.1 \
	"$ctr"
epoch=$(date -u -d "$created" +%s)
b commit --quiet --format oci --timestamp "$epoch" "$ctr" "topoha:$version" >/dev/null
mkdir -p "$(dirname "$out")"
rm -f "$out"
b push --quiet "topoha:$version" "oci-archive:$out:topoha:$version"

echo "image topoha:$version ($revision) in $out: archive $(($(stat -c %s "$out") / 1000000)) MB, $(($(du -sb "$work/rootfs" | cut -f1) / 1000000)) MB unpacked;" \
	"built in $(($(date +%s) - start))s (Vitess clients ${vitess_took}s)" >&2
echo "$out"
