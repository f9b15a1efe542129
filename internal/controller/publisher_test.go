package controller

import (
	"context"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/netfilter"
	"github.com/sgd-firewall/sgd/internal/offload"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// specRecorder keeps every spec applied.
type specRecorder struct{ specs []netfilter.Spec }

func (r *specRecorder) Apply(_ context.Context, s netfilter.Spec) error {
	r.specs = append(r.specs, s)
	return nil
}

func compilePolicy(t *testing.T, src string) *rules.Policy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sgd.yaml")
	r := &rig{t: t, path: path}
	r.write(src)
	s, err := Load(context.Background(), rules.Env{LocalAddrs: func(string) []netip.Addr { return nil }}, NewFile(path))
	if err != nil {
		t.Fatal(err)
	}
	return s.Policy
}

// With the fast path, the hooks carry each device's zone and timeout policies, make the
// policies before the rules that name them, prune the others after, and apply again when
// only a device's timeouts change.
func TestHooksOffload(t *testing.T) {
	var calls []string
	var ensured [][]offload.Timeouts
	off := &HookOffload{
		Ensure: func(_ context.Context, ts []offload.Timeouts) error {
			calls, ensured = append(calls, "ensure"), append(ensured, ts)
			return nil
		},
		Prune: func(context.Context, []offload.Timeouts) error { calls = append(calls, "prune"); return nil },
	}
	nf := &specRecorder{}
	h := NewHooks(nf, netfilter.Spec{QueueNum: 100, QueueCount: 1}, filter.NewZones(), off)
	base := config(22, "eth0", "eth1")
	custom := strings.Replace(base, "{name: eth1, security_groups: [sg-a]}",
		"{name: eth1, security_groups: [sg-a], connection_tracking: {tcp_established_timeout: 3600, udp_timeout: 60}}", 1)
	for i, src := range []string{base, base, custom} {
		if err := h.Publish(context.Background(), compilePolicy(t, src)); err != nil {
			t.Fatalf("Publish %d = %v", i, err)
		}
	}
	if len(nf.specs) != 2 {
		t.Fatalf("Apply ran %d times for three publishes (the second unchanged); want 2", len(nf.specs))
	}
	want := &netfilter.Offload{Zones: map[string]uint16{"eth0": 1, "eth1": 2},
		Timeouts: map[string][2]string{"eth0": {"sgd-tcp-432000", "sgd-udp-30-30"}, "eth1": {"sgd-tcp-432000", "sgd-udp-30-30"}}}
	if got := nf.specs[0].Offload; !reflect.DeepEqual(got, want) {
		t.Errorf("first spec's Offload = %+v; want %+v", got, want)
	}
	if got := nf.specs[1].Offload.Timeouts["eth1"]; got != [2]string{"sgd-tcp-3600", "sgd-udp-60-60"} {
		t.Errorf("eth1's policies after its connection_tracking changed = %v; want sgd-tcp-3600, sgd-udp-60-60", got)
	}
	if want := []string{"ensure", "prune", "ensure", "prune"}; !reflect.DeepEqual(calls, want) {
		t.Errorf("calls = %v; want %v", calls, want)
	}
	if got := ensured[1]; len(got) != 2 {
		t.Errorf("second Ensure got %v; want eth0's and eth1's two distinct policies", got)
	}
}
