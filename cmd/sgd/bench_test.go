package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBenchSmoke runs the benchmark with tiny durations over every direct path with 0
// and 100 rules in front: it must build the lab, check that each filtering path enforces
// the policy and holds its rules (the 100 included), print the scale tables with a value
// for every path, the bars, and write the JSON and the plot. The figures themselves mean
// nothing here (the machine is busy with the tests).
func TestBenchSmoke(t *testing.T) {
	bin := labBinary(t, "iptables-restore", "iperf3")
	_, ipsetErr := exec.LookPath("ipset")
	dir := t.TempDir()
	jsonPath, plotPath := filepath.Join(dir, "bench.json"), filepath.Join(dir, "bench.svg")
	start := time.Now()
	stdout, stderr, code, pid := runLab(t, bin, 120*time.Second, "bench", "--duration", "300ms", "--repeat", "1", "--rules", "100,0",
		"--seed", "7", "--json", jsonPath, "--plot", plotPath)
	defer checkNoLeftovers(t, "sgd-bench", pid)
	if code != 0 {
		t.Fatalf("sgd bench exit code = %d; want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	t.Logf("sgd bench took %s", time.Since(start).Round(time.Second))
	paths := []string{"raw", "kernel", "kernel+ipset", "sgd", "sgd-userspace"}
	if ipsetErr != nil {
		paths = slices.DeleteFunc(paths, func(p string) bool { return p == "kernel+ipset" })
		t.Logf("ipset is not installed: the kernel+ipset path is skipped")
	}
	// Each filtering path was checked with its rules in front before it was measured.
	checkProgress(t, stderr, ipsetErr == nil,
		"check raw: tcp/5203 connects, tcp/5209 refused",
		"check kernel: tcp/5203 connects, tcp/5209 dropped silently; 5 rules in INPUT",
		"check kernel@100: tcp/5203 connects, tcp/5209 dropped silently; 105 rules in INPUT",
		"check kernel+ipset@100: tcp/5203 connects, tcp/5209 dropped silently; 3 rules in INPUT, 103 entries in ipset sgd-bench",
		"check sgd@100: tcp/5203 connects, tcp/5209 dropped silently; sgd started with 105 rules",
		"check sgd-userspace@100: tcp/5203 connects, tcp/5209 dropped silently; sgd started with 105 rules, fast_path false",
		"order shuffled per repeat, seed 7")
	// One table per figure, a column per rule count, a row per path.
	for _, fig := range []string{"TCP bulk, 1 stream (Gbit/s)", "UDP 64 B datagrams delivered (k/s)", "new TCP connections (/s)"} {
		_, block, ok := strings.Cut(stdout, fig+", by non-matching rules in front:\n")
		if !ok {
			t.Errorf("no table for %s:\n%s", fig, stdout)
			continue
		}
		block, _, _ = strings.Cut(block, "\n\n")
		lines := strings.Split(block, "\n")
		if h := strings.Fields(lines[0]); !slices.Equal(h, []string{"N=0", "N=100"}) {
			t.Errorf("%s: header %q; want N=0 N=100", fig, h)
		}
		for _, p := range paths {
			row := rowOf(lines, p)
			want := 2
			if p == "raw" {
				want = 1 // no rules: once
			}
			if len(row) != want {
				t.Errorf("%s: row %s = %q; want %d measured values\n%s", fig, p, row, want, block)
			}
			for _, v := range row {
				if v == "-" || v == "0" || v == "0.00" {
					t.Errorf("%s: row %s = %q; want measured values", fig, p, row)
				}
			}
		}
		if row := rowOf(lines, "sgd/kernel"); len(row) != 2 {
			t.Errorf("%s: row sgd/kernel = %q; want two ratios", fig, row)
		}
	}
	for _, want := range []string{"SPEC 3.1 bars", "sgd ≥ 0.95 × kernel", "sgd-userspace ≥ 0.9 / 0.6 / 0.8 × kernel", "bars hold (the at-scale bars need --rules 0,990)",
		"sgd's own counters", "sgd: `sgd run` in its default mode (this build started with fast_path"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatalf("--json file: %v", err)
	}
	var rep struct {
		Seed    uint64
		Rules   []int
		Samples []struct {
			Path, Figure string
			Rules        int
		}
		Stats   []struct{ Path string }
		Machine struct{ NProc int }
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("--json file does not parse: %v", err)
	}
	sessions := 1 + 2*(len(paths)-1) // raw once, the others at 0 and 100
	if len(rep.Samples) != 3*sessions || len(rep.Stats) != 3*sessions || rep.Machine.NProc == 0 || rep.Seed != 7 || !slices.Equal(rep.Rules, []int{0, 100}) {
		t.Errorf("--json: %d samples and %d stats (want %d each), nproc %d, seed %d, rules %v", len(rep.Samples), len(rep.Stats), 3*sessions, rep.Machine.NProc, rep.Seed, rep.Rules)
	}
	svg, err := os.ReadFile(plotPath)
	if err != nil {
		t.Fatalf("--plot file: %v", err)
	}
	texts := svgTexts(t, svg)
	for _, p := range paths {
		if !slices.Contains(texts, p) {
			t.Errorf("the plot names no %s", p)
		}
	}
}

// checkProgress checks that the progress has each line; the ipset paths' only when ipset
// is installed (without it they are skipped).
func checkProgress(t *testing.T, progress string, ipset bool, want ...string) {
	t.Helper()
	for _, w := range want {
		if strings.Contains(w, "ipset") && !ipset {
			continue
		}
		if !strings.Contains(progress, w) {
			t.Errorf("progress lacks %q:\n%s", w, progress)
		}
	}
}

// rowOf returns the cells after the label of the table line whose first cell is label.
func rowOf(lines []string, label string) []string {
	for _, line := range lines {
		f := regexp.MustCompile(` {2,}`).Split(strings.TrimSpace(line), -1)
		if len(f) > 0 && f[0] == label {
			return f[1:]
		}
	}
	return nil
}

// svgTexts parses an SVG strictly and returns its texts.
func svgTexts(t *testing.T, b []byte) []string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	var texts []string
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return texts
		}
		if err != nil {
			t.Fatalf("the plot is not well-formed XML: %v", err)
		}
		if cd, ok := tok.(xml.CharData); ok {
			if s := strings.TrimSpace(string(cd)); s != "" {
				texts = append(texts, s)
			}
		}
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
		{[]string{"bench", "--rules", "998"}, 2},
		{[]string{"bench", "--rules", "0,x"}, 2},
		{[]string{"bench", "--rules", "-1"}, 2},
		{[]string{"bench", "--rules", ""}, 2},
		{[]string{"bench", "--paths", "sgd-fastpath"}, 2},
		{[]string{"bench", "extra"}, 2},
	} {
		var out, errOut bytes.Buffer
		if got := dispatch(tc.args, &out, &errOut); got != tc.want {
			t.Errorf("dispatch(%q) = %d; want %d (stderr: %s)", tc.args, got, tc.want, errOut.String())
		}
	}
}

