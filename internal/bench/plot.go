package bench

import (
	"encoding/xml"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// The plot (--plot FILE.svg) is SVG written here with fmt: a title with the date and the
// machine; per figure a panel of bars, one per path, at the run's first rule count, each
// with a whisker from the lowest to the highest repeat and the median written above it,
// and a dashed tick where SPEC 3.1's bar for that path lies (target × the kernel's
// median); for a scale run (several rule counts), per figure a panel of lines over N,
// one per filtering path, with whiskers, and the raw path as a dashed level; a legend.
// No dependency: the drawing is a few dozen rectangles, lines and texts.

// pathColor is each path's colour: the veth pair's in Tableau's 10 colours, the bridge's
// in their light variants.
var pathColor = map[Path]string{
	Raw: "#7f7f7f", Kernel: "#1f77b4", KernelIPSet: "#17becf", SGD: "#d62728", SGDUserspace: "#ff7f0e",
	SGDUntracked: "#9467bd",
	FwdRaw:       "#c7c7c7", FwdKernel: "#aec7e8", FwdKernelIPSet: "#9edae5", FwdSGD: "#ff9896", FwdSGDUserspace: "#ffbb78",
}

// axisUnit is the unit of a figure's axis, in words.
func axisUnit(f Figure) string {
	switch f {
	case TCP:
		return "Gbit/s (receiver)"
	case UDP:
		return "thousand datagrams/s delivered"
	case Conn:
		return "connections/s"
	}
	return f.Unit()
}

// svg builds the document.
type svg struct{ b strings.Builder }

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (s *svg) printf(format string, a ...any) { fmt.Fprintf(&s.b, format, a...) }

// text writes a text element; attrs are extra attributes, written as given.
func (s *svg) text(x, y float64, attrs, body string) {
	s.printf("<text x=\"%.1f\" y=\"%.1f\" %s>%s</text>\n", x, y, attrs, esc(body))
}

func (s *svg) line(x1, y1, x2, y2 float64, attrs string) {
	s.printf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" %s/>\n", x1, y1, x2, y2, attrs)
}

// niceScale returns the top of an axis from 0 that holds hi, and its tick step.
func niceScale(hi float64) (top, step float64) {
	if hi <= 0 || math.IsNaN(hi) || math.IsInf(hi, 0) {
		return 1, 0.2
	}
	raw := hi / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if step = m * mag; step >= raw {
			break
		}
	}
	return math.Ceil(hi/step-1e-9) * step, step
}

// tickLabel prints an axis tick with the decimals its step needs (2.5 is not 2).
func tickLabel(v, step float64) string {
	d := 0
	for p := step; d < 4 && math.Abs(p-math.Round(p)) > 1e-9; p *= 10 {
		d++
	}
	return strconv.FormatFloat(v, 'f', d, 64)
}

// panel geometry.
const (
	plotH      = 200.0 // height of a plot area
	panelLeft  = 64.0  // room for the y axis and its label
	panelTop   = 44.0  // room for the panel's title and its rule count
	panelBelow = 84.0  // room for the x labels
	panelGap   = 24.0
)

// yAxis draws the frame, grid and labels of a plot area at (x, y) of width w, for values
// 0–top in steps, and returns the function placing a value.
func (s *svg) yAxis(x, y, w, top, step float64, unit string) func(float64) float64 {
	at := func(v float64) float64 { return y + plotH - plotH*v/top }
	for v := 0.0; v <= top+step/2; v += step {
		s.line(x, at(v), x+w, at(v), `stroke="#e5e5e5"`)
		s.text(x-6, at(v)+4, `text-anchor="end" font-size="10" fill="#444"`, tickLabel(v, step))
	}
	s.line(x, y, x, y+plotH, `stroke="#333"`)
	s.line(x, y+plotH, x+w, y+plotH, `stroke="#333"`)
	s.printf("<text transform=\"translate(%.1f,%.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"11\" fill=\"#333\">%s</text>\n",
		x-46, y+plotH/2, esc(unit))
	return at
}

// whisker draws a vertical line from lo to hi with caps, at x.
func (s *svg) whisker(x, lo, hi float64) {
	s.line(x, lo, x, hi, `stroke="#222" stroke-width="1.2"`)
	s.line(x-4, lo, x+4, lo, `stroke="#222" stroke-width="1.2"`)
	s.line(x-4, hi, x+4, hi, `stroke="#222" stroke-width="1.2"`)
}

// scaledStat is a Stat's median, lowest and highest in the unit the axis shows.
func scaledStat(st Stat) (med, lo, hi float64) {
	med, _ = scaled(st.Figure, st.Median)
	lo, _ = scaled(st.Figure, st.Min)
	hi, _ = scaled(st.Figure, st.Max)
	return med, lo, hi
}

