#!/usr/bin/env bash
# Checks the image make image wrote, from its archive, the way a user would run it (make image-test; CI runs
# it after make image):
#  - its configuration: a non-root numeric user, the OCI labels naming this commit, the entrypoint;
#  - its files: exactly the three binaries, /etc/passwd, /etc/group and /tmp (no shell, nothing else);
#  - inside it (buildah run, chroot isolation, as the image's user): `topoha version` names this commit,
#    vtctldclient and vtctlclient run (and can write their glog files), and `topoha demo` passes: the whole
#    system on embedded etcd.
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
	if [[ $got == "$3" ]]; then echo "ok: $1 is $got"; else fail "$1 is '$got', want '$3'"; fi
}
expect_config user '{{.OCIv1.Config.User}}' 65532:65532
expect_config revision '{{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}' "$revision"
expect_config version '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}' "$(build/version.sh version)"
expect_config source '{{index .OCIv1.Config.Labels "org.opencontainers.image.source"}}' https://github.com/topoha/topoha
expect_config entrypoint '{{.OCIv1.Config.Entrypoint}}' '[/usr/local/bin/topoha]'
expect_config arguments '{{.OCIv1.Config.Cmd}}' '[--help]'

# Every file of the image, with its mode and owner: no shell, no libc, nothing left over.
rootfs=$(b mount "$ctr")
files=$(cd "$rootfs" && find . -mindepth 1 -printf '%M %u:%g %p\n' | LC_ALL=C sort -k3)
b umount "$ctr" >/dev/null
want='drwxr-xr-x root:root ./etc
-rw-r--r-- root:root ./etc/group
-rw-r--r-- root:root ./etc/passwd
drwxrwxrwt root:root ./tmp
drwxr-xr-x root:root ./usr
drwxr-xr-x root:root ./usr/local
drwxr-xr-x root:root ./usr/local/bin
-rwxr-xr-x root:root ./usr/local/bin/topoha
-rwxr-xr-x root:root ./usr/local/bin/vtctlclient
-rwxr-xr-x root:root ./usr/local/bin/vtctldclient'
if [[ $files == "$want" ]]; then
	echo "ok: the image holds only the three binaries, /etc/passwd, /etc/group and /tmp"
else
	fail "the image's files are not what build/image.sh puts there:"$'\n'"$(diff <(echo "$want") <(echo "$files"))"
fi

in_image() { b run --isolation chroot "$ctr" -- "$@"; }
if out=$(in_image /usr/local/bin/topoha version 2>&1) && grep -qx "revision:   $revision" <<<"$out"; then
	echo "ok: topoha version names $revision"
else
	fail "topoha version in the image does not name $revision: $out"
fi
# No vtctld answers: each client must fail on the connection, not on its own start (a glog file it cannot
# write, a missing library).
for client in vtctldclient vtctlclient; do
	out=$(in_image "/usr/local/bin/$client" --server 127.0.0.1:1 --action_timeout 2s GetKeyspaces 2>&1) && status=0 || status=$?
	if [[ $status -ne 0 && $out == *127.0.0.1:1* && $out != *"cannot create log"* ]]; then
		echo "ok: $client runs (and fails to reach a vtctld that is not there, as it should)"
	else
		fail "$client in the image: exit $status: $out"
	fi
done
start=$(date +%s)
if in_image /usr/local/bin/topoha demo >"$work/demo.log" 2>&1; then
	echo "ok: topoha demo passed in the image in $(($(date +%s) - start))s"
else
	fail "topoha demo in the image:"
	cat "$work/demo.log" >&2
fi
exit $failed
