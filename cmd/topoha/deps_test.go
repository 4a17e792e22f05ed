package main

import (
	"go/parser"
	"go/token"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// `topoha mirror` is "mirror only, no election and no failover": the code of its path (mirror.go's
// imports, and everything they import) must not link the control plane, so that a change there cannot
// change the mirror.
func TestMirrorCommandLinksNoControlPlane(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "mirror.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"list", "-deps"}
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		args = append(args, path)
	}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	deps := strings.Fields(string(out))
	for _, forbidden := range []string{"controller", "election", "failover", "fence", "witness", "override", "clusterstatus"} {
		for _, d := range deps {
			if d == "github.com/topoha/topoha/"+forbidden {
				t.Errorf("the mirror command's path links %s", d)
			}
		}
	}
	if !strings.Contains(string(out), "github.com/topoha/topoha/replication") {
		t.Fatalf("go list found no replication package among %d deps; has mirror.go moved?", len(deps))
	}
}
