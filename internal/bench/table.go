package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

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

// disagreeMark follows a cell whose repeats disagree by more than DisagreeLimit.
const disagreeMark = " !"

// statCell is a median with, after more than one repeat, the lowest–highest sample.
func statCell(s Stat) string {
	x, _ := scaled(s.Figure, s.Median)
	c := fmtNum(x)
	if s.Samples > 1 {
		lo, _ := scaled(s.Figure, s.Min)
		hi, _ := scaled(s.Figure, s.Max)
		c += fmt.Sprintf(" (%s–%s)", fmtNum(lo), fmtNum(hi))
	}
	if s.Disagree {
		c += disagreeMark
	}
	return c
}

// ratioCell is a ratio of medians with, after more than one repeat, the lowest–highest
// ratio within a repeat.
func ratioCell(q Ratio) string {
	c := fmt.Sprintf("%.2f", q.Value)
	if q.Repeats > 1 {
		c += fmt.Sprintf(" (%.2f–%.2f)", q.Min, q.Max)
	}
	return c
}

// shownPaths are the paths with a sample, in table order.
func (r *Report) shownPaths() []Path {
	var out []Path
	for _, p := range AllPaths {
		if slices.ContainsFunc(r.Stats, func(s Stat) bool { return s.Path == p }) {
			out = append(out, p)
		}
	}
	return out
}

// shownRatios are the names of the ratios computed, in table order.
func (r *Report) shownRatios() []string {
	var out []string
	for _, fwd := range []bool{false, true} {
		for _, pair := range ratioPairs {
			name := ratioName(pair[0].fwd(fwd), pair[1].fwd(fwd))
			if slices.ContainsFunc(r.Ratios, func(q Ratio) bool { return q.Name == name }) {
				out = append(out, name)
			}
		}
	}
	return out
}

// sgdMode says which of sgd's modes the sgd path measured, from what sgd said at start.
func (r *Report) sgdMode() string {
	for _, c := range r.SGD {
		if c.Path.Base() == SGD && c.FastPath != nil {
			if *c.FastPath {
				return "this build started with fast_path true: accepted flows go on in the kernel"
			}
			return "this build started with fast_path false: every packet through the queue, as sgd-userspace"
		}
	}
	return "sgd did not say which"
}

// WriteTable prints the medians with their spread, the ratios, the SPEC 3.1 bars and
// sgd's counters for people: one table with figures as columns for one rule count, or one
// table per figure with the rule counts as columns for several (the scale run).
func (r *Report) WriteTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "sgd bench, %s: %d CPUs", r.Date.Format("2006-01-02 15:04 MST"), m.NProc)
	if m.CPU != "" {
		fmt.Fprintf(w, " (%s)", m.CPU)
	}
	fmt.Fprintf(w, ", kernel %s, %s", m.Kernel, m.GoVersion)
	if r.Version != "" {
		fmt.Fprintf(w, ", sgd %s", r.Version)
	}
	fmt.Fprintln(w)
	queues := "1 queue"
	if r.Queues > 1 {
		queues = fmt.Sprintf("%d queues", r.Queues)
	}
	fmt.Fprintf(w, "medians of %d × %gs, (lowest–highest) of the repeats; paths shuffled per repeat, seed %d (--seed %d repeats the order); sgd with %s\n",
		r.Repeat, r.Duration, r.Seed, r.Seed, queues)
	if slices.ContainsFunc(r.Paths, Path.runsSGD) {
		fmt.Fprintf(w, "sgd: `sgd run` in its default mode (%s); sgd-userspace: `sgd run --fast-path=false`\n", r.sgdMode())
	}
	if slices.Contains(r.Paths, SGDUntracked) {
		fmt.Fprintln(w, "sgd-untracked: `sgd run` in its default mode, the policy's rules open to 0.0.0.0/0: untracked flows (SPEC 1.4), every packet judged on the queue")
	}
	paths, ratios := r.shownPaths(), r.shownRatios()
	if len(r.Rules) == 1 {
		n := r.Rules[0]
		fmt.Fprintln(w)
		if n > 0 {
			fmt.Fprintf(w, "with %s in front of the policy's %d on every filtering path:\n", plural(n, "non-matching rule"), len(policyAllows))
		}
		r.writeByFigure(w, n, paths, ratios)
	} else {
		for _, f := range r.Figures {
			fmt.Fprintln(w)
			_, unit := scaled(f, 0)
			fmt.Fprintf(w, "%s (%s), by non-matching rules in front:\n", f.Title(), unit)
			r.writeByRules(w, f, paths, ratios)
		}
		if slices.ContainsFunc(paths, func(p Path) bool { return !p.filters() }) {
			fmt.Fprintf(w, "(the raw paths have no rules: measured once per repeat, shown under N=%d)\n", r.Rules[0])
		}
	}
	r.writeDisagreements(w)
	r.writeBars(w)
	r.writeSGD(w)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// column is one column of a table of medians: a figure at a rule count.
