package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"time"
)

// Report is the result of Run: every sample, the medians with their spread, the ratios
// and the SPEC 3.1 bars. It is what --json writes.
type Report struct {
	Date     time.Time `json:"date"`
	Version  string    `json:"sgd_version,omitempty"`
	Machine  Machine   `json:"machine"`
	Duration float64   `json:"duration_seconds"`
	Repeat   int       `json:"repeat"`
	Queues   int       `json:"queues,omitempty"`
	// Seed is the seed of the measuring order (Options.Seed).
	Seed    uint64   `json:"seed"`
	Paths   []Path   `json:"paths"`
	Figures []Figure `json:"figures"`
	// Rules are the numbers of non-matching rules in front that were measured.
	Rules   []int    `json:"rules"`
	Samples []Sample `json:"samples"`
	// Stats are the median, lowest and highest sample per rule count, figure and path.
	Stats []Stat `json:"stats"`
	// Ratios are the ratios of medians (ratioPairs) with their spread within a repeat.
	Ratios []Ratio `json:"ratios"`
	Bars   []Bar   `json:"bars"`
	// Warnings say where the repeats disagree by more than DisagreeLimit.
	Warnings []string `json:"warnings,omitempty"`
	// SGD holds sgd's own counters per sgd path and rule count.
	SGD   []*SGDCounters `json:"sgd,omitempty"`
	Notes []string       `json:"notes,omitempty"`
}

// DisagreeLimit is the highest sample over the lowest beyond which the repeats of one
// path and figure are said to disagree: their median is then a rough figure.
const DisagreeLimit = 1.2

// Stat sums up the samples of one path and figure at one rule count. The raw paths have
// no rules: their Stat has Rules 0 and stands for every rule count.
type Stat struct {
	Path    Path    `json:"path"`
	Rules   int     `json:"rules"`
	Figure  Figure  `json:"figure"`
	Samples int     `json:"samples"`
	Median  float64 `json:"median"` // in Figure.Unit
	Min     float64 `json:"min"`
	Max     float64 `json:"max"`
	// Disagree is Max/Min > DisagreeLimit.
	Disagree bool `json:"disagree,omitempty"`
}

// Spread is Max/Min: 1 when the repeats agree exactly, +Inf when the lowest is zero.
func (s Stat) Spread() float64 {
	if s.Min <= 0 {
		if s.Max <= 0 {
			return 1
		}
		return math.Inf(1)
	}
	return s.Max / s.Min
}

// Ratio is one path's median over another's on one figure at one rule count, with the
// lowest and highest of the same ratio within each repeat (the two paths measured in the
// same round).
type Ratio struct {
	Name    string  `json:"name"` // "sgd/kernel"
	Num     Path    `json:"num"`
	Den     Path    `json:"den"`
	Rules   int     `json:"rules"`
	Figure  Figure  `json:"figure"`
	Value   float64 `json:"value"`
	Min     float64 `json:"min"`
	Max     float64 `json:"max"`
	Repeats int     `json:"repeats"` // repeats that measured both
}

// Bar is one SPEC 3.1 speed target: Path ≥ Target × Versus on Figure, with Rules
// non-matching rules in front.
type Bar struct {
	Rules  int     `json:"rules"`
	Figure Figure  `json:"figure"`
	Path   Path    `json:"path"`
	Versus Path    `json:"versus"`
	Target float64 `json:"target"`
	Ratio  float64 `json:"ratio"`
	Holds  bool    `json:"holds"`
}

// SGDCounters are sgd's own figures on one sgd path at one rule count, over all its runs.
type SGDCounters struct {
	Path  Path `json:"path"`
	Rules int  `json:"rules"`
	Runs  int  `json:"runs"`
	// Args are sgd's arguments (after the binary); FastPath is what sgd's "started" line
	// said of its fast path (nil when it did not say): which mode was measured.
	Args     []string `json:"args,omitempty"`
	FastPath *bool    `json:"fast_path,omitempty"`
	// CPUSeconds is the CPU time of the sgd processes from start to stop, summed over runs.
	CPUSeconds float64 `json:"cpu_seconds"`
	// Packets judged and dropped by reason, from sgd's metrics endpoint (summed over runs;
	// the policy check's probe accounts for a few no_rule drops per run).
	Packets      uint64            `json:"packets"`
	Dropped      map[string]uint64 `json:"dropped,omitempty"`
	MetricsError string            `json:"metrics_error,omitempty"`
	// TrackedAtStop is sgd's tracked-flow gauge by protocol just before it was stopped
	// (the largest over its runs).
	TrackedAtStop map[string]uint64 `json:"tracked_at_stop,omitempty"`
	// CPU is the median share of one CPU sgd used while each figure was measured (1 = one
	// core busy); QueueDrops the kernel's drops on its queues, summed over the repeats.
	CPU        map[Figure]float64 `json:"cpu"`
	SysCPU     map[Figure]float64 `json:"sys_cpu"` // the kernel's part of CPU
	QueueDrops map[Figure]uint64  `json:"queue_drops"`
}

