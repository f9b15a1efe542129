package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
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
	bin := labBinary(t, "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save")
	pcaps := filepath.Join(t.TempDir(), "pcap")
	stdout, stderr, code, pid := runLab(t, bin, 90*time.Second, "demo", "--timeout", "2s", "--pcap", pcaps)
	defer checkNoLeftovers(t, demoPrefix, pid)
	if code != 0 {
		t.Errorf("sgd demo exit code = %d; want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "The instance itself has 0 firewall rules") {
		t.Errorf("demo output does not show the instance without rules of its own:\n%s", stdout)
	}
	for _, tc := range []struct {
		title string
		want  []string
	}{
		{"stranger → instance tcp/80 (HTTP)", []string{"connected in", "sgd explain at vinstance: ALLOW"}},
		{"stranger → instance tcp/443", []string{"connection refused in",
			"inside the instance: 1 packet of this flow reached its eth0, it sent 1", "← RST, ACK", "one RST, at once"}},
		{"stranger → instance tcp/22 (SSH)", []string{"timed out after 2 s", "sgd explain at vinstance: DENY",
			"inside the instance: 0 packets of this flow reached its eth0", "TCP InSegs in its /proc/net/snmp: +0",
			"→ SYN       192.0.2.99:", "retransmission 1", "nothing came back"}},
		{"client → instance tcp/22 (SSH)", []string{"connected in"}},
		{"member → instance tcp/22", []string{"connected in", "sgd explain at vmember: ALLOW — sg-mgmt egress",
			"sgd explain at vinstance: ALLOW — sg-web ingress[3] tcp/22 from sg-mgmt"}},
		{"client → instance ping", []string{"echo reply in"}},
		{"stranger → instance ping", []string{"no reply after 2 s", "inside the instance: 0 packets of this flow", "ICMP InMsgs in its /proc/net/snmp: +0"}},
		{"instance → client tcp/8080", []string{"connected in", "passed as part of the tracked flow"}},
	} {
		block := caseBlock(stdout, tc.title)
		if block == "" {
			t.Errorf("demo output has no case %q", tc.title)
			continue
		}
		for _, want := range append(tc.want, "✓", "pcap: "+pcaps) {
			if !strings.Contains(block, want) {
				t.Errorf("demo case %q:\n%s\nwant %q", tc.title, block, want)
			}
		}
	}
	cases := 9
	if block := caseBlock(stdout, "over IPv6"); block != "" {
		if !strings.Contains(block, "timed out after 2 s") || !strings.Contains(block, "0 packets of this flow reached") {
			t.Errorf("demo case IPv6:\n%s\nwant timed out, and nothing at the instance", block)
		}
	} else if strings.Contains(stderr, "no IPv6 here") {
		cases = 8
	} else {
		t.Errorf("demo output has no IPv6 case and does not say why")
	}
	if want := fmt.Sprintf("Summary: %d of %d cases behaved as an AWS Security Group would.", cases, cases); !strings.Contains(stdout, want) {
		t.Errorf("demo output lacks %q:\n%s", want, stdout)
	}

	// The pcapng of the blocked SSH case: the stranger's SYNs, retransmitted, on the
	// stranger's interface; nothing of them on the instance's.
	files, _ := filepath.Glob(filepath.Join(pcaps, "*.pcapng"))
	if len(files) != cases {
		t.Errorf("--pcap wrote %d files (%v); want %d", len(files), files, cases)
	}
	syns := readPcapSYNs(t, filepath.Join(pcaps, pcapName(3, "stranger → instance tcp/22 (SSH)")), demoStranger4, 22)
	if len(syns) != 2 || syns[0] < 2 || syns[1] != 0 {
		t.Errorf("SYNs to tcp/22 by interface in the SSH case's pcap = %v; want [≥2 0] (stranger's, instance's)", syns)
	}
}

// readPcapSYNs reads a pcapng file and counts, per interface, the SYNs from src to port.
func readPcapSYNs(t *testing.T, path string, src netip.Addr, port uint16) []int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var counts []int
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for len(counts) < r.NInterfaces() {
			counts = append(counts, 0)
		}
		if p, ok := decodeFrame(data); ok && p.syn && p.src == src && p.dport == port {
			counts[ci.InterfaceIndex]++
		}
	}
	for len(counts) < r.NInterfaces() {
		counts = append(counts, 0)
	}
	return counts
}

// Ctrl-C in the middle of a case stops the demo at once and leaves nothing behind.
func TestDemoInterrupted(t *testing.T) {
	bin := labBinary(t, "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save")
	cmd := exec.Command(bin, "demo", "--timeout", "5s")
	interruptAt(t, cmd, "stranger → instance tcp/22 (SSH)") // captures running
	checkNoLeftovers(t, demoPrefix, cmd.Process.Pid)
}

// interruptAt runs cmd, sends it SIGINT 500 ms after the first line of its output that
// contains marker (inside the case under way), and checks that it exits 130 saying it was
// interrupted; a cmd still running after 90 s is killed. It returns what cmd printed.
func interruptAt(t *testing.T, cmd *exec.Cmd, marker string) (stdout string) {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(90*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	var so strings.Builder
	sent := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		so.WriteString(sc.Text() + "\n")
		if !sent && strings.Contains(sc.Text(), marker) {
			sent = true
			time.Sleep(500 * time.Millisecond)
			_ = cmd.Process.Signal(os.Interrupt)
		}
	}
	err = cmd.Wait()
	name := strings.Join(cmd.Args[1:], " ")
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("sgd %s after SIGINT: exit %d (%v); want 130\nstdout:\n%s\nstderr:\n%s", name, code, err, so.String(), se.String())
	}
	if !strings.Contains(so.String(), "Interrupted") {
		t.Errorf("sgd %s after SIGINT does not say it was interrupted:\n%s", name, so.String())
	}
	return so.String()
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
