package keys

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDesignDocListsEveryKey keeps docs/design.md's table of keys and this package in step: every key a
// Layout names is documented, and every documented key is one a Layout names.
func TestDesignDocListsEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)
	start := strings.Index(section, "## topoha's keys in etcd")
	if start < 0 {
		t.Fatal(`docs/design.md has no section "## topoha's keys in etcd"`)
	}
	section = section[start+3:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(/topoha/<cluster>/[^`]*)`").FindAllStringSubmatch(section, -1) {
		documented = append(documented, m[1])
	}

	l := For("<cluster>")
	var named []string
	v := reflect.ValueOf(l)
	for i := range v.NumMethod() {
		named = append(named, v.Method(i).Call(nil)[0].String())
	}
	for _, k := range named {
		if !slices.Contains(documented, k) {
			t.Errorf("key %s is not in docs/design.md's table of keys; add a row for it", k)
		}
	}
	for _, k := range documented {
		if !slices.Contains(named, k) {
			t.Errorf("docs/design.md documents %s, which no keys.Layout method names; remove the row or add the key", k)
		}
	}
	if len(named) < 10 {
		t.Fatalf("found %d keys by reflection; expected every Layout method: %v", len(named), named)
	}
}

func TestEveryKeyIsBelowTheRoot(t *testing.T) {
	l := For("prod")
	v := reflect.ValueOf(l)
	seen := map[string]string{}
	for i := range v.NumMethod() {
		name := v.Type().Method(i).Name
		k := v.Method(i).Call(nil)[0].String()
		if !strings.HasPrefix(k, "/topoha/prod/") {
			t.Errorf("%s = %q is not below /topoha/prod/", name, k)
		}
		if other, dup := seen[k]; dup {
			t.Errorf("%s and %s both name %q", name, other, k)
		}
		seen[k] = name
	}
}