// ratioPairs are the ratios computed, numerator over denominator, on the veth pair; the
// bridge has the same between its fwd- paths.
var ratioPairs = [][2]Path{
	{SGD, Kernel}, {SGD, KernelIPSet}, {SGDUserspace, Kernel}, {SGDUserspace, KernelIPSet},
	{SGDUntracked, SGD}, {SGDUntracked, Kernel},
	{KernelIPSet, Kernel}, {Kernel, Raw}, {SGD, Raw},
}

// ScaleBarRules is the number of rules in front SPEC 3.1's at-scale bars are stated for;
// a run with at least as many is held to them.
const ScaleBarRules = 990

// barSpecs are SPEC 3.1's speed bars: Path over Versus, with no rules in front or at
// scale (ScaleBarRules in front).
var barSpecs = []struct {
	scale        bool
	path, versus Path
	target       map[Figure]float64
}{
	{false, SGD, Kernel, map[Figure]float64{TCP: 0.95, UDP: 0.95, Conn: 0.95}},
	{false, SGDUserspace, Kernel, map[Figure]float64{TCP: 0.9, UDP: 0.6, Conn: 0.8}},
	{true, SGD, Kernel, map[Figure]float64{TCP: 1.1, UDP: 1.1, Conn: 1.1}},
	{true, SGD, KernelIPSet, map[Figure]float64{TCP: 0.95, UDP: 0.95, Conn: 0.95}},
}

func newReport(o Options) *Report {
	return &Report{Date: time.Now().UTC(), Version: o.Version, Machine: machine(), Duration: o.Duration.Seconds(),
		Repeat: o.Repeat, Queues: o.Queues, Seed: o.Seed, Paths: o.Paths, Figures: o.Figures, Rules: o.Rules}
}

// sgdCounters returns the counters of sgd path p with n rules in front, made on first use.
func (r *Report) sgdCounters(p Path, n int) *SGDCounters {
	for _, c := range r.SGD {
		if c.Path == p && c.Rules == n {
			return c
		}
	}
	c := &SGDCounters{Path: p, Rules: n, CPU: map[Figure]float64{}, SysCPU: map[Figure]float64{}, QueueDrops: map[Figure]uint64{}}
	r.SGD = append(r.SGD, c)
	return c
}

// ruleCount is the rule count a path's samples are recorded under for n rules in front:
// n, or 0 for the paths without rules.
func ruleCount(p Path, n int) int {
	if !p.filters() {
		return 0
	}
	return n
}

// Stat returns the Stat of path p on figure f with n rules in front.
func (r *Report) Stat(n int, f Figure, p Path) (Stat, bool) {
	n = ruleCount(p, n)
	for _, s := range r.Stats {
		if s.Rules == n && s.Figure == f && s.Path == p {
			return s, true
		}
	}
	return Stat{}, false
}

// Ratio returns the ratio named name ("sgd/kernel") on figure f with n rules in front.
func (r *Report) Ratio(n int, f Figure, name string) (Ratio, bool) {
	for _, q := range r.Ratios {
		if q.Rules == n && q.Figure == f && q.Name == name {
			return q, true
		}
	}
	return Ratio{}, false
}

