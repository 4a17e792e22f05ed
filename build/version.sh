#!/usr/bin/env bash
# Says which topoha a build is, for make build, make image and make release:
#
#   build/version.sh version   # v1.2.0, v1.2.0-3-g08285f3ab, or v0.0.0-20261130051807-08285f3abcde(-dirty)
#   build/version.sh ldflags   # the -X flags that stamp it into the binary
#
# The values go into github.com/prometheus/common/version, where `topoha version`, the start-up log line and
# topoha_build_info read them. Releases are tags named vX.Y.Z; between tags `git describe` counts the
# commits since the last one. With no tag at all the version has the shape of a Go pseudo-version (commit
# time and hash), so it sorts by time. "-dirty" means the work tree had uncommitted changes.
#
# Every value can be set from the environment instead (VERSION, REVISION, BRANCH, BUILD_DATE), e.g. to build
# from a source tarball with no .git. BUILD_DATE is the time of the build in UTC, or SOURCE_DATE_EPOCH's when
# that is set (reproducible builds: the same commit and date give the same binary).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

git_or_fail() {
	git "$@" 2>/dev/null || {
		echo "build/version.sh: not a git checkout (git $*): set VERSION, REVISION and BRANCH in the environment" >&2
		exit 2
	}
}

if [[ -z ${VERSION:-} ]]; then
	if ! VERSION=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
		VERSION="v0.0.0-$(TZ=UTC git_or_fail show -s --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD)-$(git_or_fail rev-parse --short=12 HEAD)"
		git diff --quiet HEAD 2>/dev/null || VERSION+=-dirty
	fi
fi
REVISION=${REVISION:-$(git_or_fail rev-parse HEAD)}
BRANCH=${BRANCH:-$(git_or_fail rev-parse --abbrev-ref HEAD)}
if [[ -z ${BUILD_DATE:-} ]]; then
	BUILD_DATE=$(date -u ${SOURCE_DATE_EPOCH:+-d @$SOURCE_DATE_EPOCH} +%Y-%m-%dT%H:%M:%SZ)
fi

case ${1:-} in
version) echo "$VERSION" ;;
revision) echo "$REVISION" ;;
build-date) echo "$BUILD_DATE" ;;
ldflags)
	pkg=github.com/prometheus/common/version
	echo "-X $pkg.Version=$VERSION -X $pkg.Revision=$REVISION -X $pkg.Branch=$BRANCH -X $pkg.BuildDate=$BUILD_DATE"
	;;
*)
	echo "usage: build/version.sh version|revision|build-date|ldflags" >&2
	exit 2
	;;
esac
