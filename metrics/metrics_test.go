package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"
)

// topoha_build_info carries what the build stamped (Makefile: build/version.sh), so that a dashboard can
// tell which commit each controller runs.
func TestBuildInfoCarriesTheStamp(t *testing.T) {
	saved := []string{version.Version, version.Revision, version.BuildDate}
	t.Cleanup(func() { version.Version, version.Revision, version.BuildDate = saved[0], saved[1], saved[2] })
	version.Version, version.Revision, version.BuildDate = "v1.2.3", "0123456789abcdef0123456789abcdef01234567", "2026-11-30T05:00:00Z"

	reg := prometheus.NewRegistry()
	if _, err := New(reg); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"version": "v1.2.3", "revision": "0123456789abcdef0123456789abcdef01234567",
		"build_date": "2026-11-30T05:00:00Z", "goversion": version.GoVersion}
	for _, f := range fams {
		if f.GetName() != "topoha_build_info" {
			continue
		}
		got := map[string]string{}
		for _, l := range f.GetMetric()[0].GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for name, value := range want {
			if got[name] != value {
				t.Errorf("topoha_build_info{%s=%q}, want %q (all labels: %v)", name, got[name], value, got)
			}
		}
		return
	}
	t.Fatal("no topoha_build_info")
}
