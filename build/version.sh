#!/usr/bin/env bash
# Says which topoha a build is, for make build, make image and make release:
#
#   build/version.sh version   # v1.2.0, v1.2.0-3-g08285f3bd, or v0.0.0-20261130044700-08285f3bd89e(-dirty)
#   build/version.sh ldflags   # the -X flags that stamp it into the binary
#
# The values go into github.com/prometheus/common/version, where `topoha version`, the start-up log line and
# topoha_build_info read them. Releases are tags named vX.Y.Z; between tags `git describe` counts the
# commits since the last one. With no tag at all the version has the shape of a Go pseudo-version (commit
# time and hash), so it sorts by time. "-dirty" means the work tree had uncommitted changes.
#
# Every value can be set from the environment instead (TOPOHA_VERSION, TOPOHA_REVISION, TOPOHA_BRANCH,
# TOPOHA_BUILD_DATE), e.g. to build from a source tarball with no .git. The build date is the time of the
# build in UTC, or SOURCE_DATE_EPOCH's when that is set. The version must be usable as an image tag and a
# file name, so it is checked.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

git_or_fail() {
	local out
	if ! out=$(git "$@" 2>&1); then
		echo "build/version.sh: git $* failed: $out" >&2
		echo "build/version.sh: outside a git checkout, set TOPOHA_VERSION and TOPOHA_REVISION (TOPOHA_BRANCH is optional)" >&2
		exit 2
	fi
	echo "$out"
}

version=${TOPOHA_VERSION:-}
if [[ -z $version ]]; then
	if ! version=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
		hash=$(git_or_fail rev-parse --short=12 HEAD)
		committed=$(TZ=UTC git_or_fail show -s --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD)
		version=v0.0.0-$committed-$hash
		git diff --quiet HEAD 2>/dev/null || version+=-dirty
	fi
fi
revision=${TOPOHA_REVISION:-$(git_or_fail rev-parse HEAD)}
if [[ -z ${TOPOHA_BRANCH:-} ]]; then
	if ! git rev-parse --git-dir >/dev/null 2>&1; then
		branch=unknown
	else
		# A detached HEAD (CI, a tag checkout) has no branch.
		branch=$(git symbolic-ref -q --short HEAD || echo detached)
	fi
else
	branch=$TOPOHA_BRANCH
fi
build_date=${TOPOHA_BUILD_DATE:-$(date -u ${SOURCE_DATE_EPOCH:+-d @$SOURCE_DATE_EPOCH} +%Y-%m-%dT%H:%M:%SZ)}
# Each value becomes one -X flag: a space would split it.
check() { # name value pattern fix
	if [[ ! $2 =~ $3 ]]; then
		echo "build/version.sh: $1 '$2' is not $4" >&2
		exit 2
	fi
}
# The version is an OCI tag: it names the image (topoha:<version>) and the release files.
check version "$version" '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$' "usable as an image tag (letters, digits, '_', '.', '-'; at most 128): fix the tag or TOPOHA_VERSION"
check revision "$revision" '^[0-9a-f]{7,64}$' "a git commit (hex): fix TOPOHA_REVISION"
check branch "$branch" '^[^[:space:]]+$' "one word: fix TOPOHA_BRANCH"
check "build date" "$build_date" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' "UTC in the form 2026-11-30T05:00:00Z: fix TOPOHA_BUILD_DATE or SOURCE_DATE_EPOCH"

case ${1:-} in
version) echo "$version" ;;
revision) echo "$revision" ;;
build-date) echo "$build_date" ;;
ldflags)
	pkg=github.com/prometheus/common/version
	echo "-X $pkg.Version=$version -X $pkg.Revision=$revision -X $pkg.Branch=$branch -X $pkg.BuildDate=$build_date"
	;;
*)
	echo "usage: build/version.sh version|revision|build-date|ldflags" >&2
	exit 2
	;;
esac
