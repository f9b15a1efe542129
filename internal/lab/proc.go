package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Proc is a program running in the background inside a namespace. Its standard output and
// error go to a log file in the lab's directory, so that it can outlive this program
// (Keep) without dying of a broken pipe. The methods are safe for concurrent use.
type Proc struct {
	Name    string   // what the lab calls it ("sgd", "iperf3 server")
	NS      string   // namespace it runs in
	Argv    []string // the program's own arguments (without "ip netns exec NS")
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // the exit status; read only after done is closed
}

// Start runs argv inside namespace ns in the background, in its own process group (so a
// Ctrl-C on the terminal reaches this program only, which then stops the lab in order).
// "ip netns exec" execs the program in place: PID is the program's own. The lab stops it
// in Cleanup.
func (l *Lab) Start(ns, name string, argv ...string) (*Proc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dir == "" || l.kept {
		return nil, errors.New("lab: cleaned up or kept; cannot start more processes")
	}
	logPath := filepath.Join(l.dir, fmt.Sprintf("%s-%d.log", sanitize(name), len(l.procs)))
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lab: log for %s: %w", name, err)
	}
	defer f.Close() // the child has its own copy
	full := append([]string{"ip", "netns", "exec", ns}, argv...)
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s: %w", strings.Join(full, " "), err)
	}
	p := &Proc{Name: name, NS: ns, Argv: argv, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	l.procs = append(l.procs, p)
	return p, nil
}

// PID is the process id of the program.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the program has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the program's exit status once Done is closed (nil for exit status 0).
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

func (p *Proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns everything the program has written so far.
func (p *Proc) Output() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Tail returns the last n lines of the program's output.
func (p *Proc) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Output(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitFor waits until the program's output contains s. It fails, quoting the end of the
// output, when the program exits first or ctx ends.
func (p *Proc) WaitFor(ctx context.Context, s string) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if strings.Contains(p.Output(), s) {
			return nil
		}
		select {
		case <-p.done:
			if strings.Contains(p.Output(), s) {
				return nil
			}
			return fmt.Errorf("%s exited (%v) before it was ready; its output ends:\n%s", p.Name, p.err, indent(p.Tail(15)))
		case <-ctx.Done():
			return fmt.Errorf("%s was not ready in time (%w); its output ends:\n%s", p.Name, ctx.Err(), indent(p.Tail(15)))
		case <-t.C:
		}
	}
}

// Signal sends sig to the program (nothing when it has exited).
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM, waits up to grace for the program to exit, then kills it. It
// returns an error only when the program could not be killed; its exit status is Err.
func (p *Proc) Stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("lab: kill %s (pid %d): %w", p.Name, p.PID(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("lab: %s (pid %d) survived SIGKILL for 5 s", p.Name, p.PID())
	}
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
