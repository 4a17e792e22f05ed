package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// builds caches one build per package for the whole test process.
var builds = struct {
	sync.Mutex
	done map[string]*build
}{done: map[string]*build{}}

type build struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// Binary builds cmd/topoha once per test process and returns the path of the executable. Tests that need
// a process to kill or signal run it.
func Binary(t testing.TB) string { return Build(t, "./cmd/topoha") }

// Build builds the main package at pkg (relative to the repository root, e.g. ./internal/fakepromote)
// once per test process and returns the executable's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	builds.Lock()
	b, ok := builds.done[pkg]
	if !ok {
		b = &build{}
		builds.done[pkg] = b
	}
	builds.Unlock()
	b.once.Do(func() {
		_, here, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(here), "..", "..")
		dir, err := os.MkdirTemp("", "topoha-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		// -buildvcs=false: the binary is the same whether or not Go would record the checkout's commit
		// (its default in a git checkout), so `topoha version` is that of an unstamped build everywhere.
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", b.path, pkg)
		cmd.Dir = root
		b.out, b.err = cmd.CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, b.err, b.out)
	}
	return b.path
}
