package daemon

import (
	"time"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/netfilter"
	"github.com/sgd-firewall/sgd/internal/nfqueue"
)

// reader joins one queue reader of the transport to one worker of the judge: it maps the
// hook's devices to the attachment point, judges, records the result, and turns it into
// the queue's verdict. It runs on the reader's goroutine only.
type reader struct {
	d        *Daemon
	w        *filter.Worker
	fastMask uint32 // Settings.FastPath: the mark field for the kernel fast path (0: off)
	drops    limiter
}

// readers returns one reader per worker.
func (d *Daemon) readers() []nfqueue.Handler {
	hs := make([]nfqueue.Handler, len(d.workers))
	for i, w := range d.workers {
		r := &reader{d: d, w: w, drops: limiter{rate: int64(d.set.DeniedLogPerSec)}}
		if d.set.FastPath {
			r.fastMask = FastPathMask
		}
		hs[i] = r
	}
	return hs
}

// Handle judges a packet of sgd's INPUT chain at its input interface (ingress) and one of
// its OUTPUT chain at its output interface (egress).
func (r *reader) Handle(p *nfqueue.Packet) nfqueue.Verdict {
	at := filter.Point{Dev: p.InDev, Dir: filter.DirIngress}
	if p.InDev == 0 {
		at = filter.Point{Dev: p.OutDev, Dir: filter.DirEgress}
	}
	res := r.w.Judge(p.Payload, at)
	if r.d.flows != nil {
		r.d.flows.record(r.w, res)
	}
	if res.Verdict == filter.Drop {
		if r.drops.allow(time.Now().Unix()) {
			r.d.logDrop(r.w, res)
		}
		return nfqueue.Verdict{}
	}
	if res.Reason == filter.ReasonRule && r.d.debug {
		r.d.logFlow(r.w, res)
	}
	v := nfqueue.Verdict{Accept: true}
	if r.fastMask != 0 && (res.Reason == filter.ReasonTracked || res.Reason == filter.ReasonRule) {
		// The kernel fast path: the packet's mark carries the zone, which netfilter saves
		// to the connection. The mark replaces the packet's whole mark: keep its other
		// bits (fwmark routing, SO_MARK, WireGuard). A zone the field cannot hold stays
		// on the queue.
		if mark, ok := netfilter.ZoneMark(r.fastMask, res.Zone); ok {
			v.Mark = p.Mark&^r.fastMask | mark
		}
	}
	return v
}

// logDrop logs a dropped packet (at the denied_log_per_second rate).
func (d *Daemon) logDrop(w *filter.Worker, r filter.Result) {
	d.log.Info("dropped", packetFields(w, r)...)
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
