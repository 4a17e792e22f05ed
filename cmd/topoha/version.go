package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/prometheus/common/version"

	"github.com/topoha/topoha/metrics"
)

// unstamped is the version of a binary the Makefile did not build and go install gave no version: it
// says so, because "devel" alone reads like a development release.
const unstamped = "devel"

// stampedVersion is what the build wrote into the binary, with "unknown" for what it did not. make build,
// make image and make release set github.com/prometheus/common/version's variables with -ldflags -X
// (build/version.sh computes them), so that `topoha version`, the start-up log line and topoha_build_info
// all say the same thing. Without them, Go's own record gives what it has: the module version of a go
// install, the commit of a go build in a checkout.
func stampedVersion() metrics.Build {
	b := metrics.Build{Version: version.Version, Revision: version.GetRevision(), Branch: version.Branch, Date: version.BuildDate}
	if b.Version == "" {
		b.Version = unstamped
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
	}
	for _, v := range []*string{&b.Revision, &b.Branch, &b.Date} {
		if *v == "" {
			*v = "unknown"
		}
	}
	return b
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) int {
	b := stampedVersion()
	head := "topoha " + b.Version
	if version.Version == "" {
		head += " (not stamped: built without make, by go run, go build or go install; make build, make image and make release stamp the version)"
	}
	fmt.Fprintf(stdout, "%s\nrevision:   %s\nbranch:     %s\nbuild date: %s\ngo version: %s\nplatform:   %s/%s\n",
		head, b.Revision, b.Branch, b.Date, version.GoVersion, version.GoOS, version.GoArch)
	return exitOK
}
