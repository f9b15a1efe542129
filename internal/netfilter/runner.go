package netfilter

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Runner runs one external command with an argument list (never through a shell) and
// returns its standard output. stdin, when non-nil, is fed to the command's standard
// input. A command that exits non-zero must yield an error that unwraps to something with
// an ExitCode() int method (as *exec.ExitError has), so that the Manager can tell
// "iptables -C: rule absent" (exit status 1) from a failure; the error should also carry
// the command's standard error.
type Runner interface {
	Run(ctx context.Context, name string, args []string, stdin []byte) ([]byte, error)
}

// ExecRunner is the Runner that executes programs found through PATH with os/exec. Its
// zero value is ready to use and it is safe for concurrent use.
type ExecRunner struct{}

// Run executes name with args, feeding stdin, and returns standard output. A failure is
// returned as a *CommandError that carries the command line and its standard error and
// wraps the *exec.ExitError (or the start error).
func (ExecRunner) Run(ctx context.Context, name string, args []string, stdin []byte) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	// After a cancellation, do not wait forever for a child that keeps the pipes open.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &CommandError{Name: name, Args: args, Stderr: stderr.String(), Err: err}
	}
	return stdout.Bytes(), nil
}

// CommandError is a command that could not be run or exited non-zero.
type CommandError struct {
	Name   string
	Args   []string
	Stderr string // the command's standard error, as written
	Err    error  // the cause, typically *exec.ExitError
}

// Error reports the command line, the cause and the command's standard error.
func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s %s: %v", e.Name, strings.Join(e.Args, " "), e.Err)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + strings.Join(strings.Fields(s), " ")
	}
	return msg
}

// Unwrap returns the cause.
func (e *CommandError) Unwrap() error { return e.Err }
