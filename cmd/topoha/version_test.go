package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/topoha/topoha/internal/testenv"
)

// A binary go run or a plain go build made says that it is not stamped, instead of a bare "devel" that
// reads like a development release.
func TestVersionOfAnUnstampedBuild(t *testing.T) {
	code, stdout, stderr := testenv.RunProcess(t, waitLong, testenv.Binary(t), "version")
	if code != exitOK || !strings.HasPrefix(stdout, "topoha devel (not stamped") || !strings.Contains(stdout, "\ngo version: go") {
		t.Fatalf("version: exit %d, stdout %q, stderr %q; want exit 0, \"topoha devel (not stamped…\" and the Go version", code, stdout, stderr)
	}
}

// The stamp make build, make image and make release use (build/version.sh ldflags) reaches `topoha
// version`: the version, the full commit and the build date, each on its own line for scripts to read.
func TestVersionOfAStampedBuild(t *testing.T) {
	const revision = "0123456789abcdef0123456789abcdef01234567"
	script := exec.Command("bash", "../../build/version.sh", "ldflags")
	script.Env = append(os.Environ(), "TOPOHA_VERSION=v9.8.7", "TOPOHA_REVISION="+revision, "TOPOHA_BRANCH=release-9.8", "SOURCE_DATE_EPOCH=1796014800")
	ldflags, err := script.Output()
	if err != nil {
		t.Fatalf("build/version.sh ldflags: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "topoha")
	build := exec.Command("go", "build", "-ldflags", strings.TrimSpace(string(ldflags)), "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -ldflags %q: %v\n%s", ldflags, err, out)
	}
	code, stdout, stderr := testenv.RunProcess(t, waitLong, bin, "version")
	want := []string{"topoha v9.8.7\n", "\nrevision:   " + revision + "\n", "\nbranch:     release-9.8\n", "\nbuild date: 2026-11-30T05:00:00Z\n"}
	for _, w := range want {
		if code != exitOK || !strings.Contains(stdout, w) {
			t.Errorf("version of a stamped build: exit %d, stdout %q, stderr %q; want %q in it", code, stdout, stderr, w)
		}
	}
}
