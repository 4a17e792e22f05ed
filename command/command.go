// Package command runs the operator's commands — promote and switchover commands, hooks — as argument
// vectors rendered from templates: no shell, each in its own process group that is killed whole at the
// timeout, with extra environment variables, and with its combined output captured (truncated).
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/topoha/topoha/config"
)

// MaxOutput bounds the output kept of one run: the end of it, where errors are.
const MaxOutput = 4096

// ErrTimeout is wrapped by Run's error when the command was killed at its timeout.
var ErrTimeout = errors.New("killed at its timeout")

// Render renders every argument of argv as a template over vars.
func Render(argv []string, vars config.CommandVars) ([]string, error) {
	if len(argv) == 0 {
		return nil, errors.New("the command is empty")
	}
	out := make([]string, len(argv))
	for i, arg := range argv {
		v, err := config.RenderArg(arg, vars)
		if err != nil {
			return nil, fmt.Errorf("argument %d %q: %w", i, arg, err)
		}
		out[i] = v
	}
	return out, nil
}

// Run runs argv with the process's environment plus env ("NAME=value"), in its own process group, which
// is killed when ctx ends; it returns the combined output, truncated to its last MaxOutput bytes. The
// error names the program and wraps ErrTimeout if the command was killed.
func Run(ctx context.Context, argv []string, env ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Killing the group, not just the child, ends what a wrapper script started too.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	text := out.String()
	if len(text) > MaxOutput {
		text = text[len(text)-MaxOutput:]
	}
	switch {
	case err == nil:
		return text, nil
	case ctx.Err() != nil:
		return text, fmt.Errorf("%s: %w (%w)", argv[0], ErrTimeout, ctx.Err())
	default:
		return text, fmt.Errorf("%s: %w", argv[0], err)
	}
}
