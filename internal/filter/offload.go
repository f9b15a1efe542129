package filter

import (
	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// The judge's part in the kernel fast path (SPEC 4.7). When a packet starts a tracked
// TCP or UDP flow at every point it crosses, and the kernel will keep that flow exactly
// as sgd would, the judge says so (Result.Offload): the caller's verdict then asks the
// kernel to carry the flow past the queue (netfilter's offload mark), and the table keeps
// the flow as offloaded (conntrack.Table.Offload) until the kernel reports its end.
//
// "Exactly as sgd would" is about timeouts. The kernel gives a connection one timeout
// policy, when it creates it: sgd's raw-table rules attach the policy of the device the
// first packet came from — a port's for what its instance sends, a host interface's for
// what the host receives on it or sends through it — and the kernel's own defaults
// otherwise (what enters a port from a device sgd does not list). A flow is offloaded only
// when that policy has the timeouts of every point it crosses; otherwise it stays on the
// queue, judged and timed by sgd.

// MaxOffloadZone is the highest zone the kernel can carry: a zone is a bit of the
// connection's labels, and the kernel has 128 of them (bit 0 is left alone).
const MaxOffloadZone = 127

// Offload configures the judge's part in the kernel fast path; a nil *Offload in Options
// turns it off.
type Offload struct {
	// Kernel is the timeouts the kernel gives a connection it creates with no sgd policy
	// (offload.KernelDefaults): only TCPEstablished, UDP and UDPStream are compared.
	Kernel conntrack.Timeouts
	// Alive reports whether the kernel still tracks the connection of t (either direction;
	// t.Zone is sgd's and ignored). The judge asks it when a packet that reaches the queue
	// belongs to an offloaded flow: the kernel may have ended the flow a moment ago (its
	// end is reported asynchronously), and then the packet is a new flow's, for the rules
	// to judge. Nil: the flow is taken as alive.
	Alive func(t conntrack.Tuple) bool
}

// sameTimeouts reports whether a and b time out a flow of protocol proto (TCP or UDP)
// alike, as far as a kernel timeout policy sets it.
func sameTimeouts(proto uint8, a, b *conntrack.Timeouts) bool {
	if proto == ipproto.TCP {
		return a.TCPEstablished == b.TCPEstablished
	}
	return a.UDP == b.UDP && a.UDPStream == b.UDPStream
}

// offloads collects, while a packet is judged, the flows it started at each point, for
// the decision at the end (Worker.settle).
type offloads struct {
	n       int                    // flows started, one per point that judged the packet
	t       [2]conntrack.Tuple     // their keys
	to      [2]*conntrack.Timeouts // their points' timeouts
	kernel  *conntrack.Timeouts    // the policy the kernel gives the connection
	blocked bool                   // a point cannot be offloaded: the packet's flow stays on the queue
}

// started records the flow a point's rules started for the packet (decide).
func (w *Worker) started(is *ifaceState, dir Dir, t *conntrack.Tuple) {
	o := &w.off
	if w.e.opt.Offload == nil || o.blocked {
		return
	}
	if o.n == len(o.t) || is.id == 0 || is.id > MaxOffloadZone || !ipproto.HasPorts(t.Proto) {
		o.blocked = true
		return
	}
	if o.n == 0 {
		// The first point judged is where the kernel creates the connection: a port's
		// egress or a host interface gets that device's policy, a port's ingress (from a
		// device sgd does not list) the kernel's defaults.
		o.kernel = is.timeouts
		if is.port != nil && dir == DirIngress {
			o.kernel = &w.e.opt.Offload.Kernel
		}
	}
	o.t[o.n], o.to[o.n] = *t, is.timeouts
	o.n++
}

// settle decides the offload of the packet just judged at points points: every point
// must have started a flow the kernel will time like sgd; the flows are then marked
// offloaded, each with the packet sgd counted (n bytes).
func (w *Worker) settle(points int, n int, res *Result) {
	o := &w.off
	if o.n > 0 || o.blocked {
		res.Offload = w.offload(points, n, res)
		*o = offloads{}
	}
}

func (w *Worker) offload(points int, n int, res *Result) bool {
	o := &w.off
	if o.blocked || o.n != points || res.Verdict != Accept || res.Reason != ReasonRule {
		return false
	}
	for i := range o.n {
		if !sameTimeouts(o.t[i].Proto, o.to[i], o.kernel) {
			return false
		}
	}
	now := w.e.opt.Now()
	for i := range o.n {
		if !w.e.table.Offload(&o.t[i], conntrack.Counted{Packets: 1, Bytes: uint64(n)}, now) {
			return false // cannot happen: the flow was inserted by this packet
		}
	}
	return true
}

// alive reports whether a flow found offloaded in the table still lives in the kernel;
// when it does not, it is forgotten here, and the packet goes on to the rules.
func (w *Worker) alive(t conntrack.Tuple) bool {
	o := w.e.opt.Offload
	if o == nil || o.Alive == nil || o.Alive(t) {
		return true
	}
	w.e.table.Forget(&t)
	return false
}
