package main

import (
	"go/parser"
	"go/token"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// goList returns the packages that the given packages link, themselves included.
func goList(t *testing.T, pkgs ...string) []string {
	t.Helper()
	args := append([]string{"list", "-deps"}, pkgs...)
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	return strings.Fields(string(out))
}

// The parts the controller wires never reach back into it: the mirror, the probes and the election
// must not change when the failover logic does.
func TestDependenciesPointOneWay(t *testing.T) {
	const mod = "github.com/topoha/topoha/"
	for _, pkg := range []string{"replication", "health", "election", "discovery"} {
		for _, d := range goList(t, mod+pkg) {
			if d == mod+"failover" || d == mod+"controller" {
				t.Errorf("%s links %s", pkg, d)
			}
		}
	}
}

// `topoha mirror` is "mirror only, no election and no failover": the code of its path (mirror.go's
// imports, and everything they import) must not link the control plane, so that a change there cannot
// change the mirror.
func TestMirrorCommandLinksNoControlPlane(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "mirror.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	var imports []string
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		imports = append(imports, path)
	}
	deps := goList(t, imports...)
	for _, forbidden := range []string{"controller", "election", "failover", "fence", "witness", "override", "clusterstatus"} {
		for _, d := range deps {
			if d == "github.com/topoha/topoha/"+forbidden {
				t.Errorf("the mirror command's path links %s", d)
			}
		}
	}
	if !slices.Contains(deps, "github.com/topoha/topoha/replication") {
		t.Fatalf("go list found no replication package among %d deps; has mirror.go moved?", len(deps))
	}
}
