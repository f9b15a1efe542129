package controller

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/netfilter"
	"github.com/sgd-firewall/sgd/internal/offload"
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
// traffic of exactly those interfaces (SPEC 2.3) and ports (SPEC 4.3), and with the kernel
// fast path (SPEC 4.7) carry offloaded flows there with each device's timeouts. It changes
// the rules only when what they are made of changes; rules themselves live in the judge.
// Safe for use by several goroutines.
type Hooks struct {
	nf    Applier // nil: Check only
	base  netfilter.Spec
	zones *filter.Zones
	off   *HookOffload

	mu        sync.Mutex
	cur       netfilter.Spec // in force, when known
	known     bool           // cur is what is installed
	installed bool           // an Apply has succeeded once
}

// HookOffload is what the hooks need of the kernel fast path: the kernel's timeout
// policies, which the rules name and the kernel must hold first. A nil *HookOffload is no
// fast path.
type HookOffload struct {
	// Ensure makes the policies exist (offload.Ensure); Prune removes sgd's others
	// (offload.Prune). Both run in sgd's namespace; nil for a publisher that only checks.
	Ensure, Prune func(ctx context.Context, keep []offload.Timeouts) error
}

// NewHooks returns the netfilter publisher. base holds everything but the devices:
// queues and fail mode; off, when set, turns the fast path on, with each device's zone
// (the one the judge tracks it in) as its connection label. nf may be nil for a
// publisher that only checks (`sgd check`).
func NewHooks(nf Applier, base netfilter.Spec, zones *filter.Zones, off *HookOffload) *Hooks {
	base.Interfaces, base.Ports, base.Offload = nil, nil, nil
	return &Hooks{nf: nf, base: base, zones: zones, off: off}
}

// Name is "netfilter rules".
func (h *Hooks) Name() string { return "netfilter rules" }

// Spec is the netfilter spec that publishes p.
func (h *Hooks) Spec(p *rules.Policy) netfilter.Spec {
	s := h.base
	s.Interfaces = slices.Clone(p.InterfaceNames())
	s.Ports = slices.Clone(p.PortNames())
	if h.off != nil {
		o := &netfilter.Offload{Zones: map[string]uint16{}, Timeouts: map[string][2]string{}}
		for _, name := range p.DeviceNames() {
			if z := h.zones.Of(name); z <= offload.MaxZone {
				o.Zones[name] = z
			}
			tcp, udp := kernelTimeouts(p, name).Names()
			o.Timeouts[name] = [2]string{tcp, udp}
		}
		s.Offload = o
	}
	return s
}

// kernelTimeouts is device name's connection_tracking as the kernel timeout policy the
// judge counts on when it offloads a flow (filter.KernelPolicy: the one place that says
// what sgd's policies set).
func kernelTimeouts(p *rules.Policy, name string) offload.Timeouts {
	t := p.Interface(name).Timeouts
	k := filter.KernelPolicy(conntrack.Timeouts{TCPEstablished: t.TCPEstablished, UDP: t.UDP, UDPStream: t.UDPStream})
	return offload.Timeouts{TCPEstablished: uint32(k.TCPEstablished / time.Second), UDP: uint32(k.UDP / time.Second),
		UDPStream: uint32(k.UDPStream / time.Second)}
}

// policies are the distinct timeout policies of p's devices.
func policies(p *rules.Policy) []offload.Timeouts {
	var ts []offload.Timeouts
	for _, name := range p.DeviceNames() {
		if t := kernelTimeouts(p, name); !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	return ts
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

// Publish installs the hooks for p's devices unless they are in force already. With the
// fast path, the kernel's timeout policies the rules name are made first, and sgd's
// policies no rule names any more are removed after.
func (h *Hooks) Publish(ctx context.Context, p *rules.Policy) error {
	s := h.Spec(p)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.known && reflect.DeepEqual(s, h.cur) {
		return nil
	}
	if h.off != nil && h.off.Ensure != nil {
		if err := h.off.Ensure(ctx, policies(p)); err != nil {
			return fmt.Errorf("kernel timeout policies: %w", err)
		}
	}
	if err := h.nf.Apply(ctx, s); err != nil {
		h.known = false // half applied, perhaps: the next Publish applies whatever it gets
		if h.installed {
			return fmt.Errorf("install netfilter rules for the new interfaces: %w", err)
		}
		return err
	}
	h.cur, h.known, h.installed = s, true, true
	if h.off != nil && h.off.Prune != nil {
		// A policy still attached to a live connection stays (the kernel refuses);
		// the next publish tries again. Nothing depends on it being gone.
		_ = h.off.Prune(ctx, policies(p))
	}
	return nil
}
