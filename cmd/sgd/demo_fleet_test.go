package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/lab"
)

// fleetBinary is labBinary for the fleet demo, which also needs etcd: the test skips
// without it, but fails under CI, which installs etcd-server.
func fleetBinary(t *testing.T) string {
	t.Helper()
	bin := labBinary(t, "iptables-restore", "ip6tables-restore")
	if _, err := lab.FindEtcd(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v, and CI must run this test (.ci/run installs etcd-server)", err)
		}
		t.Skipf("%s is not installed, and sgd demo --fleet runs it (Debian: apt-get install etcd-server): %v", lab.EtcdBin, err)
	}
	return bin
}

var demoPIDs = regexp.MustCompile(`\(pid (\d+)\)`)

// checkNoProcesses fails when a process the demo said it started (every "(pid N)" of its
// output) still runs.
func checkNoProcesses(t *testing.T, out string) {
	t.Helper()
	ms := demoPIDs.FindAllStringSubmatch(out, -1)
	if len(ms) == 0 {
		t.Errorf("the demo's output names no pid to check:\n%s", out)
	}
	for _, m := range ms {
		pid, _ := strconv.Atoi(m[1])
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			cmdline, _ := os.ReadFile("/proc/" + m[1] + "/cmdline")
			t.Errorf("pid %d, started by the demo, still runs after it exited: %q", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
}

// sgd demo --fleet end to end: every case behaves, the timeline is printed, and nothing
// is left behind.
func TestDemoFleet(t *testing.T) {
	bin := fleetBinary(t)
	start := time.Now()
	stdout, stderr, code, pid := runLab(t, bin, 120*time.Second, "demo", "--fleet", "--timeout", "2s")
	t.Logf("sgd demo --fleet --timeout 2s took %v", time.Since(start).Round(100*time.Millisecond))
	defer checkNoLeftovers(t, demoPrefix, pid)
	defer checkNoProcesses(t, stdout)
	if code != 0 {
		t.Errorf("sgd demo --fleet exit code = %d; want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"DescribeNetworkInterfaces on C's API lists every host's eth0",
		"sgd:host-id=host-a  192.0.2.11  groups: app",
		"sgd:host-id=host-b  192.0.2.12  groups: db",
		"Timeline (from the first API call",
		`B's sgd logged "fleet: a host left (its lease was revoked or expired)" (host_id host-a)`,
		"Summary: 4 of 4 cases behaved as an AWS Security Group would (fleet).",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, stdout)
		}
	}
	// The config as printed: no members: outside comments.
	for _, line := range strings.Split(stdout, "\n") {
		if cfg, ok := strings.CutPrefix(line, "  │ "); ok {
			if code, _, _ := strings.Cut(cfg, "#"); strings.Contains(code, "members:") {
				t.Errorf("a host's config lists members: (%q); the fleet demo must need none", line)
			}
		}
	}
	for _, tc := range []struct {
		title string
		want  []string
	}{
		{"A → B tcp/3306 — A carries app", []string{"timed out after 2 s"}},
		{"A gains web", []string{"connected", "after the call returned", `the server said "sgd-demo db: hello`}},
		{"A loses web", []string{"new connections time out", "still carries data", "a full attempt: timed out after 2 s"}},
		{"A's sgd killed (SIGKILL)", []string{"right after the kill: connected", "after the kill", "member_ttl is 3 s", "a full attempt: timed out after 2 s"}},
	} {
		block := caseBlock(stdout, tc.title)
		if block == "" {
			t.Errorf("demo output has no case %q", tc.title)
			continue
		}
		for _, want := range append(tc.want, "✓") {
			if !strings.Contains(block, want) {
				t.Errorf("demo case %q:\n%s\nwant %q", tc.title, block, want)
			}
		}
	}
}

// Ctrl-C in the middle of a case stops the fleet demo at once and leaves nothing behind.
func TestDemoFleetInterrupted(t *testing.T) {
	bin := fleetBinary(t)
	cmd := exec.Command(bin, "demo", "--fleet", "--timeout", "5s")
	so := interruptAt(t, cmd, " 1  A → B tcp/3306") // inside the 5 s attempt
	checkNoLeftovers(t, demoPrefix, cmd.Process.Pid)
	checkNoProcesses(t, so)
}

// Without etcd the fleet demo exits 1 before building anything, saying what to install.
func TestDemoFleetWithoutEtcd(t *testing.T) {
	var out, errOut bytes.Buffer
	noEtcd := func() (string, error) { return "", lab.ErrNoEtcd }
	code := runFleetDemo(demoOptions{sgd: "/nonexistent/sgd", timeout: time.Second}, noEtcd, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "apt-get install etcd-server") || !strings.Contains(errOut.String(), lab.EtcdBin) {
		t.Errorf("runFleetDemo without etcd = exit %d, stderr %q; want exit 1 and a message naming %s and apt-get install etcd-server", code, errOut.String(), lab.EtcdBin)
	}
	if out.Len() != 0 {
		t.Errorf("runFleetDemo without etcd printed %q; want nothing on stdout", out.String())
	}
}

func TestDemoFleetUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := dispatch([]string{"demo", "--help"}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "-fleet") ||
		!strings.Contains(errOut.String(), "With --fleet") {
		t.Errorf("sgd demo --help = exit %d; want 0 and --fleet explained:\n%s", code, errOut.String())
	}
	errOut.Reset()
	if code := dispatch([]string{"demo", "--fleet", "--pcap", t.TempDir()}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--pcap") {
		t.Errorf("sgd demo --fleet --pcap DIR = exit %d, %q; want 2 and a word on --pcap", code, errOut.String())
	}
	errOut.Reset()
	if code := dispatch([]string{"demo", "--fleet", "--timeout", "0s"}, &out, &errOut); code != 2 {
		t.Errorf("sgd demo --fleet --timeout 0s = exit %d; want 2", code)
	}
}
