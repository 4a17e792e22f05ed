package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// yamlPaths lists the dotted paths of every leaf key of t's YAML schema; a map's key is written <name>.
func yamlPaths(prefix string, t reflect.Type) []string {
	switch t.Kind() {
	case reflect.Map:
		return yamlPaths(prefix+".<name>", t.Elem())
	case reflect.Struct:
		if t.PkgPath() != reflect.TypeFor[Config]().PkgPath() {
			break // time.Duration and the like are leaves
		}
		var out []string
		for i := range t.NumField() {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			p := tag
			if prefix != "" {
				p = prefix + "." + tag
			}
			out = append(out, yamlPaths(p, t.Field(i).Type)...)
		}
		return out
	}
	return []string{prefix}
}

// Every key of the schema is documented in docs/configuration.md's table, by its full path or, in a row
// that groups siblings (`health.interval` / `health.timeout`), by its own name in backticks.
func TestEveryKeyIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	paths := yamlPaths("", reflect.TypeFor[Config]())
	if len(paths) < 40 {
		t.Fatalf("found only %d keys: %v", len(paths), paths)
	}
	lines := strings.Split(string(doc), "\n")
	for _, p := range paths {
		parts := strings.Split(p, ".")
		// A backtick span that is the key's path, or ends with its name.
		span := regexp.MustCompile("`([^`]*\\.)?" + regexp.QuoteMeta(parts[len(parts)-1]) + "`")
		found := false
		for _, l := range lines {
			// A table row of the key's top-level section.
			if strings.HasPrefix(l, "| `"+parts[0]) && span.MatchString(l) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("docs/configuration.md does not document %s", p)
		}
	}
}