// valueLabel is a median's label: red with "!" when the repeats disagree.
func valueLabel(st Stat) (string, string) {
	x, _ := scaled(st.Figure, st.Median)
	if st.Disagree {
		return fmtNum(x) + "!", `fill="#c00000"`
	}
	return fmtNum(x), `fill="#222"`
}

// SVG returns the plot of the report.
func (r *Report) SVG() []byte {
	paths := r.shownPaths()
	var figs []Figure
	for _, f := range r.Figures {
		if slices.ContainsFunc(r.Stats, func(s Stat) bool { return s.Figure == f }) {
			figs = append(figs, f)
		}
	}
	scale := len(r.Rules) > 1
	slot := 44.0
	barW := max(240, slot*float64(len(paths))+16)
	panelW := panelLeft + barW
	width := 40 + float64(max(1, len(figs)))*(panelW+panelGap)
	rows := 1
	if scale {
		rows = 2
	}
	rowH := panelTop + plotH + panelBelow
	height := 64 + float64(rows)*rowH + 52

	s := &svg{}
	s.printf("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
	s.printf("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"Helvetica, Arial, sans-serif\">\n",
		width, height, width, height)
	s.printf("<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n")
	s.text(24, 26, `font-size="16" font-weight="bold" fill="#111"`,
		fmt.Sprintf("sgd bench: medians of %d × %gs per path and figure, whiskers from the lowest to the highest repeat", r.Repeat, r.Duration))
	m := r.Machine
	sub := fmt.Sprintf("%s · %d CPUs", r.Date.Format("2006-01-02 15:04 MST"), m.NProc)
	if m.CPU != "" {
		sub += " (" + m.CPU + ")"
	}
	sub += " · kernel " + m.Kernel + " · " + m.GoVersion
	if r.Version != "" {
		sub += " · sgd " + r.Version
	}
	sub += fmt.Sprintf(" · order seed %d", r.Seed)
	s.text(24, 46, `font-size="11" fill="#555"`, sub)

	y0 := 64.0
	n0 := 0
	if len(r.Rules) > 0 {
		n0 = r.Rules[0]
	}
	for i, f := range figs {
		x := 24 + float64(i)*(panelW+panelGap) + panelLeft
		r.barPanel(s, x, y0, barW, f, n0, paths)
	}
	if scale {
		for i, f := range figs {
			x := 24 + float64(i)*(panelW+panelGap) + panelLeft
			r.linePanel(s, x, y0+rowH, barW, f, paths)
		}
	}
	r.legend(s, 24, height-40, paths, width)
	s.printf("</svg>\n")
	return []byte(s.b.String())
}

// barPanel draws one figure's bars at n rules in front.
func (r *Report) barPanel(s *svg, x, y, w float64, f Figure, n int, paths []Path) {
	s.text(x+w/2, y+18, `text-anchor="middle" font-size="13" font-weight="bold" fill="#111"`, f.Title())
	if n > 0 || len(r.Rules) > 1 {
		s.text(x+w/2, y+32, `text-anchor="middle" font-size="11" fill="#444"`, inFront(n))
	}
	py := y + panelTop
	hi := 0.0
	for _, p := range paths {
		if st, ok := r.Stat(n, f, p); ok {
			v, _ := scaled(f, st.Max)
			hi = max(hi, v)
		}
	}
	for _, b := range r.Bars {
		if vs, ok := r.Stat(n, f, b.Versus); ok && b.Rules == n && b.Figure == f && slices.Contains(paths, b.Path) {
			v, _ := scaled(f, b.Target*vs.Median)
			hi = max(hi, v)
		}
	}
	top, step := niceScale(hi * 1.12)
	at := s.yAxis(x, py, w, top, step, axisUnit(f))
	slotW := (w - 16) / float64(len(paths))
	for i, p := range paths {
		cx := x + 8 + slotW*(float64(i)+0.5)
		s.printf("<text transform=\"translate(%.1f,%.1f) rotate(-35)\" text-anchor=\"end\" font-size=\"11\" fill=\"#222\">%s</text>\n",
			cx+4, py+plotH+14, esc(string(p)))
		st, ok := r.Stat(n, f, p)
		if !ok {
			continue
		}
		med, lo, hiV := scaledStat(st)
		bw := slotW * 0.62
		s.printf("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%s</title></rect>\n",
			cx-bw/2, at(med), bw, py+plotH-at(med), pathColor[p], esc(fmt.Sprintf("%s: %s", p, statCell(st))))
		if st.Samples > 1 {
			s.whisker(cx, at(lo), at(hiV))
		}
		labelY := at(hiV)
		for _, b := range r.Bars {
			if b.Rules != n || b.Figure != f || b.Path != p {
				continue
			}
			if vs, ok := r.Stat(n, f, b.Versus); ok {
				t, _ := scaled(f, b.Target*vs.Median)
				s.line(cx-slotW/2+2, at(t), cx+slotW/2-2, at(t), `stroke="#000" stroke-width="1.5" stroke-dasharray="3,2"`)
				labelY = min(labelY, at(t))
			}
		}
		label, color := valueLabel(st)
		s.text(cx, labelY-5, `text-anchor="middle" font-size="10" `+color, label)
	}
}

// linePanel draws one figure over the rule counts: a line per filtering path, the raw
// paths as dashed levels.
func (r *Report) linePanel(s *svg, x, y, w float64, f Figure, paths []Path) {
	s.text(x+w/2, y+18, `text-anchor="middle" font-size="13" font-weight="bold" fill="#111"`, f.Title())
	s.text(x+w/2, y+32, `text-anchor="middle" font-size="11" fill="#444"`, "by N rules in front")
	py := y + panelTop
	hi := 0.0
	maxN := 0
	for _, n := range r.Rules {
		maxN = max(maxN, n)
		for _, p := range paths {
			if st, ok := r.Stat(n, f, p); ok {
				v, _ := scaled(f, st.Max)
				hi = max(hi, v)
			}
		}
	}
	top, step := niceScale(hi * 1.12)
	at := s.yAxis(x, py, w, top, step, axisUnit(f))
	inner := w - 24
	atN := func(n int) float64 { return x + 12 + inner*float64(n)/float64(max(1, maxN)) }
	for _, n := range r.Rules {
		s.line(atN(n), py+plotH, atN(n), py+plotH+4, `stroke="#333"`)
		s.text(atN(n), py+plotH+16, `text-anchor="middle" font-size="10" fill="#444"`, fmt.Sprint(n))
	}
	s.text(x+w/2, py+plotH+34, `text-anchor="middle" font-size="11" fill="#333"`, "N, non-matching rules in front of the policy's 3")
	var filtering []Path
	for _, p := range paths {
		if p.filters() {
			filtering = append(filtering, p)
			continue
		}
		if st, ok := r.Stat(0, f, p); ok {
			v, _ := scaled(f, st.Median)
			s.line(x, at(v), x+w, at(v), fmt.Sprintf(`stroke="%s" stroke-width="1.5" stroke-dasharray="6,4"`, pathColor[p]))
			s.text(x+w-4, at(v)-4, `text-anchor="end" font-size="10" fill="#555"`, string(p))
		}
	}
	for i, p := range filtering {
		dx := (float64(i) - float64(len(filtering)-1)/2) * 3 // keep whiskers apart
		var pts []string
		for _, n := range r.Rules {
			st, ok := r.Stat(n, f, p)
			if !ok {
				continue
			}
			med, lo, hiV := scaledStat(st)
			cx := atN(n) + dx
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", cx, at(med)))
			if st.Samples > 1 {
				s.line(cx, at(lo), cx, at(hiV), fmt.Sprintf(`stroke="%s" stroke-width="1.2"`, pathColor[p]))
			}
			s.printf("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.2\" fill=\"%s\"><title>%s</title></circle>\n",
				cx, at(med), pathColor[p], esc(fmt.Sprintf("%s, N=%d: %s", p, n, statCell(st))))
		}
		if len(pts) > 1 {
			s.printf("<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"/>\n", strings.Join(pts, " "), pathColor[p])
		}
	}
}

// legend draws the paths' colours and how to read the marks.
func (r *Report) legend(s *svg, x, y float64, paths []Path, width float64) {
	cx := x
	for _, p := range paths {
		s.printf("<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", cx, y-10, pathColor[p])
		s.text(cx+16, y, `font-size="11" fill="#222"`, string(p))
		cx += 16 + 7*float64(len(p)) + 18
		if cx > width-120 {
			cx, y = x, y+16
		}
	}
	note := "whiskers: lowest–highest repeat · red value with !: the repeats disagree by more than 20 %"
	if len(r.Bars) > 0 {
		note += " · dashed tick: the SPEC 3.1 bar (target × the kernel's median)"
	}
	s.text(x, y+20, `font-size="10" fill="#555"`, note)
}

// WriteSVG writes the plot to path.
func (r *Report) WriteSVG(path string) error {
	return os.WriteFile(path, r.SVG(), 0o644)
}
