package controller

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/netfilter"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// A Publisher makes a compiled policy take effect in one place: the judge (Judge), the
// netfilter hooks (Hooks); ports and other hooks next. The controller is its only caller,
// one call at a time.
type Publisher interface {
	// Name says what is published, in logs ("netfilter rules").
	Name() string
	// Check says whether p can be published here. The controller asks every publisher
	// before it publishes to any, so that a policy one of them refuses changes nothing.
	Check(p *rules.Policy) error
	// Publish makes p take effect. When it fails, the controller publishes the previous
	// policy again to this publisher and every one before it, so Publish must take a
	// policy it held before even when its own state is unknown after a failure.
	Publish(ctx context.Context, p *rules.Policy) error
}

// Judge publishes to the packet judge: the engine swaps the compiled policy in whole,
// with what is known of the host's interfaces, and the very next packet sees it.
func Judge(e *filter.Engine) Publisher { return judge{e} }

type judge struct{ e *filter.Engine }

func (judge) Name() string              { return "policy" }
func (judge) Check(*rules.Policy) error { return nil }
func (j judge) Publish(_ context.Context, p *rules.Policy) error {
	j.e.SetPolicy(p, filter.ReadHost(p.DeviceNames()))
	return nil
}

// Applier installs sgd's netfilter rules (netfilter.Manager).
type Applier interface {
	Apply(ctx context.Context, s netfilter.Spec) error
}

// Hooks publishes a policy's interfaces and ports to netfilter: sgd's chains queue the
// traffic of exactly those interfaces (SPEC 2.3) and ports (SPEC 4.3). It changes the rules only when the interfaces
// change; rules themselves live in the judge. Safe for use by several goroutines.
type Hooks struct {
	nf    Applier // nil: Check only
	base  netfilter.Spec
	zones *filter.Zones

	mu        sync.Mutex
	cur       netfilter.Spec // in force, when known
	known     bool           // cur is what is installed
	installed bool           // an Apply has succeeded once
}

// NewHooks returns the netfilter publisher. base holds everything but the interfaces:
// queues, fail mode and the fast path (Offload nil: no fast path); with a fast path, each
// device's zone (the one the judge tracks it in) is its connection label.
// nf may be nil for a publisher that only checks (`sgd check`).
func NewHooks(nf Applier, base netfilter.Spec, zones *filter.Zones) *Hooks {
	base.Interfaces, base.Ports = nil, nil
	return &Hooks{nf: nf, base: base, zones: zones}
}

// Name is "netfilter rules".
func (h *Hooks) Name() string { return "netfilter rules" }

// Spec is the netfilter spec that publishes p.
func (h *Hooks) Spec(p *rules.Policy) netfilter.Spec {
	s := h.base
	s.Interfaces = slices.Clone(p.InterfaceNames())
	s.Ports = slices.Clone(p.PortNames())
	if s.Offload != nil {
		o := &netfilter.Offload{Zones: make(map[string]uint16, len(s.Interfaces)+len(s.Ports)), Timeouts: s.Offload.Timeouts}
		for _, name := range append(slices.Clone(s.Interfaces), s.Ports...) {
			o.Zones[name] = h.zones.Of(name)
		}
		s.Offload = o
	}
	return s
}

// Check is what must hold before p's interfaces are hooked, at start and at each
// reload: a spec netfilter takes (names it can put in a rule), and no bridge port or
// bond member among the devices of this host (checkDevices).
func (h *Hooks) Check(p *rules.Policy) error {
	s := h.Spec(p)
	if err := s.Validate(); err != nil {
		return err
	}
	return checkDevices(s.Interfaces)
}

// Publish installs the hooks for p's interfaces unless they are in force already.
func (h *Hooks) Publish(ctx context.Context, p *rules.Policy) error {
	s := h.Spec(p)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.known && slices.Equal(s.Interfaces, h.cur.Interfaces) && slices.Equal(s.Ports, h.cur.Ports) {
		return nil
	}
	if err := h.nf.Apply(ctx, s); err != nil {
		h.known = false // half applied, perhaps: the next Publish applies whatever it gets
		if h.installed {
			return fmt.Errorf("install netfilter rules for the new interfaces: %w", err)
		}
		return err
	}
	h.cur, h.known, h.installed = s, true, true
	return nil
}
