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
// when that policy ends it no later than every point it crosses would; otherwise it stays
// on the queue, judged and timed by sgd.
//
// UDP is where the kernel's rule differs from AWS's: it times a UDP flow with its
// "replied" timeout once any packet arrives 2 s after the flow began and a reply was seen,
// where AWS keeps udp_timeout for one request and its answers and gives
// udp_stream_timeout only when the originator speaks again after a reply. A kernel
// "replied" timeout of udp_stream_timeout would keep a request answered twice, 3 s apart,
// for udp_stream_timeout: longer than AWS. So sgd's policies set both of the kernel's UDP
// timeouts to udp_timeout (KernelPolicy), and an offloaded UDP stream that falls silent
// for longer ends then — stricter than AWS, never looser; flows judged here keep AWS's
// rule exactly.

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
	// Forget forgets the offloaded flow of t (either direction) in the table in the
	// judge's place, when the kernel no longer carries its connection (Alive said no, or a
	// bare SYN reopens its ports): the kernel reports that connection's end later, when a
	// newer flow may hold the tuple, and the caller keeps what the table knew of the old
	// one for that report. Nil: the judge forgets it itself.
	Forget func(t conntrack.Tuple)
}

// KernelPolicy is the kernel's view of a device's timeouts t: what sgd's timeout policy
// for the device sets (TCP established; both UDP timeouts to udp_timeout, see above).
func KernelPolicy(t conntrack.Timeouts) conntrack.Timeouts {
	t.UDPStream = t.UDP
	return t
}

// kernelFits reports whether the kernel, timing a flow of protocol proto (TCP or UDP) with
// kernel, ends it when a point with timeouts point would, or (UDP streams) sooner: TCP's
// established timeout equal, and both of the kernel's UDP timeouts the point's
// udp_timeout.
func kernelFits(proto uint8, point, kernel *conntrack.Timeouts) bool {
	if proto == ipproto.TCP {
		return point.TCPEstablished == kernel.TCPEstablished
	}
	return kernel.UDP == point.UDP && kernel.UDPStream == point.UDP
}

// offloads collects, while a packet is judged, the flows it started at each point, for
// the decision at the end (Worker.settle).
type offloads struct {
	n       int                    // flows started, one per point that judged the packet
	t       [2]conntrack.Tuple     // their keys
	to      [2]*conntrack.Timeouts // their points' timeouts
	kernel  conntrack.Timeouts     // the policy the kernel gives the connection
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
		o.kernel = KernelPolicy(*is.timeouts)
		if is.port != nil && dir == DirIngress {
			o.kernel = w.e.opt.Offload.Kernel
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
		if !kernelFits(o.t[i].Proto, o.to[i], &o.kernel) {
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
	w.forgetOffloaded(t)
	return false
}

// forgetOffloaded forgets the offloaded flow of t, whose connection the kernel no longer
// carries (Offload.Forget).
func (w *Worker) forgetOffloaded(t conntrack.Tuple) {
	if o := w.e.opt.Offload; o != nil && o.Forget != nil {
		o.Forget(t)
		return
	}
	w.e.table.Forget(&t)
}
