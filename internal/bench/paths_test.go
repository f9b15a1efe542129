package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/lab"
)

// TestCheckPolicyCatchesWhatDoesNotEnforce builds the veth pair and proves that the check
// before each measurement fails for a filter that does not do what its path says: none
// loaded, a rule it was not given that lets the probe through, an ipset short of an
// entry. A benchmark whose filter does not enforce must not produce a figure.
func TestCheckPolicyCatchesWhatDoesNotEnforce(t *testing.T) {
	needTools(t, "iptables-restore", "ipset")
	l, err := lab.New("sgd-benchck")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var progress strings.Builder
	b := &bencher{o: Options{Rules: []int{0, 100}, Figures: []Figure{Conn}, Paths: []Path{Raw, Kernel, KernelIPSet}, Progress: &progress}, l: l}
	b.rep = newReport(b.o)
	topo, err := b.buildDirect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.direct, b.t = topo, topo
	defer b.closeLoad()
	run := func(argv ...string) {
		t.Helper()
		if _, err := l.Run(ctx, topo.judge, argv...); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s session, wantErr string) {
		t.Helper()
		err := b.checkPolicy(ctx, s)
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("checkPolicy(%s) = %v; want it to pass", s, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("checkPolicy(%s) = %v; want an error with %q", s, err, wantErr)
		}
	}

	check(session{Raw, 0}, "")
	check(session{Kernel, 100}, "iptables holds 0 rules in INPUT; 105 were loaded")

	for _, s := range []session{{Kernel, 0}, {Kernel, 100}} {
		if err := b.setup(ctx, s); err != nil {
			t.Fatal(err)
		}
		check(s, "")
		check(session{Raw, 0}, "tcp/5209 should be refused") // a raw path that filters is not raw
		// One rule more, in front, that lets the probe through.
		run("iptables", "-I", "INPUT", "1", "-p", "tcp", "--dport", "5209", "-j", "ACCEPT")
		check(s, "rules in INPUT")
		if err := b.teardown(s.path); err != nil {
			t.Fatal(err)
		}
	}

	s := session{KernelIPSet, 100}
	if err := b.setup(ctx, s); err != nil {
		t.Fatal(err)
	}
	check(s, "")
	run("ipset", "del", ipsetName, "198.51.100.1,tcp:10000")
	check(s, "ipset sgd-bench holds 102 entries; want 103")
	// The probe itself: with the chain and the set as loaded but the probe's port in the
	// set, the count is right and the probe must catch it.
	run("ipset", "add", ipsetName, "192.0.2.2,tcp:5209")
	check(s, "tcp/5209 should be dropped silently")
	if err := b.teardown(s.path); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Run(ctx, topo.judge, "ipset", "list", "-n"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("after the kernel+ipset path, the namespace lists sets %q (%v); want none", out, err)
	}
	for _, want := range []string{"check raw: tcp/5203 connects, tcp/5209 refused",
		"check kernel@100: tcp/5203 connects, tcp/5209 dropped silently; 105 rules in INPUT",
		"check kernel+ipset@100: tcp/5203 connects, tcp/5209 dropped silently; 3 rules in INPUT, 103 entries in ipset sgd-bench"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
}