func TestParseCounts(t *testing.T) {
	got, err := parseCounts("990, 0,100,0", 997)
	if err != nil || !slices.Equal(got, []int{0, 100, 990}) {
		t.Errorf("parseCounts = %v, %v; want [0 100 990]", got, err)
	}
	if _, err := parseCounts("998", 997); err == nil || !strings.Contains(err.Error(), "at most 997") {
		t.Errorf("parseCounts(998) = %v; want at most 997", err)
	}
}

// TestBenchHelp: --help names every flag and path.
func TestBenchHelp(t *testing.T) {
	var out bytes.Buffer
	if code := dispatch([]string{"bench", "--help"}, &out, &out); code != 0 {
		t.Fatalf("bench --help = %d", code)
	}
	for _, want := range []string{"-duration", "-repeat", "-queues", "-rules", "-seed", "-json", "-plot", "-paths", "-forwarded", "-figures",
		"raw ", "kernel ", "kernel+ipset ", "sgd ", "sgd-userspace ", "fwd-raw", "fwd-kernel and fwd-kernel+ipset", "fwd-sgd and fwd-sgd-userspace",
		"--rules 0,100,990", "N ≤ 997", "--fast-path=false", "20 %"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bench --help lacks %q:\n%s", want, out.String())
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

// TestBenchForwardedSmoke runs the forwarded paths briefly (two figures, 200 ms, 100
// rules in front): the bridge lab builds, every forwarded filtering path enforces the
// policy with its rules, and the table has the forwarded ratios. The figures mean
// nothing here.
func TestBenchForwardedSmoke(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/bridge"); err != nil {
		t.Skip("br_netfilter is not loaded")
	}
	bin := labBinary(t, "iptables-restore")
	_, ipsetErr := exec.LookPath("ipset")
	stdout, stderr, code, pid := runLab(t, bin, 90*time.Second, "bench", "--paths", "fwd-raw,fwd-kernel,fwd-kernel+ipset,fwd-sgd,fwd-sgd-userspace",
		"--figures", "udp,conn", "--duration", "200ms", "--repeat", "1", "--rules", "100")
	defer checkNoLeftovers(t, "sgd-bench", pid)
	if code != 0 {
		t.Fatalf("sgd bench exit code = %d; want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"fwd-sgd/fwd-kernel", "fwd-sgd-userspace/fwd-kernel", "fwd-kernel/fwd-raw", "new TCP connections", "fwd-sgd@100 ",
		"with 100 non-matching rules in front of the policy's 3"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	checkProgress(t, stderr, ipsetErr == nil,
		"check fwd-kernel@100: tcp/5203 connects, tcp/5209 dropped silently; 107 rules in FORWARD",
		"check fwd-kernel+ipset@100: tcp/5203 connects, tcp/5209 dropped silently; 5 rules in FORWARD, 103 entries in ipset sgd-bench",
		"check fwd-sgd@100: tcp/5203 connects, tcp/5209 dropped silently; sgd started with",
		"check fwd-sgd-userspace@100: tcp/5203 connects, tcp/5209 dropped silently; sgd started with")
}
