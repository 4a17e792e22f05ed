// Package clitest runs topoha's commands from tests, as an operator or a script would, and decodes what
// they print.
package clitest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/topoha/topoha/clusterstatus"
	"github.com/topoha/topoha/internal/testenv"
)

// Status runs `topoha status --config config --json` and decodes it; the test fails if it does not exit 0
// (all healthy) or 1 (something needs a person) within timeout.
func Status(t testing.TB, config string, timeout time.Duration) clusterstatus.Status {
	t.Helper()
	code, out, errOut := testenv.RunProcess(t, timeout, testenv.Binary(t), "status", "--config", config, "--json")
	if code != 0 && code != 1 {
		t.Fatalf("status exit %d: %s", code, errOut)
	}
	var st clusterstatus.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}
