package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads, defaults and validates the config file at path. The returned error lists every problem found,
// one per line, each starting with the field it is about.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w (pass an existing file with --config)", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config file %s:\n%w", path, err)
	}
	return cfg, nil
}

// Parse decodes, defaults and validates a config document. Files it names (password_file, TLS files,
// token_file) are read relative to the working directory.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	if err := decodeStrict(data, &cfg); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// decodeStrict decodes one YAML document into out, rejecting unknown keys, and rewrites yaml's
// "line N: ..." messages so that each names the field at that line.
func decodeStrict(data []byte, out *Config) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	if root.Kind == 0 {
		return errors.New("the file is empty; start from config.yaml in the topoha repository")
	}
	fields := map[int][]fieldAt{}
	fieldsByLine(&root, "", fields)

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(out)
	var typeErr *yaml.TypeError
	if errors.As(err, &typeErr) {
		var all []error
		for _, msg := range typeErr.Errors {
			all = append(all, describeYAMLError(msg, fields))
		}
		return errors.Join(all...)
	}
	if err != nil {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("the file holds more than one YAML document; keep a single document")
	}
	return nil
}

var (
	yamlLineMsg      = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlUnknownField = regexp.MustCompile(`^field (\S+) not found in type`)
	yamlBadValue     = regexp.MustCompile("^cannot unmarshal !!\\w+ `([^`]*)`")
)

// fieldAt is a field that starts on some line of the file: its dotted path and, for a scalar, its value.
type fieldAt struct {
	path, key, value string
}

func describeYAMLError(msg string, fields map[int][]fieldAt) error {
	m := yamlLineMsg.FindStringSubmatch(msg)
	if m == nil {
		return errors.New(msg)
	}
	line, _ := strconv.Atoi(m[1])
	detail := m[2]
	onLine := fields[line]
	field := "line " + m[1]
	if len(onLine) > 0 {
		field = onLine[0].path
	}
	if u := yamlUnknownField.FindStringSubmatch(detail); u != nil {
		for _, f := range onLine {
			if f.key == u[1] {
				field = f.path
			}
		}
		return fieldErr(field, "unknown key (line %d); check its spelling against config.yaml", line)
	}
	if v := yamlBadValue.FindStringSubmatch(detail); v != nil {
		// yaml shortens a value longer than 10 bytes to its first 7 and "...".
		short, cut := strings.CutSuffix(v[1], "...")
		for _, f := range onLine {
			if f.value == v[1] || (cut && len(f.value) > 10 && strings.HasPrefix(f.value, short)) {
				field = f.path
				break
			}
		}
	}
	if strings.Contains(detail, "time.Duration") {
		return fieldErr(field, "not a duration (line %d): use a Go duration with a unit such as 500ms, 10s or 15m", line)
	}
	return fieldErr(field, "%s (line %d)", detail, line)
}

// fieldsByLine records, for each line, the fields that start there with their dotted paths
// (dcs.dc1.etcd.endpoints[0]); flow style puts several on one line.
func fieldsByLine(n *yaml.Node, path string, out map[int][]fieldAt) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			fieldsByLine(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			p := key.Value
			if path != "" {
				p = path + "." + key.Value
			}
			out[key.Line] = append(out[key.Line], fieldAt{path: p, key: key.Value, value: scalarValue(val)})
			fieldsByLine(val, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			out[c.Line] = append(out[c.Line], fieldAt{path: p, value: scalarValue(c)})
			fieldsByLine(c, p, out)
		}
	}
}

func scalarValue(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return n.Value
	}
	return ""
}

// UnmarshalYAML accepts a single alias or a list of aliases.
func (a *Aliases) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*a = Aliases{n.Value}
		return nil
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		// A *yaml.TypeError is collected with the other decoding errors and named after its field; any other
		// error would abort decoding with a bare line number.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a tablet alias or a list of them", n.Line)}}
	}
	*a = list
	return nil
}

// UnmarshalYAML accepts the word auto or a list of shards. A list that also holds auto is refused: a
// shard listed by hand and discovered shards cannot be told apart at failover time.
func (l *ShardList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != ShardsAuto {
			return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want auto or a list of shards, not %q", n.Line, n.Value)}}
		}
		*l = ShardList{Auto: true}
		return nil
	}
	var errs []string
	if n.Kind == yaml.SequenceNode {
		for _, item := range n.Content {
			if item.Kind == yaml.ScalarNode && item.Value == ShardsAuto {
				errs = append(errs, fmt.Sprintf("line %d: auto cannot be mixed with listed shards; write failover.shards: auto, or list every shard", item.Line))
			}
			// Node.Decode does not reject unknown keys as Load's decoder does: check them here.
			for i := 0; item.Kind == yaml.MappingNode && i+1 < len(item.Content); i += 2 {
				switch k := item.Content[i]; k.Value {
				case "keyspace", "shard", "tablets": // config.Shard's yaml tags
				default:
					errs = append(errs, fmt.Sprintf("line %d: field %s not found in type config.Shard", k.Line, k.Value))
				}
			}
		}
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return n.Decode(&l.List)
}
