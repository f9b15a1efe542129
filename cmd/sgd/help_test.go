package main

import (
	"bytes"
	"strings"
	"testing"
)

// sgd help COMMAND is COMMAND --help; a bare number for a duration says which unit to add.
func TestHelpAndDurationUnits(t *testing.T) {
	for _, c := range []struct {
		args   []string
		code   int
		output string // first line of stdout+stderr
	}{
		{[]string{"help", "run"}, 0, "Usage: sgd run --config FILE [flags]"},
		{[]string{"help", "check"}, 0, "Usage: sgd check"},
		{[]string{"help"}, 0, "sgd gives a Linux host AWS Security Group semantics"},
		{[]string{"help", "nonsense"}, 2, `sgd: unknown command "nonsense"`},
		{[]string{"bench", "--duration", "5"}, 2, `invalid value "5" for flag -duration: "5" has no unit: use 5s (or ms, m)`},
		{[]string{"bench", "--duration", "soon"}, 2, `invalid value "soon" for flag -duration: not a duration such as 5s, 500ms or 1m`},
	} {
		var out bytes.Buffer
		code := dispatch(c.args, &out, &out)
		first, _, _ := strings.Cut(out.String(), "\n")
		if code != c.code || !strings.HasPrefix(first, c.output) {
			t.Errorf("sgd %s = exit %d, first line %q; want exit %d, %q", strings.Join(c.args, " "), code, first, c.code, c.output)
		}
	}
}
