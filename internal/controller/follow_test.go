package controller

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// hostAddrs is a host whose interface addresses the test changes (rules.Env.LocalAddrs).
type hostAddrs struct {
	mu    sync.Mutex
	addrs map[string][]netip.Addr
}

func (h *hostAddrs) of(name string) []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addrs[name]
}

func (h *hostAddrs) set(name string, a ...netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.addrs[name] = a
}

// Refresh compiles the running model again against the host as it is now — here a
// self-referencing rule, which matches the addresses of the interfaces carrying the
// group — without reading the file and without counting a reload.
func TestRefresh(t *testing.T) {
	const selfRef = `
security_groups:
  - group_id: sg-a
    ingress:
      - {ip_protocol: tcp, from_port: 22, to_port: 22, referenced_group_id: sg-a}
interfaces:
  - {name: eth9, security_groups: [sg-a]}
`
	path := filepath.Join(t.TempDir(), "sgd.yaml")
	r := &rig{t: t, path: path, nf: &applier{}, rec: &recorder{}}
	r.write(selfRef)
	host := &hostAddrs{addrs: map[string][]netip.Addr{}}
	r.engine = filter.New(filter.Options{Table: conntrack.New(conntrack.Config{}), Now: func() int64 { return 1 }})
	r.ctl = New(Options{Sources: []Source{NewFile(path)}, Env: rules.Env{LocalAddrs: host.of}, Metrics: r.rec})
	ctx := context.Background()
	want, err := r.ctl.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ctl.Start(ctx, want, Judge(r.engine)); err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("192.0.2.9")
	allows := func() bool {
		return r.engine.Policy().Explain(rules.Query{Iface: "eth9", Direction: rules.Ingress, Proto: 6,
			Src: addr, Dst: addr, Port: 22}).Allowed
	}
	if allows() {
		t.Fatal("eth9 has no address yet, and its group's self-reference allows 192.0.2.9")
	}

	host.set("eth9", addr)   // the device appears with an address
	r.write(config(80, "x")) // a change of the file Refresh must not read
	if err := r.ctl.Refresh(ctx, "test"); err != nil {
		t.Fatalf("Refresh = %v", err)
	}
	now, reloads := r.ctl.Status()
	if !allows() || now.Version != want.Version || now.Model != want.Model || now.Policy == want.Policy {
		t.Errorf("after Refresh: allows %v, version %s (was %s), same model %v, new policy %v; want the same model recompiled, allowing 192.0.2.9",
			allows(), short(now.Version), short(want.Version), now.Model == want.Model, now.Policy != want.Policy)
	}
	if reloads.OK != 0 || reloads.Failed != 0 || !slices.Equal(r.rec.events, []string{"info " + short(want.Version), "loaded"}) {
		t.Errorf("Refresh counted as a reload: %+v, metrics events %q", reloads, r.rec.events)
	}

	// A publisher refusing the refreshed policy: the running state stays.
	before := r.ctl.Running()
	if err := r.ctl.Attach(ctx, refuser{}); err != nil {
		t.Fatal(err)
	}
	host.set("eth9")
	if err := r.ctl.Refresh(ctx, "test"); err == nil {
		t.Fatal("Refresh with a refusing publisher = nil; want its error")
	}
	if r.ctl.Running() != before || r.engine.Policy() != before.Policy || !allows() {
		t.Error("a refused Refresh changed the running state")
	}
}

// refuser accepts what it is first given and refuses every later policy.
type refuser struct{}

var refused = &rules.Error{Code: "Test", Msg: "refused"}

func (refuser) Name() string { return "refuser" }
func (refuser) Check(p *rules.Policy) error {
	if len(p.Rules) > 0 && len(p.Rules[1].Prefixes) == 0 {
		return refused
	}
	return nil
}
func (refuser) Publish(context.Context, *rules.Policy) error { return nil }

// The follower tells which link events concern the policy's interfaces: a configured
// device that appears (also under a new index), goes, is renamed away or enslaved; not a
// flag change, nor a device the policy does not list.
func TestFollowerLink(t *testing.T) {
	r := start(t, config(22, "eth0", "eth7"))
	f := &follower{c: r.ctl, byName: map[string]uint32{"eth0": 2, "lo": 1},
		byIndex: map[uint32]device{2: {name: "eth0", index: 2}, 1: {name: "lo", index: 1}}}
	for _, tc := range []struct {
		dev  device
		up   bool
		want string
	}{
		{device{name: "eth0", index: 2}, true, ""},                                         // a flag change
		{device{name: "veth3", index: 5}, true, ""},                                        // not configured
		{device{name: "eth7", index: 6}, true, "interface eth7 appeared"},                  // the missing one
		{device{name: "eth7", index: 6}, true, ""},                                         // then it goes up
		{device{name: "eth7", index: 6, master: 3}, true, "interface eth7 master changed"}, // enslaved
		{device{name: "eth7", index: 6, master: 3}, true, ""},
		{device{name: "eth7", index: 6}, false, "interface eth7 gone"},
		{device{name: "eth7", index: 8}, true, "interface eth7 appeared"}, // back, a new index
		{device{name: "wan0", index: 2}, true, "interface eth0 renamed"},  // eth0 renamed away
		{device{name: "eth0", index: 5}, true, "interface eth0 appeared"}, // veth3 renamed to eth0
		{device{name: "eth0", index: 5}, false, "interface eth0 gone"},
	} {
		if got := f.link(tc.dev, tc.up); got != tc.want {
			t.Errorf("link(%+v, up %v) = %q; want %q", tc.dev, tc.up, got, tc.want)
		}
	}
}
