package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs the benchmark with tiny durations: it must build the lab, enforce
// the policy on every path, and print a row for each figure with a value for raw, kernel
// and sgd. The figures themselves mean nothing here (the machine is busy with the tests).
func TestBenchSmoke(t *testing.T) {
	bin := labBinary(t, "iptables-restore", "iperf3")
	jsonPath := filepath.Join(t.TempDir(), "bench.json")
	stdout, stderr, code, pid := runLab(t, bin, 120*time.Second, "bench", "--duration", "1s", "--repeat", "1", "--json", jsonPath)
	defer checkNoLeftovers(t, "sgd-bench", pid)
	if code != 0 {
		t.Fatalf("sgd bench exit code = %d; want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var header []string
	rows := map[string][]string{}
	for _, line := range strings.Split(stdout, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "figure":
			header = f[1:]
		case strings.HasPrefix(line, "TCP bulk"), strings.HasPrefix(line, "UDP 64 B"), strings.HasPrefix(line, "new TCP connections"):
			_, values, _ := strings.Cut(line, ")")
			rows[strings.Fields(line)[0]] = strings.Fields(values)
		}
	}
	for i, want := range []string{"raw", "kernel", "sgd", "sgd-fastpath", "sgd/kernel", "sgd/raw"} {
		if i >= len(header) || header[i] != want {
			t.Fatalf("table header = %v; want it to start with raw kernel sgd sgd-fastpath sgd/kernel sgd/raw\n%s", header, stdout)
		}
	}
	for _, fig := range []string{"TCP", "UDP", "new"} {
		vals := rows[fig]
		if len(vals) != len(header) {
			t.Errorf("row %q = %v; want %d values\n%s", fig, vals, len(header), stdout)
			continue
		}
		for i, v := range vals[:3] {
			if v == "-" || v == "0" || v == "0.00" {
				t.Errorf("row %q, path %s = %q; want a measured value", fig, header[i], v)
			}
		}
	}
	for _, want := range []string{"SPEC 3.1 bars", "sgd ≥ 0.9 × kernel", "sgd's own counters"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatalf("--json file: %v", err)
	}
	var rep struct {
		Samples []struct{ Path, Figure string }
		Medians map[string]map[string]float64
		Machine struct{ NProc int }
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("--json file does not parse: %v", err)
	}
	if len(rep.Samples) != 12 || rep.Machine.NProc == 0 || len(rep.Medians) != 3 {
		t.Errorf("--json: %d samples (want 12), nproc %d, %d figures of medians (want 3)", len(rep.Samples), rep.Machine.NProc, len(rep.Medians))
	}
}

func TestBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"bench", "--help"}, 0},
		{[]string{"bench", "--repeat", "0"}, 2},
		{[]string{"bench", "--paths", "raw,nope"}, 2},
		{[]string{"bench", "--forwarded", "--repeat", "0"}, 2},
		{[]string{"bench", "--figures", ""}, 2},
		{[]string{"bench", "extra"}, 2},
	} {
		var out, errOut bytes.Buffer
		if got := dispatch(tc.args, &out, &errOut); got != tc.want {
			t.Errorf("dispatch(%q) = %d; want %d (stderr: %s)", tc.args, got, tc.want, errOut.String())
		}
	}
}

func TestParseList(t *testing.T) {
	all := []string{"raw", "kernel", "sgd"}
	got, err := parseList("sgd, raw", all)
	if err != nil || strings.Join(got, ",") != "raw,sgd" {
		t.Errorf("parseList(%q) = %v, %v; want [raw sgd] (in the canonical order)", "sgd, raw", got, err)
	}
	if _, err := parseList("raw,x", all); err == nil {
		t.Errorf("parseList(%q) = nil error; want an error", "raw,x")
	}
}

// TestBenchForwardedSmoke runs the forwarded paths briefly (two figures, 300 ms): the
// bridge lab builds, fwd-kernel and fwd-sgd enforce the policy, and the table has the
// forwarded ratios. The figures mean nothing here.
func TestBenchForwardedSmoke(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/bridge"); err != nil {
		t.Skip("br_netfilter is not loaded")
	}
	bin := labBinary(t, "iptables-restore")
	stdout, stderr, code, pid := runLab(t, bin, 90*time.Second, "bench", "--paths", "fwd-raw,fwd-kernel,fwd-sgd",
		"--figures", "udp,conn", "--duration", "300ms", "--repeat", "1")
	defer checkNoLeftovers(t, "sgd-bench", pid)
	if code != 0 {
		t.Fatalf("sgd bench exit code = %d; want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"fwd-sgd/fwd-kernel", "fwd-kernel/fwd-raw", "new TCP connections", "fwd-sgd "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}
