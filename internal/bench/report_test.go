package bench

import (
	"bytes"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v; want %v", tc.in, got, tc.want)
		}
	}
}

// sample is one measurement of p on f in repeat rep with n rules in front.
func sample(p Path, n int, f Figure, rep int, v float64) Sample {
	return Sample{Path: p, Rules: n, Figure: f, Repeat: rep, Value: v, Seconds: 1}
}

// report is a finished report over paths, figures and rule counts with samples.
func report(paths []Path, figs []Figure, counts []int, repeat int, samples ...Sample) *Report {
	r := newReport(Options{Duration: 2 * time.Second, Repeat: repeat, Paths: paths, Figures: figs, Rules: counts, Seed: 42})
	r.Samples = samples
	r.finish()
	return r
}

// repeats returns the samples of p on f with n in front, one per value, repeats 1, 2, ...
func repeats(p Path, n int, f Figure, vs ...float64) []Sample {
	var out []Sample
	for i, v := range vs {
		out = append(out, sample(p, n, f, i+1, v))
	}
	return out
}

func table(r *Report) string {
	var b bytes.Buffer
	r.WriteTable(&b)
	return b.String()
}

var columnGap = regexp.MustCompile(` {2,}`)

// rows returns the table rows of out as their cells (the columns are apart by two spaces
// or more).
func rows(out string) [][]string {
	var rs [][]string
	for _, line := range strings.Split(out, "\n") {
		rs = append(rs, columnGap.Split(strings.TrimSpace(line), -1))
	}
	return rs
}

// checkRows checks that out has each row, given as its cells.
func checkRows(t *testing.T, out string, want ...[]string) {
	t.Helper()
	rs := rows(out)
	for _, w := range want {
		if !slices.ContainsFunc(rs, func(r []string) bool { return slices.Equal(r, w) }) {
			t.Errorf("no row %q in\n%s", w, out)
		}
	}
}

func TestStatSpreadAndWarnings(t *testing.T) {
	var ss []Sample
	ss = append(ss, repeats(Raw, 0, UDP, 100e3, 110e3, 120e3)...)    // 1.2 exactly: agrees
	ss = append(ss, repeats(Kernel, 0, UDP, 100e3, 130e3, 121e3)...) // 1.3: disagrees
	ss = append(ss, repeats(SGD, 0, UDP, 0, 50e3, 60e3)...)          // a zero: disagrees, without bound
	r := report([]Path{Raw, Kernel, SGD}, []Figure{UDP}, []int{0}, 3, ss...)

	for _, tc := range []struct {
		p              Path
		median, lo, hi float64
		spread         float64
		disagree       bool
	}{
		{Raw, 110e3, 100e3, 120e3, 1.2, false},
		{Kernel, 121e3, 100e3, 130e3, 1.3, true},
		{SGD, 50e3, 0, 60e3, math.Inf(1), true},
	} {
		s, ok := r.Stat(0, UDP, tc.p)
		if !ok || s.Median != tc.median || s.Min != tc.lo || s.Max != tc.hi || s.Samples != 3 || s.Disagree != tc.disagree {
			t.Errorf("Stat(%s) = %+v, %v; want median %v, %v–%v of 3, disagree %v", tc.p, s, ok, tc.median, tc.lo, tc.hi, tc.disagree)
		}
		if got := s.Spread(); math.Abs(got-tc.spread) > 1e-9 && !(math.IsInf(got, 1) && math.IsInf(tc.spread, 1)) {
			t.Errorf("Stat(%s).Spread() = %v; want %v", tc.p, got, tc.spread)
		}
	}
	if len(r.Warnings) != 2 || !strings.Contains(r.Warnings[0], "kernel udp: the 3 repeats disagree by 30 % (100 k/s–130 k/s, median 121 k/s)") ||
		!strings.Contains(r.Warnings[1], "sgd udp: the 3 repeats disagree by ∞") {
		t.Errorf("Warnings = %q; want kernel's by 30 %% and sgd's", r.Warnings)
	}
	out := table(r)
	checkRows(t, out, []string{"raw", "110 (100–120)"}, []string{"kernel", "121 (100–130) !"}, []string{"sgd", "50.0 (0.00–60.0) !"},
		[]string{"kernel/raw", "1.10 (1.00–1.18)"})
	for _, want := range []string{
		"warning !: in 2 of 3 cells the repeats disagree by more than 20 % (highest/lowest > 1.2)",
		"\n  udp  kernel 30 %, sgd ∞\n",
		"seed 42 (--seed 42 repeats the order)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("WriteTable() lacks %q:\n%s", want, out)
		}
	}
	// One repeat: no spread, no warning.
	r = report([]Path{Kernel}, []Figure{UDP}, []int{0}, 1, sample(Kernel, 0, UDP, 1, 100e3))
	if s, _ := r.Stat(0, UDP, Kernel); s.Disagree || len(r.Warnings) != 0 || statCell(s) != "100" {
		t.Errorf("one repeat: Stat %+v, warnings %q, cell %q; want no spread", s, r.Warnings, statCell(s))
	}
}