// finish computes the stats, ratios, bars, warnings and sgd's per-figure usage from the
// samples.
func (r *Report) finish() {
	r.Stats, r.Ratios, r.Bars, r.Warnings = nil, nil, nil, nil
	for _, f := range r.Figures {
		for _, p := range r.Paths {
			counts := r.Rules
			if !p.filters() {
				counts = []int{0} // no rules: once, under 0
			}
			for _, n := range counts {
				if s, ok := r.stat(n, f, p); ok {
					r.Stats = append(r.Stats, s)
					if s.Disagree {
						r.Warnings = append(r.Warnings, disagreement(s))
					}
				}
			}
		}
	}
	for _, n := range r.Rules {
		for _, f := range r.Figures {
			for _, fwd := range []bool{false, true} {
				for _, pair := range ratioPairs {
					if q, ok := r.ratio(n, f, pair[0].fwd(fwd), pair[1].fwd(fwd)); ok {
						r.Ratios = append(r.Ratios, q)
					}
				}
			}
			for _, spec := range barSpecs {
				if spec.scale != (n >= ScaleBarRules) || (!spec.scale && n != 0) {
					continue
				}
				if q, ok := r.Ratio(n, f, ratioName(spec.path, spec.versus)); ok {
					t := spec.target[f]
					r.Bars = append(r.Bars, Bar{Rules: n, Figure: f, Path: spec.path, Versus: spec.versus, Target: t, Ratio: q.Value, Holds: q.Value >= t})
				}
			}
		}
	}
	for _, c := range r.SGD {
		clear(c.QueueDrops)
		for _, f := range r.Figures {
			var cpu, sys []float64
			for _, s := range r.Samples {
				if s.Path == c.Path && s.Rules == c.Rules && s.Figure == f && s.Seconds > 0 {
					cpu = append(cpu, s.SGDCPUSeconds/s.Seconds)
					sys = append(sys, s.SGDSysSeconds/s.Seconds)
					c.QueueDrops[f] += s.QueueDrops
				}
			}
			if len(cpu) > 0 {
				c.CPU[f], c.SysCPU[f] = median(cpu), median(sys)
			}
		}
	}
}

// stat sums up the samples of p on f recorded under n rules.
func (r *Report) stat(n int, f Figure, p Path) (Stat, bool) {
	var vs []float64
	for _, s := range r.Samples {
		if s.Rules == n && s.Figure == f && s.Path == p {
			vs = append(vs, s.Value)
		}
	}
	if len(vs) == 0 {
		return Stat{}, false
	}
	s := Stat{Path: p, Rules: n, Figure: f, Samples: len(vs), Median: median(vs), Min: slices.Min(vs), Max: slices.Max(vs)}
	s.Disagree = len(vs) > 1 && s.Spread() > DisagreeLimit
	return s, true
}

// disagreement is the warning for a Stat whose repeats disagree.
func disagreement(s Stat) string {
	at := ""
	if s.Rules > 0 {
		at = " with " + inFront(s.Rules)
	}
	by := "∞"
	if sp := s.Spread(); !math.IsInf(sp, 1) {
		by = fmt.Sprintf("%.0f %%", 100*(sp-1))
	}
	return fmt.Sprintf("%s %s%s: the %d repeats disagree by %s (%s–%s, median %s): read its median and ratios as rough",
		s.Path, s.Figure, at, s.Samples, by, formatValue(s.Figure, s.Min), formatValue(s.Figure, s.Max), formatValue(s.Figure, s.Median))
}

// inFront is "no rules in front", "100 rules in front".
func inFront(n int) string {
	if n == 0 {
		return "no rules in front"
	}
	return plural(n, "rule") + " in front"
}

func ratioName(num, den Path) string { return string(num) + "/" + string(den) }

// ratio is num's median over den's on f with n rules in front, with the spread of the
// same ratio within each repeat.
func (r *Report) ratio(n int, f Figure, num, den Path) (Ratio, bool) {
	a, okA := r.Stat(n, f, num)
	b, okB := r.Stat(n, f, den)
	if !okA || !okB || b.Median <= 0 {
		return Ratio{}, false
	}
	q := Ratio{Name: ratioName(num, den), Num: num, Den: den, Rules: n, Figure: f, Value: a.Median / b.Median}
	if rs := r.repeatRatios(n, f, num, den); len(rs) > 0 {
		q.Min, q.Max, q.Repeats = rs[0], rs[len(rs)-1], len(rs)
	}
	return q, true
}

// repeatRatios returns, sorted, for each repeat that measured both num and den on f with
// n rules in front, the ratio of their samples.
func (r *Report) repeatRatios(n int, f Figure, num, den Path) []float64 {
	nn, nd := ruleCount(num, n), ruleCount(den, n)
	a, b := map[int]float64{}, map[int]float64{}
	for _, s := range r.Samples {
		if s.Figure != f {
			continue
		}
		if s.Path == num && s.Rules == nn {
			a[s.Repeat] = s.Value
		}
		if s.Path == den && s.Rules == nd {
			b[s.Repeat] = s.Value
		}
	}
	var out []float64
	for rep, x := range a {
		if y, ok := b[rep]; ok && y > 0 {
			out = append(out, x/y)
		}
	}
	slices.Sort(out)
	return out
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// WriteJSON writes the report, indented, to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
