package bench

import (
	"bytes"
	"math"
	"os"
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

func sample(p Path, f Figure, v float64) Sample {
	return Sample{Path: p, Figure: f, Value: v, Seconds: 1}
}

func TestFinishRatiosAndBars(t *testing.T) {
	r := newReport(Options{Duration: time.Second, Repeat: 3, Paths: AllPaths, Figures: AllFigures})
	r.Figures = AllFigures
	c := r.sgdCounters(SGD)
	c.Runs = 3
	for _, v := range []float64{10, 12, 11} {
		r.Samples = append(r.Samples, sample(Raw, TCP, v*1e9), sample(Kernel, TCP, v*1e9))
	}
	for _, v := range []float64{9, 10, 8} { // median 9: 9/11 = 0.82 < 0.9
		s := sample(SGD, TCP, v*1e9)
		s.SGDCPUSeconds, s.QueueDrops = 0.5, 2
		r.Samples = append(r.Samples, s)
	}
	r.Samples = append(r.Samples, sample(Kernel, UDP, 100e3), sample(SGD, UDP, 50e3)) // exactly 0.5: holds
	r.finish()

	if got := r.Medians[TCP][SGD]; got != 9e9 {
		t.Errorf("Medians[tcp][sgd] = %v; want 9e9", got)
	}
	for _, tc := range []struct {
		f    Figure
		key  string
		want float64
	}{
		{TCP, "sgd/kernel", 9.0 / 11},
		{TCP, "sgd/raw", 9.0 / 11},
		{TCP, "kernel/raw", 1},
		{UDP, "sgd/kernel", 0.5},
	} {
		if got := r.Ratios[tc.f][tc.key]; math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Ratios[%s][%s] = %v; want %v", tc.f, tc.key, got, tc.want)
		}
	}
	if _, ok := r.Ratios[UDP]["sgd/raw"]; ok {
		t.Errorf("Ratios[udp][sgd/raw] present without a raw sample")
	}
	holds := map[Figure]bool{}
	for _, b := range r.Bars {
		if b.Path == SGD {
			holds[b.Figure] = b.Holds
		}
	}
	if holds[TCP] || !holds[UDP] {
		t.Errorf("bars: tcp holds %v (want false at 0.82 < 0.9), udp holds %v (want true at 0.5)", holds[TCP], holds[UDP])
	}
	if got := c.CPU[TCP]; got != 0.5 {
		t.Errorf("SGD CPU[tcp] = %v; want 0.5", got)
	}
	if got := c.QueueDrops[TCP]; got != 6 {
		t.Errorf("SGD QueueDrops[tcp] = %v; want 6", got)
	}

	var out bytes.Buffer
	r.WriteTable(&out)
	for _, want := range []string{
		"TCP bulk, 1 stream (Gbit/s)", "11.0", "9.00", "0.82",
		"UDP 64 B datagrams delivered (k/s)", "sgd 0.82 FAILS", "sgd 0.50 holds",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("WriteTable() lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBarRoundingIsNotMisleading(t *testing.T) {
	r := newReport(Options{Duration: time.Second, Repeat: 1, Paths: []Path{Kernel, SGD}, Figures: []Figure{Conn}})
	r.Samples = []Sample{sample(Kernel, Conn, 8017), sample(SGD, Conn, 4000)} // 0.4989
	r.finish()
	var out bytes.Buffer
	r.WriteTable(&out)
	if !strings.Contains(out.String(), "sgd 0.499 FAILS") {
		t.Errorf("WriteTable() should print 0.499 FAILS, not 0.50 FAILS:\n%s", out.String())
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
	dir := t.TempDir()
	path := dir + "/q"
	if err := os.WriteFile(path, []byte("  100  1234     0 2   256     7     3    99  1\n  101  1235     2 2   256     1     0    12  1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := sumQueueDrops(path)
	if err != nil || got != 11 {
		t.Errorf("sumQueueDrops() = %d, %v; want 11", got, err)
	}
}

func TestForwardedRatiosAndSpread(t *testing.T) {
	r := newReport(Options{Duration: time.Second, Repeat: 2, Paths: ForwardedPaths, Figures: []Figure{UDP}})
	for rep, v := range [][3]float64{{200e3, 100e3, 50e3}, {300e3, 120e3, 90e3}} { // raw, kernel, sgd
		for i, p := range ForwardedPaths {
			s := sample(p, UDP, v[i])
			s.Repeat = rep + 1
			r.Samples = append(r.Samples, s)
		}
	}
	r.finish()
	for _, tc := range []struct {
		key    string
		want   float64
		lo, hi float64
	}{
		{"fwd-sgd/fwd-kernel", 70.0 / 110, 0.5, 0.75},
		{"fwd-sgd/fwd-raw", 70.0 / 250, 0.25, 0.3},
		{"fwd-kernel/fwd-raw", 110.0 / 250, 0.4, 0.5},
	} {
		if got := r.Ratios[UDP][tc.key]; math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Ratios[udp][%s] = %v; want %v", tc.key, got, tc.want)
		}
		if got := r.RatioSpread[UDP][tc.key]; math.Abs(got[0]-tc.lo) > 1e-9 || math.Abs(got[1]-tc.hi) > 1e-9 {
			t.Errorf("RatioSpread[udp][%s] = %v; want [%v %v]", tc.key, got, tc.lo, tc.hi)
		}
	}
	if got := r.Spread[UDP][FwdSGD]; got != [2]float64{50e3, 90e3} {
		t.Errorf("Spread[udp][fwd-sgd] = %v; want [50000 90000]", got)
	}
	if len(r.Bars) != 0 {
		t.Errorf("Bars = %v; want none (SPEC 3.1's bars are the veth pair's)", r.Bars)
	}
	var out bytes.Buffer
	r.WriteTable(&out)
	for _, want := range []string{
		"fwd-raw  fwd-kernel  fwd-sgd  fwd-sgd/fwd-kernel  fwd-sgd/fwd-raw  fwd-kernel/fwd-raw",
		"UDP 64 B datagrams delivered (k/s)      250         110     70.0                0.64             0.28                0.44",
		"spread over the 2 repeats",
		"fwd-sgd 50.0–90.0 · fwd-sgd/fwd-kernel 0.50–0.75",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("WriteTable() lacks %q:\n%s", want, out.String())
		}
	}
}