func TestRatiosAndBars(t *testing.T) {
	paths := DefaultPaths
	var ss []Sample
	add := func(p Path, n int, f Figure, vs ...float64) { ss = append(ss, repeats(p, n, f, vs...)...) }
	// No rules in front: sgd at 0.96 × kernel on TCP (holds 0.95), 0.90 on UDP (fails),
	// sgd-userspace 0.95 on TCP (holds 0.9), 0.55 on UDP (fails 0.6).
	add(Raw, 0, TCP, 20e9, 20e9, 20e9)
	add(Kernel, 0, TCP, 9e9, 10e9, 11e9)
	add(KernelIPSet, 0, TCP, 10e9, 10e9, 10e9)
	add(SGD, 0, TCP, 9.6e9, 9.6e9, 9.6e9)
	add(SGDUserspace, 0, TCP, 9.5e9, 9.5e9, 9.5e9)
	add(Kernel, 0, UDP, 100e3, 100e3, 100e3)
	add(SGD, 0, UDP, 90e3, 90e3, 90e3)
	add(SGDUserspace, 0, UDP, 55e3, 55e3, 55e3)
	// 990 in front: sgd 1.2 × the linear chain (holds 1.1), 0.9 × the set (fails 0.95).
	add(Kernel, 990, TCP, 8e9, 8e9, 8e9)
	add(KernelIPSet, 990, TCP, 9.6e9/0.9, 9.6e9/0.9, 9.6e9/0.9)
	add(SGD, 990, TCP, 9.6e9, 9.6e9, 9.6e9)
	// 100 in front: ratios, no bars.
	add(Kernel, 100, TCP, 9e9, 9e9, 9e9)
	add(SGD, 100, TCP, 9e9, 9e9, 9e9)
	r := report(paths, []Figure{TCP, UDP}, []int{0, 100, 990}, 3, ss...)

	for _, tc := range []struct {
		n      int
		f      Figure
		name   string
		want   float64
		lo, hi float64
	}{
		{0, TCP, "sgd/kernel", 0.96, 9.6 / 11, 9.6 / 9},
		{0, TCP, "kernel/raw", 0.5, 9.0 / 20, 11.0 / 20},
		{0, TCP, "sgd/kernel+ipset", 0.96, 0.96, 0.96},
		{0, TCP, "sgd-userspace/kernel", 0.95, 9.5 / 11, 9.5 / 9},
		{0, UDP, "sgd/kernel", 0.9, 0.9, 0.9},
		{990, TCP, "sgd/kernel", 1.2, 1.2, 1.2},
		{990, TCP, "sgd/kernel+ipset", 0.9, 0.9, 0.9},
		{990, TCP, "kernel/raw", 0.4, 0.4, 0.4}, // raw has no rules: the same raw at every N
		{100, TCP, "sgd/kernel", 1, 1, 1},
	} {
		q, ok := r.Ratio(tc.n, tc.f, tc.name)
		if !ok || math.Abs(q.Value-tc.want) > 1e-9 || math.Abs(q.Min-tc.lo) > 1e-9 || math.Abs(q.Max-tc.hi) > 1e-9 || q.Repeats != 3 {
			t.Errorf("Ratio(%d, %s, %s) = %+v, %v; want %v (%v–%v) over 3 repeats", tc.n, tc.f, tc.name, q, ok, tc.want, tc.lo, tc.hi)
		}
	}
	// Without 0 among the rule counts, raw is still there (its samples are under 0).
	r100 := report(paths, []Figure{TCP}, []int{100}, 3, ss...)
	if q, ok := r100.Ratio(100, TCP, "kernel/raw"); !ok || math.Abs(q.Value-0.45) > 1e-9 {
		t.Errorf("run of 100 only: Ratio(kernel/raw) = %+v, %v; want 0.45", q, ok)
	}
	checkRows(t, table(r100), []string{"raw", "20.0 (20.0–20.0)"})
	if _, ok := r.Ratio(0, UDP, "sgd/raw"); ok {
		t.Errorf("Ratio(udp, sgd/raw) present without a raw sample")
	}

	type key struct {
		n     int
		f     Figure
		p, vs Path
	}
	got := map[key]Bar{}
	for _, b := range r.Bars {
		got[key{b.Rules, b.Figure, b.Path, b.Versus}] = b
	}
	for _, tc := range []struct {
		k      key
		target float64
		holds  bool
	}{
		{key{0, TCP, SGD, Kernel}, 0.95, true},
		{key{0, UDP, SGD, Kernel}, 0.95, false},
		{key{0, TCP, SGDUserspace, Kernel}, 0.9, true},
		{key{0, UDP, SGDUserspace, Kernel}, 0.6, false},
		{key{990, TCP, SGD, Kernel}, 1.1, true},
		{key{990, TCP, SGD, KernelIPSet}, 0.95, false},
	} {
		b, ok := got[tc.k]
		if !ok || b.Target != tc.target || b.Holds != tc.holds {
			t.Errorf("bar %+v = %+v, %v; want target %v, holds %v", tc.k, b, ok, tc.target, tc.holds)
		}
	}
	if len(r.Bars) != 6 {
		t.Errorf("%d bars; want 6 (none at 100 rules in front, none for sgd-userspace at scale):\n%+v", len(r.Bars), r.Bars)
	}

	out := table(r)
	tcp, _, _ := strings.Cut(out, "UDP 64 B datagrams delivered (k/s), by")
	checkRows(t, tcp, []string{"N=0", "N=100", "N=990"},
		[]string{"raw", "20.0 (20.0–20.0)"}, // once, under the first N
		[]string{"kernel", "10.0 (9.00–11.0) !", "9.00 (9.00–9.00)", "8.00 (8.00–8.00)"},
		[]string{"sgd/kernel", "0.96 (0.87–1.07)", "1.00 (1.00–1.00)", "1.20 (1.20–1.20)"},
		[]string{"sgd-userspace/kernel", "0.95 (0.86–1.06)", "-", "-"})
	checkRows(t, out,
		[]string{"no rules in front", "sgd ≥ 0.95 × kernel", "0.96 holds", "0.90 FAILS by 0.05"},
		[]string{"no rules in front", "sgd-userspace ≥ 0.9 / 0.6 × kernel", "0.95 holds", "0.55 FAILS by 0.05"},
		[]string{"990 rules in front", "sgd ≥ 1.1 × kernel", "1.20 holds", "-"},
		[]string{"990 rules in front", "sgd ≥ 0.95 × kernel+ipset", "0.90 FAILS by 0.05", "-"})
	for _, want := range []string{
		"TCP bulk, 1 stream (Gbit/s), by non-matching rules in front:\n",
		"(the raw paths have no rules: measured once per repeat, shown under N=0)",
		"3 of 6 bars hold\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("WriteTable() lacks %q:\n%s", want, out)
		}
	}
}

