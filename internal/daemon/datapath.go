package daemon

import (
	"time"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/nfqueue"
	"github.com/sgd-firewall/sgd/internal/offload"
)

// reader joins one queue reader of the transport to one worker of the judge: it maps the
// hook's devices to the attachment point, judges, records the result, and turns it into
// the queue's verdict. It runs on the reader's goroutine only.
type reader struct {
	d     *Daemon
	w     *filter.Worker
	audit bool // Settings.Audit: accept what the judge drops (it is counted would_drop)
	drops limiter
}

// readers returns one reader per worker.
func (d *Daemon) readers() []nfqueue.Handler {
	hs := make([]nfqueue.Handler, len(d.workers))
	for i, w := range d.workers {
		hs[i] = &reader{d: d, w: w, audit: d.set.Audit, drops: limiter{rate: int64(d.set.DeniedLogPerSec)}}
	}
	return hs
}

// Handle judges a packet of sgd's INPUT chain at its input interface (ingress) and one of
// its OUTPUT chain at its output interface (egress); a packet a port sends or receives at
// that port (points). The rest of the doc is audit mode's.
//
// In audit mode a packet the judge drops is accepted instead, after being counted, logged
// and flow-logged as the drop it would be. The judge is the same in both modes, so a
// would-drop packet changes the connection table exactly as a drop does: not at all. It
// starts no flow and advances none, and what follows it is judged as if it had been
// dropped (the rest of a blocked TCP connection is would_drop too, by the rules alone). So
// the would_drop counts are what enforcing would drop, but for one difference: the
// host's own answers to would-drop packets are judged by the egress rules, and an allowed
// UDP answer starts a tracked flow as any outbound datagram does (with enforcing, the
// host would never have answered), so the client's later datagrams of that exchange
// count as tracked.
func (r *reader) Handle(p *nfqueue.Packet) nfqueue.Verdict {
	res := r.judge(p)
	if r.d.flows != nil {
		r.d.flows.record(r.w, res)
	}
	v := nfqueue.Verdict{Accept: true}
	if res.Verdict == filter.Drop {
		if r.drops.allow(time.Now().Unix()) {
			r.d.logDrop(r.w, res)
		}
		v.Accept = r.audit
	} else if res.Reason == filter.ReasonRule && r.d.debug {
		r.d.logFlow(r.w, res)
	}
	switch {
	case !v.Accept:
	case res.Offload:
		// The kernel fast path (the judge offers only with it on): the mark bit asks
		// sgd's rules to label the connection at every sgd point the packet crosses.
		// The mark replaces the packet's whole mark: keep its other bits (fwmark
		// routing, SO_MARK, WireGuard).
		v.Mark, v.SetMark = p.Mark|offload.Mark, true
	case p.Mark&offload.Mark != 0:
		// The bit is sgd's alone: a packet that comes with it (a socket's SO_MARK, a
		// restored connection mark) must not offload a flow the judge did not offer.
		v.Mark, v.SetMark = p.Mark&^offload.Mark, true
	}
	return v
}

// judge maps the packet's devices to attachment points and judges it there.
//
// A device is the bridge port when the packet was bridged (PhysIn/PhysOut), the device
// otherwise (a routed veth). The instance behind a port is what the port's groups
// protect: what comes from a port leaves it (its egress), what goes to a port arrives at
// it (its ingress). So (SPEC 4.3):
//   - port A to port B (FORWARD): A's egress, then B's ingress (JudgePath), each point with
//     its own tracking;
//   - a port and anything else (the uplink, the host itself, a port sgd does not list):
//     that port's point alone;
//   - no port: the host's own hooks, INPUT at the input interface (ingress), OUTPUT at the
//     output interface (egress).
func (r *reader) judge(p *nfqueue.Packet) filter.Result {
	in, out := p.InDev, p.OutDev
	if p.PhysIn != 0 {
		in = p.PhysIn
	}
	if p.PhysOut != 0 {
		out = p.PhysOut
	}
	from, to := r.w.IsPort(in), r.w.IsPort(out)
	switch {
	case from && to:
		return r.w.JudgePath(p.Payload, filter.Point{Dev: in, Dir: filter.DirEgress}, filter.Point{Dev: out, Dir: filter.DirIngress})
	case from:
		return r.w.Judge(p.Payload, filter.Point{Dev: in, Dir: filter.DirEgress})
	case to:
		return r.w.Judge(p.Payload, filter.Point{Dev: out, Dir: filter.DirIngress})
	case p.InDev == 0:
		return r.w.Judge(p.Payload, filter.Point{Dev: p.OutDev, Dir: filter.DirEgress})
	}
	// INPUT, or a forwarded packet of a port a reload has just removed (its hooks go
	// next): at the input device, which the policy does not list in the second case.
	return r.w.Judge(p.Payload, filter.Point{Dev: p.InDev, Dir: filter.DirIngress})
}

// logDrop logs a dropped packet, or in audit mode one that would have been (at the
// denied_log_per_second rate).
func (d *Daemon) logDrop(w *filter.Worker, r filter.Result) {
	msg := "dropped"
	if d.set.Audit {
		msg = "would drop"
	}
	d.log.Info(msg, packetFields(w, r)...)
}

// logFlow logs, at debug level, a new tracked flow and the rule that let it in.
func (d *Daemon) logFlow(w *filter.Worker, r filter.Result) {
	d.log.Debug("flow allowed", append(packetFields(w, r), zap.String("group", r.Rule.GroupID), zap.String("rule", r.Rule.Rule.ID))...)
}

func packetFields(w *filter.Worker, r filter.Result) []zap.Field {
	p := w.Packet()
	fields := []zap.Field{zap.String("iface", r.Iface), zap.Stringer("direction", r.Dir), zap.Stringer("reason", r.Reason),
		zap.String("protocol", ipproto.Name(int(p.Proto)))}
	if p.Src.IsValid() {
		fields = append(fields, zap.Stringer("src", p.Src), zap.Stringer("dst", p.Dst))
	}
	switch {
	case ipproto.HasPorts(p.Proto):
		fields = append(fields, zap.Uint16("src_port", p.SrcPort), zap.Uint16("dst_port", p.DstPort))
	case ipproto.IsICMP(p.Proto):
		fields = append(fields, zap.Uint8("icmp_type", p.ICMPType), zap.Uint8("icmp_code", p.ICMPCode))
	}
	return fields
}
