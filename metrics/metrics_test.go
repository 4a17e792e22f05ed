package metrics

import (
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// topoha_build_info carries what the build stamped, so that a dashboard can tell which commit each
// controller runs.
func TestBuildInfoCarriesTheStamp(t *testing.T) {
	reg := prometheus.NewRegistry()
	build := Build{Version: "v1.2.3", Revision: "0123456789abcdef0123456789abcdef01234567", Branch: "detached", Date: "2026-11-30T05:00:00Z"}
	if _, err := New(reg, build); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"version": build.Version, "revision": build.Revision, "branch": build.Branch,
		"build_date": build.Date, "goversion": runtime.Version(), "goos": runtime.GOOS, "goarch": runtime.GOARCH}
	for _, f := range fams {
		if f.GetName() != "topoha_build_info" {
			continue
		}
		m := f.GetMetric()[0]
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if len(got) != len(want) || m.GetGauge().GetValue() != 1 {
			t.Errorf("topoha_build_info %v = %v, want the labels %v and 1", got, m.GetGauge().GetValue(), want)
		}
		for name, value := range want {
			if got[name] != value {
				t.Errorf("topoha_build_info{%s=%q}, want %q", name, got[name], value)
			}
		}
		return
	}
	t.Fatal("no topoha_build_info")
}
