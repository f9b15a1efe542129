package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Report is the result of Run: every sample, the medians, the ratios and the SPEC 3.1
// bars. It is what --json writes.
type Report struct {
	Date     time.Time `json:"date"`
	Version  string    `json:"sgd_version,omitempty"`
	Machine  Machine   `json:"machine"`
	Duration float64   `json:"duration_seconds"`
	Repeat   int       `json:"repeat"`
	Queues   int       `json:"queues,omitempty"`
	Paths    []Path    `json:"paths"`
	Figures  []Figure  `json:"figures"`
	Samples  []Sample  `json:"samples"`
	// Medians[figure][path], in Figure.Unit.
	Medians map[Figure]map[Path]float64 `json:"medians"`
	// Ratios[figure]["sgd/kernel"] and the like, of medians.
	Ratios map[Figure]map[string]float64 `json:"ratios"`
	// Spread[figure][path] is the lowest and highest sample; RatioSpread[figure]["sgd/kernel"]
	// the lowest and highest ratio within one repeat (the paths measured side by side).
	Spread      map[Figure]map[Path][2]float64   `json:"spread"`
	RatioSpread map[Figure]map[string][2]float64 `json:"ratio_spread"`
	Bars        []Bar                            `json:"bars"`
	// SGD holds sgd's own counters per sgd path.
	SGD   map[Path]*SGDCounters `json:"sgd,omitempty"`
	Notes []string              `json:"notes,omitempty"`
}

