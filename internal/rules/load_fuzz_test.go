package rules_test

import (
	"testing"

	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
)

// FuzzLoad feeds arbitrary bytes through the whole config path as sgd run reads a file —
// the SG model and the daemon: section (internal/settings) in one Parse, both sections'
// validation, Validate with the section's quotas, Compile — and judges packets against
// the reference evaluator (rules.CheckLoad, fuzzcheck_test.go, says what is held). It
// lives in package rules_test because settings imports rules; seeds are in
// testdata/fuzz/FuzzLoad. CI runs it (.ci/run); by hand:
//
//	go test -run '^$' -fuzz '^FuzzLoad$' -fuzztime 20s -fuzzminimizetime 2s ./internal/rules/
//
// (minimising a new input from the ~1 KB seeds takes up to a minute by default).
func FuzzLoad(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var sec settings.Section
		rules.CheckLoad(t, data, sec.Of(), func(d *rules.Document) rules.Errors { return sec.Validate(d) }, sec.Quotas)
	})
}
