package netns

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// syncBuffer collects a child's output; safe for the writer and readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var queueSeq atomic.Int32

// fastPath, when set, is passed to every `sgd run` of the suite as --fast-path=VALUE: CI
// runs the suite with sgd's default (the kernel fast path on) and again with
// -sgd.fast-path=false (every packet judged in sgd), SPEC 4.7.
var fastPath = flag.String("sgd.fast-path", "", "run every sgd of the suite with --fast-path=`VALUE` (default: sgd's own default)")

// nextQueue returns a queue number unique to this run of the suite (queues are per
// namespace anyway; distinct numbers make logs unambiguous).
func nextQueue() int { return 10000 + os.Getpid()%2000*25 + int(queueSeq.Add(1))%25 }

// shortDir returns a temporary directory with a short path (unix socket paths are limited
// to 108 bytes, and t.TempDir embeds the test's name); t.Cleanup removes it.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sgdt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// writeConfig writes a config file into a fresh temporary directory and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sgd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sgd is one `sgd run` process inside a namespace.
type sgd struct {
	t       *testing.T
	ns      string
	queue   int
	config  string
	metrics string // 127.0.0.1:PORT inside ns
	socket  string // the status socket
	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan struct{}
	killed  bool // SIGKILLed on purpose: no clean exit expected
}

// sgdCommand returns `ip netns exec NS sgd run ...` with the suite's flags.
func sgdCommand(t *testing.T, ns, config string, queue int, extra ...string) (cmd *exec.Cmd, metrics, socket string) {
	t.Helper()
	socket = filepath.Join(shortDir(t), "sgd.sock")
	metrics = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, ns)))
	args := []string{"netns", "exec", ns, sgdBin, "run",
		"--config", config,
		"--metrics-listen", metrics,
		"--status-socket", socket,
		"--queue-num", strconv.Itoa(queue),
		"--log-format", "console"}
	if *fastPath != "" {
		args = append(args, "--fast-path="+*fastPath)
	}
	cmd = exec.Command("ip", append(args, extra...)...)
	// `ip netns exec` execs sgd in place (no fork), so signals reach sgd itself; the
	// parent-death signal makes sure no daemon outlives a test binary that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, metrics, socket
}

// startSGD runs sgd with config (and extra flags) in namespace ns on queue and waits until it enforces
// (its "started" line is logged and its NFQUEUE rule is in mangle SGD-INPUT). t.Cleanup
// stops it with SIGTERM, wants exit code 0 and no sgd rule left, and logs its output
// when the test failed.
func startSGD(t *testing.T, ns, config string, queue int, extra ...string) *sgd {
	t.Helper()
	return startSGDEnv(t, ns, config, queue, nil, extra...)
}

// startSGDEnv is startSGD with env (NAME=value) added to sgd's environment.
func startSGDEnv(t *testing.T, ns, config string, queue int, env []string, extra ...string) *sgd {
	t.Helper()
	cmd, metrics, socket := sgdCommand(t, ns, config, queue, extra...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	d := &sgd{t: t, ns: ns, queue: queue, config: config, metrics: metrics, socket: socket, cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sgd: %v", err)
	}
	go func() { _ = cmd.Wait(); close(d.exited) }()
	t.Cleanup(d.cleanup)
	d.waitReady()
	return d
}

func (d *sgd) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

func (d *sgd) waitReady() {
	t := d.t
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	want := fmt.Sprintf("--queue-num %d", d.queue)
	for {
		if !d.running() {
			t.Fatalf("sgd exited before it was ready (exit code %d):\n%s", d.cmd.ProcessState.ExitCode(), d.out)
		}
		if strings.Contains(d.out.String(), "\tstarted\t") {
			out, err := runErr("ip", "netns", "exec", d.ns, "iptables", "-t", "mangle", "-S", "SGD-INPUT")
			if err == nil && strings.Contains(out, "NFQUEUE") && strings.Contains(out, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sgd not ready after 15s:\n%s", d.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and returns the exit code (-1 when killed by a signal).
func (d *sgd) stop() int {
	d.t.Helper()
	if !d.running() {
		return d.cmd.ProcessState.ExitCode()
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("sgd did not stop within 15s of SIGTERM; killed it")
	}
	return d.cmd.ProcessState.ExitCode()
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *sgd) kill() {
	d.t.Helper()
	d.killed = true
	_ = d.cmd.Process.Kill()
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.t.Fatal("sgd still running 10s after SIGKILL")
	}
}

func (d *sgd) cleanup() {
	t := d.t
	if d.running() {
		if code := d.stop(); code != 0 {
			t.Errorf("sgd exit code after SIGTERM = %d; want 0", code)
		}
		if !t.Failed() {
			assertNoRules(t, d.ns)
		}
	}
	if t.Failed() {
		t.Logf("sgd output (queue %d, ns %s):\n%s", d.queue, d.ns, d.out)
	}
}

// waitLog waits until sgd's output holds at least n copies of substr.
func (d *sgd) waitLog(substr string, n int) {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(d.out.String(), substr) < n {
		if time.Now().After(deadline) || !d.running() {
			d.t.Fatalf("sgd output has %d lines with %q after 10s (running %v); want %d",
				strings.Count(d.out.String(), substr), substr, d.running(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a TCP port free on 127.0.0.1 inside ns.
func freePort(t *testing.T, ns string) int {
	t.Helper()
	var ln net.Listener
	var err error
	inNS(t, ns, func() { ln, err = net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatalf("free port in %s: %v", ns, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ruleset returns iptables-save and ip6tables-save of ns.
func ruleset(t *testing.T, ns string) string {
	t.Helper()
	return nsExec(t, ns, "iptables-save") + nsExec(t, ns, "ip6tables-save")
}

// assertNoRules fails the test when anything of sgd's (chains SGD-*, jumps commented
// "sgd") is in the rulesets of ns.
func assertNoRules(t *testing.T, ns string) {
	t.Helper()
	if rs := ruleset(t, ns); strings.Contains(strings.ToUpper(rs), "SGD") {
		t.Errorf("sgd rules left in %s:\n%s", ns, rs)
	}
}

// jumps counts the rules of builtin (table mangle) that jump to chain, for cmd (iptables
// or ip6tables).
func jumps(t *testing.T, ns, cmd, builtin, chain string) int {
	t.Helper()
	n := 0
	for _, l := range strings.Split(nsExec(t, ns, cmd, "-t", "mangle", "-S", builtin), "\n") {
		if strings.HasSuffix(strings.TrimSpace(l), "-j "+chain) {
			n++
		}
	}
	return n
}