func TestBarRoundingIsNotMisleading(t *testing.T) {
	r := report([]Path{Kernel, SGD}, []Figure{Conn}, []int{0}, 1, sample(Kernel, 0, Conn, 1, 8000), sample(SGD, 0, Conn, 1, 7598)) // 0.94975
	if out := table(r); !strings.Contains(out, "0.9497 FAILS by 0.0002") {
		t.Errorf("WriteTable() should print 0.9497 FAILS by 0.0002, not 0.95 FAILS:\n%s", out)
	}
	for _, tc := range []struct {
		b    Bar
		want string
	}{
		{Bar{Target: 0.95, Ratio: 0.9}, "0.90 FAILS by 0.05"},
		{Bar{Target: 0.95, Ratio: 0.95, Holds: true}, "0.95 holds"},
		{Bar{Target: 0.8, Ratio: 0.796}, "0.796 FAILS by 0.004"},
		{Bar{Target: 1.1, Ratio: 0.7, Holds: false}, "0.70 FAILS by 0.40"},
	} {
		if got := barCell(tc.b); got != tc.want {
			t.Errorf("barCell(%+v) = %q; want %q", tc.b, got, tc.want)
		}
	}
}

func TestSGDCountersPerRuleCount(t *testing.T) {
	r := newReport(Options{Duration: time.Second, Repeat: 2, Paths: []Path{SGD}, Figures: []Figure{TCP}, Rules: []int{0, 100}, Seed: 1})
	off := false
	for _, n := range []int{0, 100} {
		c := r.sgdCounters(SGD, n)
		c.Runs, c.FastPath = 2, &off
		for rep := 1; rep <= 2; rep++ {
			s := sample(SGD, n, TCP, rep, 1e9)
			s.SGDCPUSeconds, s.SGDSysSeconds, s.QueueDrops = 0.5+float64(n)/1000, 0.25, 3
			r.Samples = append(r.Samples, s)
		}
	}
	if r.sgdCounters(SGD, 100) != r.SGD[1] || len(r.SGD) != 2 {
		t.Fatalf("sgdCounters does not keep one per path and rule count: %d", len(r.SGD))
	}
	r.finish()
	if c := r.SGD[1]; c.CPU[TCP] != 0.6 || c.SysCPU[TCP] != 0.25 || c.QueueDrops[TCP] != 6 {
		t.Errorf("sgd@100 CPU %v, sys %v, drops %v; want 0.6, 0.25, 6", c.CPU[TCP], c.SysCPU[TCP], c.QueueDrops[TCP])
	}
	out := table(r)
	for _, want := range []string{"sgd@100  tcp CPU 60% (kernel 25%), drops 6", "judged 0 packets in 2 runs",
		"fast_path false: every packet through the queue"} {
		if !strings.Contains(out, want) {
			t.Errorf("WriteTable() lacks %q:\n%s", want, out)
		}
	}
}