type column struct {
	rules  int
	figure Figure
}

// writeDisagreements warns of the cells whose repeats disagree by more than
// DisagreeLimit, per figure, with by how much (Report.Warnings says it in sentences).
func (r *Report) writeDisagreements(w io.Writer) {
	if len(r.Warnings) == 0 {
		return
	}
	fmt.Fprintf(w, "\nwarning%s: in %d of %d cells the repeats disagree by more than %.0f %% (highest/lowest > %g): read those medians, and\nthe ratios made of them, as rough; re-run with more --repeat or on a quieter machine:\n",
		disagreeMark, len(r.Warnings), len(r.Stats), 100*(DisagreeLimit-1), DisagreeLimit)
	for _, f := range r.Figures {
		var parts []string
		for _, st := range r.Stats {
			if st.Figure != f || !st.Disagree {
				continue
			}
			by := "∞"
			if sp := st.Spread(); !math.IsInf(sp, 1) {
				by = fmt.Sprintf("%.0f %%", 100*(sp-1))
			}
			parts = append(parts, fmt.Sprintf("%s %s", session{st.Path, st.Rules}, by))
		}
		if len(parts) == 0 {
			continue
		}
		line := fmt.Sprintf("  %-5s", f)
		for i, p := range parts {
			if i > 0 {
				line += ","
			}
			if utf8.RuneCountInString(line)+len(p) > 100 {
				fmt.Fprintln(w, line)
				line = strings.Repeat(" ", 7)
			} else if i > 0 {
				line += " "
			}
			line += p
		}
		fmt.Fprintln(w, line)
	}
}

// writeByFigure prints one rule count: a row per path and ratio, a column per figure.
func (r *Report) writeByFigure(w io.Writer, n int, paths []Path, ratios []string) {
	head, units := []string{""}, []string{""}
	var cols []column
	for _, f := range r.Figures {
		_, unit := scaled(f, 0)
		head, units = append(head, f.Title()), append(units, unit)
		cols = append(cols, column{n, f})
	}
	r.writeGrid(w, [][]string{head, units}, cols, paths, ratios)
}

// writeByRules prints one figure: a row per path and ratio, a column per rule count.
func (r *Report) writeByRules(w io.Writer, f Figure, paths []Path, ratios []string) {
	head := []string{""}
	var cols []column
	for _, n := range r.Rules {
		head = append(head, fmt.Sprintf("N=%d", n))
		cols = append(cols, column{n, f})
	}
	r.writeGrid(w, [][]string{head}, cols, paths, ratios)
}

// writeGrid prints the header rows, then a row per path and per ratio with a cell per
// column. A raw path, which has no rules, is shown under the first rule count only.
func (r *Report) writeGrid(w io.Writer, head [][]string, cols []column, paths []Path, ratios []string) {
	rows := head
	for _, p := range paths {
		row := []string{string(p)}
		for _, c := range cols {
			s, ok := r.Stat(c.rules, c.figure, p)
			switch {
			case !ok:
				row = append(row, "-")
			case !p.filters() && c.rules != cols[0].rules:
				row = append(row, "")
			default:
				row = append(row, statCell(s))
			}
		}
		rows = append(rows, row)
	}
	for _, name := range ratios {
		row := []string{name}
		for _, c := range cols {
			if q, ok := r.Ratio(c.rules, c.figure, name); ok {
				row = append(row, ratioCell(q))
			} else {
				row = append(row, "-")
			}
		}
		rows = append(rows, row)
	}
	writeColumns(w, rows)
}

