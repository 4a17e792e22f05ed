# Sourced by build/image.sh and build/image-test.sh: buildah with storage of its own, in a temporary
# directory removed on exit (vfs: no overlay mounts, no daemon; it works as root in a plain container).
# Defines b (buildah with that storage), work (the directory) and ctr (set it to a container to remove).
work=$(mktemp -d)
ctr=
b() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }
cleanup_buildah() {
	[[ -z $ctr ]] || b rm "$ctr" >/dev/null 2>&1 || true
	# vfs layers are plain directories, which buildah leaves with read-only modes.
	chmod -R u+w "$work" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup_buildah EXIT