func TestForwardedRatios(t *testing.T) {
	var ss []Sample
	for i, p := range ForwardedPaths {
		ss = append(ss, repeats(p, 0, UDP, [][2]float64{{200e3, 300e3}, {100e3, 120e3}, {90e3, 90e3}, {50e3, 90e3}, {40e3, 40e3}}[i][:]...)...)
	}
	r := report(ForwardedPaths, []Figure{UDP}, []int{0}, 2, ss...)
	for _, tc := range []struct {
		name   string
		want   float64
		lo, hi float64
	}{
		{"fwd-sgd/fwd-kernel", 70.0 / 110, 0.5, 0.75},
		{"fwd-sgd/fwd-kernel+ipset", 70.0 / 90, 50.0 / 90, 1},
		{"fwd-sgd-userspace/fwd-kernel", 40.0 / 110, 40.0 / 120, 0.4},
		{"fwd-kernel/fwd-raw", 110.0 / 250, 0.4, 0.5},
	} {
		q, ok := r.Ratio(0, UDP, tc.name)
		if !ok || math.Abs(q.Value-tc.want) > 1e-9 || math.Abs(q.Min-tc.lo) > 1e-9 || math.Abs(q.Max-tc.hi) > 1e-9 {
			t.Errorf("Ratio(%s) = %+v, %v; want %v (%v–%v)", tc.name, q, ok, tc.want, tc.lo, tc.hi)
		}
	}
	if len(r.Bars) != 0 {
		t.Errorf("Bars = %v; want none (SPEC 3.1's bars are the veth pair's)", r.Bars)
	}
	checkRows(t, table(r), []string{"fwd-sgd-userspace", "40.0 (40.0–40.0)"}, []string{"fwd-kernel+ipset", "90.0 (90.0–90.0)"},
		[]string{"fwd-sgd/fwd-kernel", "0.64 (0.50–0.75)"}, []string{"fwd-sgd", "70.0 (50.0–90.0) !"})
}

