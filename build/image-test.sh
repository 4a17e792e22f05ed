#!/usr/bin/env bash
# Checks the image make image wrote, from its archive, the way a user would run it (make image-test; CI runs
# it after make image):
#  - its configuration: a non-root numeric user, the OCI labels naming this commit, the entrypoint;
#  - inside it (buildah run, chroot isolation): `topoha version` names this commit, vtctldclient and
#    vtctlclient start, there is no shell, and `topoha demo` passes: the whole system on embedded etcd.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
archive=${1:-bin/topoha-image.tar}
[[ -f $archive ]] || {
	echo "build/image-test.sh: no image archive at $archive: run make image first" >&2
	exit 2
}
revision=$(build/version.sh revision)

# shellcheck source=build/buildah.sh
source build/buildah.sh
failed=0
fail() {
	echo "FAIL: $*" >&2
	failed=1
}

ctr=$(b from --quiet "oci-archive:$archive")
expect_config() { # what format want
	local got
	got=$(b inspect --type container --format "$2" "$ctr")
	[[ $got == "$3" ]] && echo "ok: $1 is $got" || fail "$1 is '$got', want '$3'"
}
expect_config user '{{.OCIv1.Config.User}}' 65532:65532
expect_config revision '{{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}' "$revision"
expect_config version '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}' "$(build/version.sh version)"
expect_config source '{{index .OCIv1.Config.Labels "org.opencontainers.image.source"}}' https://github.com/topoha/topoha
expect_config entrypoint '{{.OCIv1.Config.Entrypoint}}' '[/usr/local/bin/topoha]'

in_image() { b run --isolation chroot "$ctr" -- "$@"; }
if out=$(in_image topoha version 2>&1) && grep -qx "revision:   $revision" <<<"$out"; then
	echo "ok: topoha version names $revision"
else
	fail "topoha version in the image does not name $revision: $out"
fi
for client in vtctldclient vtctlclient; do
	if out=$(in_image "$client" --help 2>&1) && [[ -n $out ]]; then
		echo "ok: $client runs"
	else
		fail "$client --help in the image: $out"
	fi
done
if in_image /bin/sh -c true >/dev/null 2>&1; then
	fail "the image has a shell (/bin/sh)"
else
	echo "ok: no shell"
fi
start=$(date +%s)
if in_image topoha demo >"$work/demo.log" 2>&1; then
	echo "ok: topoha demo passed in the image in $(($(date +%s) - start))s"
else
	fail "topoha demo in the image:"
	cat "$work/demo.log" >&2
fi
exit $failed