// SGDCounters are sgd's own figures on one of the sgd paths, over all its runs.
type SGDCounters struct {
	Runs int `json:"runs"`
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

// Bar is one SPEC 3.1 speed target: Path ≥ Target × kernel on Figure.
type Bar struct {
	Figure Figure  `json:"figure"`
	Path   Path    `json:"path"`
	Target float64 `json:"target"`
	Ratio  float64 `json:"ratio"`
	Holds  bool    `json:"holds"`
}

// ratioPairs are the ratios computed, numerator over denominator: each sgd path over the
// kernel and the raw path of its topology, and the kernel over raw.
var ratioPairs = [][2]Path{{SGD, Kernel}, {SGD, Raw}, {Kernel, Raw}, {SGDFastPath, Kernel}, {SGDFastPath, Raw},
	{FwdSGD, FwdKernel}, {FwdSGD, FwdRaw}, {FwdKernel, FwdRaw}}

// ratioColumns are the ratios the table shows, when measured.
var ratioColumns = []string{"sgd/kernel", "sgd/raw", "kernel/raw", "sgd-fastpath/kernel",
	"fwd-sgd/fwd-kernel", "fwd-sgd/fwd-raw", "fwd-kernel/fwd-raw"}

func ratioName(pair [2]Path) string { return string(pair[0]) + "/" + string(pair[1]) }

// barTargets are SPEC 3.1's bars: sgd's median over the kernel path's.
var barTargets = map[Figure]float64{TCP: 0.9, UDP: 0.5, Conn: 0.5}

func newReport(o Options) *Report {
	return &Report{Date: time.Now().UTC(), Version: o.Version, Machine: machine(), Duration: o.Duration.Seconds(),
		Repeat: o.Repeat, Queues: o.Queues, Paths: o.Paths, Figures: o.Figures}
}

func (r *Report) sgdCounters(p Path) *SGDCounters {
	if r.SGD == nil {
		r.SGD = map[Path]*SGDCounters{}
	}
	c := r.SGD[p]
	if c == nil {
		c = &SGDCounters{CPU: map[Figure]float64{}, SysCPU: map[Figure]float64{}, QueueDrops: map[Figure]uint64{}}
		r.SGD[p] = c
	}
	return c
}

// finish computes the medians, ratios, bars and sgd's per-figure usage from the samples.
func (r *Report) finish() {
	r.Medians = map[Figure]map[Path]float64{}
	r.Ratios = map[Figure]map[string]float64{}
	r.Spread = map[Figure]map[Path][2]float64{}
	r.RatioSpread = map[Figure]map[string][2]float64{}
	r.Bars = nil
	cpu, sys := map[Path]map[Figure][]float64{}, map[Path]map[Figure][]float64{}
	for _, f := range r.Figures {
		for _, p := range r.Paths {
			var vs []float64
			for _, s := range r.Samples {
				if s.Figure == f && s.Path == p {
					vs = append(vs, s.Value)
					if c := r.SGD[p]; c != nil && s.Seconds > 0 {
						if cpu[p] == nil {
							cpu[p], sys[p] = map[Figure][]float64{}, map[Figure][]float64{}
						}
						cpu[p][f] = append(cpu[p][f], s.SGDCPUSeconds/s.Seconds)
						sys[p][f] = append(sys[p][f], s.SGDSysSeconds/s.Seconds)
						c.QueueDrops[f] += s.QueueDrops
					}
				}
			}
			if len(vs) > 0 {
				if r.Medians[f] == nil {
					r.Medians[f] = map[Path]float64{}
				}
				r.Medians[f][p] = median(vs)
				if r.Spread[f] == nil {
					r.Spread[f] = map[Path][2]float64{}
				}
				r.Spread[f][p] = [2]float64{slices.Min(vs), slices.Max(vs)}
			}
		}
		m := r.Medians[f]
		for _, pair := range ratioPairs {
			a, okA := m[pair[0]]
			b, okB := m[pair[1]]
			if okA && okB && b > 0 {
				if r.Ratios[f] == nil {
					r.Ratios[f] = map[string]float64{}
				}
				r.Ratios[f][ratioName(pair)] = a / b
			}
			if rs := r.repeatRatios(f, pair); len(rs) > 0 {
				if r.RatioSpread[f] == nil {
					r.RatioSpread[f] = map[string][2]float64{}
				}
				r.RatioSpread[f][ratioName(pair)] = [2]float64{slices.Min(rs), slices.Max(rs)}
			}
		}
		for _, p := range []Path{SGD, SGDFastPath} {
			if ratio, ok := r.Ratios[f][string(p)+"/kernel"]; ok {
				r.Bars = append(r.Bars, Bar{Figure: f, Path: p, Target: barTargets[f], Ratio: ratio, Holds: ratio >= barTargets[f]})
			}
		}
	}
	for p, byFig := range cpu {
		for f, vs := range byFig {
			r.SGD[p].CPU[f] = median(vs)
			r.SGD[p].SysCPU[f] = median(sys[p][f])
		}
	}
}

// repeatRatios returns, for each repeat that measured both paths of pair on f, the ratio
// of their samples.
func (r *Report) repeatRatios(f Figure, pair [2]Path) []float64 {
	num, den := map[int]float64{}, map[int]float64{}
	for _, s := range r.Samples {
		if s.Figure != f {
			continue
		}
		switch s.Path {
		case pair[0]:
			num[s.Repeat] = s.Value
		case pair[1]:
			den[s.Repeat] = s.Value
		}
	}
	var out []float64
	for rep, a := range num {
		if b, ok := den[rep]; ok && b > 0 {
			out = append(out, a/b)
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

// scaled returns a figure's value in the unit the table shows, and that unit.
func scaled(f Figure, v float64) (float64, string) {
	switch f {
	case TCP:
		return v / 1e9, "Gbit/s"
	case UDP:
		return v / 1e3, "k/s"
	}
	return v, "/s"
}

func formatValue(f Figure, v float64) string {
	x, unit := scaled(f, v)
	return fmtNum(x) + " " + unit
}

// fmtNum prints three significant digits or so.
func fmtNum(x float64) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

// WriteTable prints the medians, ratios, bars and sgd's counters for people.
func (r *Report) WriteTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "sgd bench, %s: %d CPUs", r.Date.Format("2006-01-02 15:04 MST"), m.NProc)
	if m.CPU != "" {
		fmt.Fprintf(w, " (%s)", m.CPU)
	}
	fmt.Fprintf(w, ", kernel %s, %s\n", m.Kernel, m.GoVersion)
	queues := "1 queue"
	if r.Queues > 1 {
		queues = fmt.Sprintf("%d queues", r.Queues)
	}
	fmt.Fprintf(w, "medians of %d × %gs per figure and path, paths interleaved; sgd with %s\n\n", r.Repeat, r.Duration, queues)

	var paths []Path
	for _, p := range r.Paths {
		for _, f := range r.Figures {
			if _, ok := r.Medians[f][p]; ok {
				paths = append(paths, p)
				break
			}
		}
	}
	var cols []string
	for _, c := range ratioColumns {
		for _, f := range r.Figures {
			if _, ok := r.Ratios[f][c]; ok {
				cols = append(cols, c)
				break
			}
		}
	}
	rows := [][]string{{"figure"}}
	for _, p := range paths {
		rows[0] = append(rows[0], string(p))
	}
	rows[0] = append(rows[0], cols...)
	for _, f := range r.Figures {
		if r.Medians[f] == nil {
			continue
		}
		_, unit := scaled(f, 0)
		row := []string{fmt.Sprintf("%s (%s)", f.Title(), unit)}
		for _, p := range paths {
			if v, ok := r.Medians[f][p]; ok {
				x, _ := scaled(f, v)
				row = append(row, fmtNum(x))
			} else {
				row = append(row, "-")
			}
		}
		for _, c := range cols {
			if v, ok := r.Ratios[f][c]; ok {
				row = append(row, fmt.Sprintf("%.2f", v))
			} else {
				row = append(row, "-")
			}
		}
		rows = append(rows, row)
	}
	writeColumns(w, rows)
	if r.Repeat > 1 {
		r.writeSpread(w, paths, cols)
	}

	if len(r.Bars) > 0 {
		fmt.Fprintf(w, "\nSPEC 3.1 bars (median of the sgd path over the kernel path's):\n")
		for _, f := range r.Figures {
			var parts []string
			for _, b := range r.Bars {
				if b.Figure != f {
					continue
				}
				verdict := "holds"
				if !b.Holds {
					verdict = "FAILS"
				}
				ratio := fmt.Sprintf("%.2f", b.Ratio)
				if ratio == fmt.Sprintf("%.2f", b.Target) && !b.Holds {
					ratio = fmt.Sprintf("%.3f", b.Ratio) // 0.498 is not 0.50
				}
				parts = append(parts, fmt.Sprintf("%s %s %s", b.Path, ratio, verdict))
			}
			if len(parts) > 0 {
				fmt.Fprintf(w, "  %-30s sgd ≥ %.1f × kernel:  %s\n", f.Title(), barTargets[f], strings.Join(parts, ";  "))
			}
		}
	}

	if len(r.SGD) > 0 {
		fmt.Fprintf(w, "\nsgd's own counters (CPU: median share of one core while measuring, and the part spent in the\nkernel; drops: packets the kernel dropped because sgd's queue was full, summed):\n")
		var ps []Path
		for p := range r.SGD {
			ps = append(ps, p)
		}
		sort.Slice(ps, func(i, j int) bool { return slices.Index(AllPaths, ps[i]) < slices.Index(AllPaths, ps[j]) })
		for _, p := range ps {
			c := r.SGD[p]
			var parts []string
			for _, f := range r.Figures {
				if cpu, ok := c.CPU[f]; ok {
					parts = append(parts, fmt.Sprintf("%s CPU %.0f%% (kernel %.0f%%), drops %d", f, 100*cpu, 100*c.SysCPU[f], c.QueueDrops[f]))
				}
			}
			fmt.Fprintf(w, "  %-13s %s\n", p, strings.Join(parts, " · "))
			line := fmt.Sprintf("  %-13s judged %d packets in %d runs, %.1f CPU seconds", "", c.Packets, c.Runs, c.CPUSeconds)
			if len(c.Dropped) > 0 {
				var ds []string
				for reason, n := range c.Dropped {
					ds = append(ds, fmt.Sprintf("%s %d", reason, n))
				}
				sort.Strings(ds)
				line += "; dropped: " + strings.Join(ds, ", ") + " (the policy check's probes are no_rule)"
			}
			if n := c.TrackedAtStop["tcp"] + c.TrackedAtStop["udp"] + c.TrackedAtStop["icmp"] + c.TrackedAtStop["other"]; n > 0 {
				line += fmt.Sprintf("; %d flows tracked at the end (tcp %d)", n, c.TrackedAtStop["tcp"])
			}
			if c.MetricsError != "" {
				line += "; metrics unavailable: " + c.MetricsError
			}
			fmt.Fprintln(w, line)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// writeSpread prints, per figure, the lowest and highest sample of each path and the
// lowest and highest ratio within one repeat.
func (r *Report) writeSpread(w io.Writer, paths []Path, cols []string) {
	fmt.Fprintf(w, "\nspread over the %d repeats (lowest–highest sample; ratios within one repeat):\n", r.Repeat)
	for _, f := range r.Figures {
		var parts []string
		for _, p := range paths {
			if sp, ok := r.Spread[f][p]; ok {
				lo, _ := scaled(f, sp[0])
				hi, _ := scaled(f, sp[1])
				parts = append(parts, fmt.Sprintf("%s %s–%s", p, fmtNum(lo), fmtNum(hi)))
			}
		}
		for _, c := range cols {
			if sp, ok := r.RatioSpread[f][c]; ok {
				parts = append(parts, fmt.Sprintf("%s %.2f–%.2f", c, sp[0], sp[1]))
			}
		}
		if len(parts) > 0 {
			_, unit := scaled(f, 0)
			fmt.Fprintf(w, "  %s (%s): %s\n", f.Title(), unit, strings.Join(parts, " · "))
		}
	}
}

// writeColumns prints rows with the first column left-aligned and the others right-aligned.
func writeColumns(w io.Writer, rows [][]string) {
	var width []int
	for _, row := range rows {
		for i, c := range row {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, row := range rows {
		var b strings.Builder
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(w, b.String())
	}
}