func TestSessions(t *testing.T) {
	got := sessions([]Path{Raw, Kernel, SGD, FwdRaw}, []int{0, 100})
	want := []session{{Raw, 0}, {Kernel, 0}, {Kernel, 100}, {SGD, 0}, {SGD, 100}, {FwdRaw, 0}}
	if !slices.Equal(got, want) {
		t.Errorf("sessions = %v; want %v", got, want)
	}
	if s := (session{Kernel, 100}).String(); s != "kernel@100" {
		t.Errorf("session.String() = %q", s)
	}
}

func TestOrders(t *testing.T) {
	for _, tc := range []struct{ n, repeats int }{{5, 3}, {5, 5}, {13, 3}, {3, 7}, {1, 2}} {
		os := orders(tc.n, tc.repeats, 12345)
		if len(os) != tc.repeats {
			t.Fatalf("orders(%d, %d) has %d repeats", tc.n, tc.repeats, len(os))
		}
		firsts := map[int]int{}
		for r, o := range os {
			sorted := slices.Sorted(slices.Values(o))
			for i, v := range sorted {
				if v != i {
					t.Fatalf("orders(%d, %d)[%d] = %v: not a permutation", tc.n, tc.repeats, r, o)
				}
			}
			firsts[o[0]]++
		}
		// No session first twice while there are sessions left that were not.
		if want := min(tc.n, tc.repeats); len(firsts) != want {
			t.Errorf("orders(%d, %d) starts with %v: %d different firsts; want %d", tc.n, tc.repeats, os, len(firsts), want)
		}
		if again := orders(tc.n, tc.repeats, 12345); !slices.EqualFunc(os, again, slices.Equal) {
			t.Errorf("orders(%d, %d, seed) differs between calls: %v, %v", tc.n, tc.repeats, os, again)
		}
	}
	a, b := orders(8, 3, 1), orders(8, 3, 2)
	if slices.EqualFunc(a, b, slices.Equal) {
		t.Errorf("orders with seeds 1 and 2 are the same: %v", a)
	}
	// Over many seeds every session comes first about as often: not a rotation that
	// favours one.
	count := make([]int, 5)
	for seed := uint64(1); seed <= 2000; seed++ {
		count[orders(5, 1, seed)[0][0]]++
	}
	for i, c := range count {
		if c < 300 || c > 500 {
			t.Errorf("session %d first in %d of 2000 seeded orders; want about 400: %v", i, c, count)
		}
	}
}

func TestProcCPUSeconds(t *testing.T) {
	user, sys, err := procCPU(os.Getpid())
	if err != nil || user < 0 || sys < 0 {
		t.Errorf("procCPU(self) = %v, %v, %v; want non-negative numbers", user, sys, err)
	}
	if _, _, err := procCPU(-1); err == nil {
		t.Errorf("procCPU(-1) = nil error; want an error")
	}
}

func TestQueueDropsParse(t *testing.T) {
	// Without NFQUEUE loaded the file may be missing; the parse is what is tested.
	path := t.TempDir() + "/q"
	if err := os.WriteFile(path, []byte("  100  1234     0 2   256     7     3    99  1\n  101  1235     2 2   256     1     0    12  1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := sumQueueDrops(path)
	if err != nil || got != 11 {
		t.Errorf("sumQueueDrops() = %d, %v; want 11", got, err)
	}
}
