package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// labBinary builds sgd once for the tests that run it in network namespaces (the demo
// and the benchmark run their own binary as `sgd run`, which a test binary cannot be).
// It skips the test when not root or when the tools are missing.
func labBinary(t *testing.T, tools ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, iptables, NFQUEUE); run the tests as root to include it")
	}
	for _, tool := range append([]string{"ip", "iptables", "ip6tables"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: %v", tool, err)
		}
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		t.Skipf("no network namespaces here: %v: %s", err, out)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "sgd")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runLab runs the built sgd with args and returns its output, exit code and pid.
func runLab(t *testing.T, bin string, timeout time.Duration, args ...string) (stdout, stderr string, code, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // let it clean up
	cmd.WaitDelay = 20 * time.Second
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("sgd %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, so.String(), se.String())
	}
	return so.String(), se.String(), code, cmd.Process.Pid
}

// checkNoLeftovers fails when namespaces named prefix-pid-* exist or the host's own
// ruleset holds sgd chains.
func checkNoLeftovers(t *testing.T, prefix string, pid int) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	mine := prefix + "-" + strconv.Itoa(pid) + "-"
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, mine) {
			t.Errorf("namespace %q left behind", strings.Fields(line)[0])
		}
	}
	for _, ipt := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command(ipt, "-t", "mangle", "-S").CombinedOutput()
		if err != nil {
			continue
		}
		if strings.Contains(string(out), "SGD-") {
			t.Errorf("the host's %s mangle table has sgd chains:\n%s", ipt, out)
		}
	}
	if dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), mine+"*")); len(dirs) > 0 {
		t.Errorf("scratch directories left behind: %v", dirs)
	}
}

// caseBlock returns the lines of the demo case whose title line contains title.
func caseBlock(out, title string) string {
	for _, block := range strings.Split(out, "\n\n") {
		first, _, _ := strings.Cut(strings.TrimLeft(block, "\n"), "\n")
		if strings.Contains(first, title) {
			return block
		}
	}
	return ""
}

func TestDemoEndToEnd(t *testing.T) {
	bin := labBinary(t, "iptables-restore", "ip6tables-restore")
	stdout, stderr, code, pid := runLab(t, bin, 90*time.Second, "demo", "--timeout", "2s")
	defer checkNoLeftovers(t, demoPrefix, pid)
	if code != 0 {
		t.Errorf("sgd demo exit code = %d; want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, tc := range []struct{ title, want string }{
		{"stranger → instance tcp/80 (HTTP)", "connected in"},
		{"stranger → instance tcp/443", "connection refused in"},
		{"stranger → instance tcp/22 (SSH)", "timed out after 2 s"},
		{"client → instance tcp/22 (SSH)", "connected in"},
		{"member → instance tcp/22", "connected in"},
		{"client → instance ping", "echo reply in"},
		{"stranger → instance ping", "no reply after 2 s"},
		{"instance → client tcp/8080", "connected in"},
	} {
		block := caseBlock(stdout, tc.title)
		if block == "" {
			t.Errorf("demo output has no case %q", tc.title)
			continue
		}
		if !strings.Contains(block, tc.want) || !strings.Contains(block, "✓") {
			t.Errorf("demo case %q:\n%s\nwant %q and ✓", tc.title, block, tc.want)
		}
	}
	cases := 9
	if block := caseBlock(stdout, "over IPv6"); block != "" {
		if !strings.Contains(block, "timed out after 2 s") {
			t.Errorf("demo case IPv6:\n%s\nwant timed out", block)
		}
	} else if strings.Contains(stderr, "no IPv6 here") {
		cases = 8
	} else {
		t.Errorf("demo output has no IPv6 case and does not say why")
	}
	if want := fmt.Sprintf("Summary: %d of %d cases behaved as an AWS Security Group would.", cases, cases); !strings.Contains(stdout, want) {
		t.Errorf("demo output lacks %q:\n%s", want, stdout)
	}
	if !strings.Contains(caseBlock(stdout, "stranger → instance tcp/22 (SSH)"), "sgd explain: DENY") {
		t.Errorf("the blocked SSH case does not carry the explanation DENY:\n%s", caseBlock(stdout, "stranger → instance tcp/22 (SSH)"))
	}
}

func TestDemoHelpAndUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := dispatch([]string{"demo", "--help"}, &out, &errOut); code != 0 {
		t.Errorf("sgd demo --help exit = %d; want 0", code)
	}
	if !strings.Contains(errOut.String(), "--timeout") || !strings.Contains(errOut.String(), "--keep") {
		t.Errorf("sgd demo --help does not list --timeout and --keep:\n%s", errOut.String())
	}
	errOut.Reset()
	if code := dispatch([]string{"demo", "--timeout", "0s"}, &out, &errOut); code != 2 {
		t.Errorf("sgd demo --timeout 0s exit = %d; want 2", code)
	}
}

func TestFmtDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{400 * time.Microsecond, "0.4 ms"},
		{12 * time.Millisecond, "12 ms"},
		{3 * time.Second, "3 s"},
		{1500 * time.Millisecond, "1.5 s"},
	} {
		if got := fmtDuration(tc.d); got != tc.want {
			t.Errorf("fmtDuration(%v) = %q; want %q", tc.d, got, tc.want)
		}
	}
}

func TestICMPChecksum(t *testing.T) {
	// An echo request with its checksum filled in sums to zero (RFC 1071).
	msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'h', 'i', '!'}
	sum := icmpChecksum(msg)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	if got := icmpChecksum(msg); got != 0 {
		t.Errorf("icmpChecksum(filled message) = %#04x; want 0", got)
	}
}
