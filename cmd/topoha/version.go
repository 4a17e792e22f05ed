package main

import (
	"context"
	"fmt"
	"io"

	"github.com/prometheus/common/version"
)

// unstamped is the version of a binary the Makefile did not build (go run, a plain go build): it says
// so, because "devel" alone reads like a development release.
const unstamped = "devel"

// buildStamp is what the build wrote into the binary. make build, make image and make release set
// github.com/prometheus/common/version's variables with -ldflags -X (build/version.sh computes them), so
// `topoha version`, the start-up log line and topoha_build_info all say the same thing.
type buildStamp struct {
	Version, Revision, Branch, BuildDate string
}

func stampedVersion() buildStamp {
	s := buildStamp{Version: version.Version, Revision: version.GetRevision(), Branch: version.Branch, BuildDate: version.BuildDate}
	if s.Version == "" {
		s.Version = unstamped
	}
	for _, v := range []*string{&s.Revision, &s.Branch, &s.BuildDate} {
		if *v == "" {
			*v = "unknown"
		}
	}
	return s
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) int {
	s := stampedVersion()
	head := "topoha " + s.Version
	if s.Version == unstamped {
		head += " (not stamped: built by go run or a plain go build; make build, make image and make release stamp the version)"
	}
	fmt.Fprintf(stdout, "%s\nrevision:   %s\nbranch:     %s\nbuild date: %s\ngo version: %s\nplatform:   %s/%s\n",
		head, s.Revision, s.Branch, s.BuildDate, version.GoVersion, version.GoOS, version.GoArch)
	return exitOK
}
