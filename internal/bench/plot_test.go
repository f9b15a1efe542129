package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
)

// svgDoc is what the test reads of a plot: every element's name and every text.
type svgDoc struct {
	root     xml.Name
	elements map[string]int
	texts    []string
}

// parseSVG decodes the whole document strictly: it fails on anything not well-formed.
func parseSVG(t *testing.T, b []byte) svgDoc {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	doc := svgDoc{elements: map[string]int{}}
	depth := 0
	var text strings.Builder
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v\n%s", err, b)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				doc.root = tok.Name
			}
			depth++
			doc.elements[tok.Name.Local]++
			text.Reset()
		case xml.CharData:
			text.Write(tok)
		case xml.EndElement:
			depth--
			if tok.Name.Local == "text" {
				doc.texts = append(doc.texts, text.String())
			}
		}
	}
	if depth != 0 {
		t.Fatalf("the SVG ends with %d elements open", depth)
	}
	return doc
}

func (d svgDoc) hasText(s string) bool {
	for _, t := range d.texts {
		if strings.TrimSpace(t) == s {
			return true
		}
	}
	return false
}

func TestSVGBars(t *testing.T) {
	var ss []Sample
	for i, p := range AllPaths {
		for _, f := range AllFigures {
			v := map[Figure]float64{TCP: 10e9, UDP: 300e3, Conn: 9000}[f] * (1 - 0.05*float64(i))
			ss = append(ss, repeats(p, 0, f, v, v*1.05, v*1.3)...) // the last disagrees
		}
	}
	r := report(AllPaths, AllFigures, []int{0}, 3, ss...)
	r.Version = `v1.2 <"&>`
	b := r.SVG()
	doc := parseSVG(t, b)
	if doc.root.Local != "svg" || doc.root.Space != "http://www.w3.org/2000/svg" {
		t.Errorf("root element %v; want svg in the SVG namespace", doc.root)
	}
	for _, p := range AllPaths {
		if !doc.hasText(string(p)) {
			t.Errorf("the plot names no %s", p)
		}
	}
	for _, want := range []string{"TCP bulk, 1 stream", "UDP 64 B datagrams delivered", "new TCP connections",
		"Gbit/s (receiver)", "thousand datagrams/s delivered", "connections/s", "10.5!"} {
		if !doc.hasText(want) {
			t.Errorf("the plot has no text %q", want)
		}
	}
	var sub string
	for _, s := range doc.texts {
		if strings.Contains(s, "CPUs") {
			sub = s
		}
	}
	if !strings.Contains(sub, r.Date.Format("2006-01-02")) || !strings.Contains(sub, r.Machine.Kernel) || !strings.Contains(sub, `sgd v1.2 <"&>`) {
		t.Errorf("the date and machine line = %q; want the date, the kernel and the version (escaped in the file)", sub)
	}
	// A bar and a whisker (3 lines) per path and figure; the SPEC bars' ticks on sgd and
	// sgd-userspace.
	if got, want := doc.elements["rect"], 1+len(AllPaths)*3+len(AllPaths); got != want { // background, bars, legend swatches
		t.Errorf("%d rect elements; want %d", got, want)
	}
	if got := doc.elements["polyline"]; got != 0 {
		t.Errorf("%d polylines in a run of one rule count; want none", got)
	}
	for _, bad := range []string{"NaN", "Inf"} {
		if bytes.Contains(b, []byte(bad)) {
			t.Errorf("the plot has %s in it", bad)
		}
	}
}

func TestSVGScale(t *testing.T) {
	var ss []Sample
	counts := []int{0, 100, 990}
	for _, p := range DefaultPaths {
		for _, n := range counts {
			if !p.filters() && n > 0 {
				continue
			}
			ss = append(ss, repeats(p, n, UDP, 300e3-float64(n)*100, 310e3-float64(n)*100)...)
		}
	}
	r := report(DefaultPaths, []Figure{UDP}, counts, 2, ss...)
	doc := parseSVG(t, r.SVG())
	if got, want := doc.elements["polyline"], 4; got != want { // a line per filtering path
		t.Errorf("%d polylines; want %d", got, want)
	}
	for _, want := range []string{"0", "100", "990", "N, non-matching rules in front of the policy's 3", "by N rules in front", "no rules in front"} {
		if !doc.hasText(want) {
			t.Errorf("the scale plot has no text %q", want)
		}
	}
	for _, p := range DefaultPaths {
		if !doc.hasText(string(p)) {
			t.Errorf("the plot names no %s", p)
		}
	}
}

func TestTickLabel(t *testing.T) {
	for _, tc := range []struct {
		v, step float64
		want    string
	}{{7.5, 2.5, "7.5"}, {10, 2.5, "10.0"}, {400, 100, "400"}, {0.4, 0.2, "0.4"}, {0.75, 0.25, "0.75"}, {5000, 2500, "5000"}} {
		if got := tickLabel(tc.v, tc.step); got != tc.want {
			t.Errorf("tickLabel(%v, %v) = %q; want %q", tc.v, tc.step, got, tc.want)
		}
	}
}

func TestNiceScale(t *testing.T) {
	for _, tc := range []struct{ hi, top, step float64 }{
		{13.8, 15, 5}, {0.9, 1, 0.2}, {384, 400, 100}, {11625, 12500, 2500}, {0, 1, 0.2}, {math.NaN(), 1, 0.2},
	} {
		if top, step := niceScale(tc.hi); math.Abs(top-tc.top) > 1e-9 || math.Abs(step-tc.step) > 1e-9 {
			t.Errorf("niceScale(%v) = %v, %v; want %v, %v", tc.hi, top, step, tc.top, tc.step)
		}
	}
}