// barLabel is a bar's row label: "sgd ≥ 0.95 × kernel", with the targets of every figure
// when they differ ("sgd-userspace ≥ 0.9 / 0.6 / 0.8 × kernel").
func (r *Report) barLabel(rules int, path, versus Path) string {
	var ts []string
	for _, f := range r.Figures {
		for _, b := range r.Bars {
			if b.Rules == rules && b.Path == path && b.Versus == versus && b.Figure == f {
				ts = append(ts, fmt.Sprintf("%g", b.Target))
			}
		}
	}
	if len(slices.Compact(slices.Clone(ts))) == 1 {
		ts = ts[:1]
	}
	return fmt.Sprintf("%s ≥ %s × %s", path, strings.Join(ts, " / "), versus)
}

// barCell is a bar's ratio and verdict; a miss says by how much. A missed bar's ratio
// gets as many decimals as it takes not to print as its target or above it (0.9498 is
// not 0.95), and its shortfall as many as it takes not to print as zero.
func barCell(b Bar) string {
	if b.Holds {
		return fmt.Sprintf("%.2f holds", b.Ratio)
	}
	printed := func(x float64, d int) (string, float64) {
		s := strconv.FormatFloat(x, 'f', d, 64)
		v, _ := strconv.ParseFloat(s, 64)
		return s, v
	}
	for d := 2; ; d++ {
		ratio, r := printed(b.Ratio, d)
		short, s := printed(b.Target-b.Ratio, d)
		if d == 6 || r < b.Target && s > 0 {
			return ratio + " FAILS by " + short
		}
	}
}

// writeBars prints SPEC 3.1's bars: a row per bar, a column per figure.
func (r *Report) writeBars(w io.Writer) {
	if len(r.Bars) == 0 {
		return
	}
	fmt.Fprintf(w, "\nSPEC 3.1 bars (ratios of the medians above):\n")
	head := []string{"", ""}
	for _, f := range r.Figures {
		head = append(head, f.Title())
	}
	rows := [][]string{head}
	type key struct {
		rules        int
		path, versus Path
	}
	var keys []key
	for _, b := range r.Bars {
		if k := (key{b.Rules, b.Path, b.Versus}); !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	held := 0
	for _, k := range keys {
		row := []string{inFront(k.rules), r.barLabel(k.rules, k.path, k.versus)}
		for _, f := range r.Figures {
			cell := "-"
			for _, b := range r.Bars {
				if b.Rules == k.rules && b.Path == k.path && b.Versus == k.versus && b.Figure == f {
					cell = barCell(b)
					if b.Holds {
						held++
					}
				}
			}
			row = append(row, cell)
		}
		rows = append(rows, row)
	}
	writeColumns(w, rows)
	fmt.Fprintf(w, "%d of %d bars hold", held, len(r.Bars))
	switch {
	case !slices.Contains(r.Rules, 0):
		fmt.Fprint(w, " (the bars with no rules in front need --rules 0 in the run)")
	case !slices.ContainsFunc(r.Rules, func(n int) bool { return n >= ScaleBarRules }):
		fmt.Fprintf(w, " (the at-scale bars need --rules 0,%d)", ScaleBarRules)
	}
	fmt.Fprintln(w)
}

// writeSGD prints sgd's own counters per sgd path and rule count.
func (r *Report) writeSGD(w io.Writer) {
	if len(r.SGD) == 0 {
		return
	}
	fmt.Fprintf(w, "\nsgd's own counters (CPU: median share of one core while measuring, and the part spent in the\nkernel; drops: packets the kernel dropped because sgd's queue was full, summed):\n")
	cs := slices.Clone(r.SGD)
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := slices.Index(AllPaths, cs[i].Path), slices.Index(AllPaths, cs[j].Path)
		return a < b || a == b && cs[i].Rules < cs[j].Rules
	})
	width := 0
	for _, c := range cs {
		width = max(width, utf8.RuneCountInString(session{c.Path, c.Rules}.String()))
	}
	for _, c := range cs {
		var parts []string
		for _, f := range r.Figures {
			if cpu, ok := c.CPU[f]; ok {
				parts = append(parts, fmt.Sprintf("%s CPU %.0f%% (kernel %.0f%%), drops %d", f, 100*cpu, 100*c.SysCPU[f], c.QueueDrops[f]))
			}
		}
		fmt.Fprintf(w, "  %-*s  %s\n", width, session{c.Path, c.Rules}, strings.Join(parts, " · "))
		line := fmt.Sprintf("  %-*s  judged %d packets in %s, %.1f CPU seconds", width, "", c.Packets, plural(c.Runs, "run"), c.CPUSeconds)
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
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
