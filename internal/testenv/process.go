package testenv

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a program (usually the topoha binary from Binary) running as a child of the test, with its
// stdout and stderr captured. It is killed when the test ends, and its output is logged if the test failed.
type Process struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{} // closed when the process has exited and its output is fully captured
	err    error         // from cmd.Wait; read after done is closed
}

// StartProcess starts path with args. The test fails if it cannot be started.
func StartProcess(t testing.TB, path string, args ...string) *Process {
	t.Helper()
	p := spawn(t, path, args...)
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("process %d: %s\n--- stdout ---\n%s--- stderr ---\n%s", p.Pid(), p.cmd, p.Stdout(), p.Stderr())
		}
	})
	return p
}

// spawn starts path with args and leaves ending it to the caller.
func spawn(t testing.TB, path string, args ...string) *Process {
	t.Helper()
	p := &Process{
		t:      t,
		cmd:    exec.Command(path, args...),
		stdout: &syncBuffer{},
		stderr: &syncBuffer{},
		done:   make(chan struct{}),
	}
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s %s: %v", path, strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p
}

// RunProcess runs path with args to completion and returns its exit code and output. The test fails if
// the process has not exited after timeout (it is then killed).
func RunProcess(t testing.TB, timeout time.Duration, path string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := StartProcess(t, path, args...)
	code = p.Wait(timeout)
	return code, p.Stdout(), p.Stderr()
}

// Pid is the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stdout returns what the process has written to stdout so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// Stderr returns what the process has written to stderr so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Exited says whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process (e.g. syscall.SIGTERM). Sending to an exited process is not an error.
func (p *Process) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("signal %v to process %d: %v", sig, p.Pid(), err)
	}
}

// Kill kills the process with SIGKILL (kill -9) and waits until it is gone.
func (p *Process) Kill() {
	p.t.Helper()
	p.Signal(os.Kill)
	<-p.done
}

// Wait waits for the process to exit and returns its exit code, -1 if a signal ended it. The test fails if
// it is still running after timeout; it is then killed.
func (p *Process) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("process %d (%s) still running after %s; killed it\nstderr:\n%s", p.Pid(), p.cmd, timeout, p.Stderr())
	}
	var exitErr *exec.ExitError
	if p.err != nil && !errors.As(p.err, &exitErr) {
		p.t.Fatalf("wait for process %d: %v", p.Pid(), p.err)
	}
	return p.cmd.ProcessState.ExitCode()
}

// syncBuffer is a bytes.Buffer that the process's output copier writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// KillWithChildren kills the process and the process groups of its direct children with SIGKILL, as a
// host that dies takes everything with it: a controller's promote commands and hooks run in process
// groups of their own, which a kill of the controller alone would leave running.
func (p *Process) KillWithChildren() {
	p.t.Helper()
	children := childrenOf(p.Pid())
	p.Kill()
	for _, pid := range children {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name, in parentheses, may hold spaces: the fields after its closing one are fixed.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}
