package filter

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/packet"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// Options configure an Engine. Table and Now are required.
type Options struct {
	Table *conntrack.Table
	// Now returns monotonic nanoseconds; the engine never reads the clock itself.
	Now func() int64
	// AllowRelatedICMP accepts ICMP errors whose embedded header belongs to a tracked
	// flow (SPEC 1.4; off by default as in AWS, where PMTUD needs an explicit rule).
	AllowRelatedICMP bool
	// IfName resolves an interface index the engine has not seen (nil: net.InterfaceByIndex).
	IfName func(index uint32) (string, bool)
	// ExemptDHCP lets DHCP client traffic through unjudged, scoped to the link (see
	// dhcpExempt; SPEC 1.2).
	ExemptDHCP bool
	// Zones numbers the interfaces for per-interface tracking (nil: a new numbering).
	// Share it with whatever else needs the numbers (the fast path's labels).
	Zones *Zones
	// Offload, when set, lets the judge hand flows to the kernel's conntrack (SPEC 4.7;
	// see Offload). Nil: every packet is judged here.
	Offload *Offload
}

// Engine judges packets against the current policy and the connection table. It is safe
// for concurrent use: each queue reader judges through its own Worker; the policy is
// replaced whole with SetPolicy and read without locks.
type Engine struct {
	opt   Options
	table *conntrack.Table
	state atomic.Pointer[state]

	mu      sync.Mutex // guards workers and retired
	workers []*Worker
	retired map[RuleKey]uint64 // hits of policies no longer in force
	refs    ruleRefs
	// offloaded counts the packets of offloaded flows that the kernel carried past the
	// queue (CountOffloaded), as tracked.
	offloaded Counters
}

// state is one published policy with what the packet path needs precomputed.
type state struct {
	pol     *rules.Policy
	byName  map[string]*ifaceState
	byIndex map[uint32]*ifaceState
	// others are indexes seen on packets that name a device the policy lists neither as
	// an interface nor as a port (an uplink, a bridge, an unlisted port): remembered so
	// that their packets do not look the name up again. A reload starts it afresh.
	others map[uint32]bool
	local  addrSet // Host.Local
	ports  bool    // the policy lists ports (else IsPort is false without a lookup)
	// hits[w][rule] counts new flows (and untracked packets) each rule allowed, per worker.
	hits [][]atomic.Uint64
	// refs[rule] is the rule's stable number (ruleRefs), stored with the flows it starts.
	refs []uint32
}

type ifaceState struct {
	id       uint16 // the interface's zone (Zones.Of)
	name     string
	itf      *rules.Iface
	timeouts *conntrack.Timeouts
	nets     []netip.Prefix // Host.Nets: the link, for the DHCPv4 exemption
	port     *portScreen    // a port's source/dest check; nil for an interface
}

// New returns an engine with no policy: until SetPolicy, every packet is dropped.
func New(opt Options) *Engine {
	if opt.IfName == nil {
		opt.IfName = ifNameByIndex
	}
	if opt.Zones == nil {
		opt.Zones = NewZones()
	}
	e := &Engine{opt: opt, table: opt.Table, retired: map[RuleKey]uint64{}}
	e.state.Store(&state{byName: map[string]*ifaceState{}, byIndex: map[uint32]*ifaceState{}})
	return e
}

// Table returns the connection table the engine uses.
func (e *Engine) Table() *conntrack.Table { return e.table }

// Policy returns the policy in force (nil before the first SetPolicy).
func (e *Engine) Policy() *rules.Policy { return e.state.Load().pol }

// SetPolicy publishes a new compiled policy with what is known of the host (ReadHost);
// the very next packet sees both. Tracked flows are kept (SPEC 1.4: they pass until they
// idle out), each in its interface's zone, which a name keeps across reloads; untracked
// flows have no entry, so the new rules judge their next packet.
func (e *Engine) SetPolicy(p *rules.Policy, h Host) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := &state{pol: p, byName: map[string]*ifaceState{}, byIndex: map[uint32]*ifaceState{}, local: newAddrSet(h.Local),
		ports: len(p.PortNames()) > 0}
	for _, name := range p.DeviceNames() {
		itf := p.Interface(name)
		to := conntrack.DefaultTimeouts()
		to.TCPEstablished = itf.Timeouts.TCPEstablished
		to.UDP = itf.Timeouts.UDP
		to.UDPStream = itf.Timeouts.UDPStream
		is := &ifaceState{id: e.opt.Zones.Of(name), name: name, itf: itf, timeouts: &to, nets: h.Nets[name], port: newPortScreen(itf.Port)}
		st.byName[name] = is
		if idx, ok := h.Index[name]; ok {
			st.byIndex[idx] = is
		}
	}
	st.refs = make([]uint32, len(p.Rules))
	for id := 1; id < len(p.Rules); id++ {
		st.refs[id] = e.refs.of(ruleKey(&p.Rules[id]))
	}
	st.hits = make([][]atomic.Uint64, len(e.workers))
	for i := range st.hits {
		st.hits[i] = make([]atomic.Uint64, len(p.Rules))
	}
	old := e.state.Swap(st)
	if old.pol != nil {
		// Fold the old policy's counts in now, so that the per-rule series never dip (a
		// dip reads as a counter reset); workers that loaded the old state may still count
		// into it for an instant, so its stragglers are folded in a second later.
		folded := e.foldLocked(old, nil)
		time.AfterFunc(time.Second, func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.foldLocked(old, folded)
		})
	}
}

func ruleKey(ri *rules.RuleInfo) RuleKey { return RuleKey{Group: ri.GroupID, Rule: ri.Rule.ID} }

// foldLocked adds old's per-rule counts, less what was already folded (by rule index), to
// the retired totals and returns the counts it saw. e.mu is held.
func (e *Engine) foldLocked(old *state, already []uint64) []uint64 {
	seen := make([]uint64, len(old.pol.Rules))
	for _, h := range old.hits {
		for id := 1; id < len(h); id++ {
			seen[id] += h[id].Load()
		}
	}
	for id := 1; id < len(seen); id++ {
		n := seen[id]
		if already != nil {
			n -= already[id]
		}
		if n > 0 {
			e.retired[ruleKey(&old.pol.Rules[id])] += n
		}
	}
	return seen
}

// RuleHits returns, per rule, how many new flows (and untracked packets) each rule allowed
// since the engine started, across reloads: a rule keeps its count under its id when
// other rules change, and a removed rule's count stops growing.
func (e *Engine) RuleHits() map[RuleKey]uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[RuleKey]uint64, len(e.retired))
	for k, v := range e.retired {
		out[k] = v
	}
	st := e.state.Load()
	if st.pol == nil {
		return out
	}
	for _, h := range st.hits {
		for id := 1; id < len(h); id++ {
			if n := h[id].Load(); n > 0 {
				out[ruleKey(&st.pol.Rules[id])] += n
			}
		}
	}
	return out
}

// learn adds an interface index seen on a packet to the published state (copy on write)
// and returns that state with the interface: the caller must use this state, not the one
// it loaded before, since a reload may have published a newer one meanwhile. known is false
// when the index does not resolve to a name at all.
func (e *Engine) learn(index uint32) (st *state, is *ifaceState, known bool) {
	if index == 0 {
		return nil, nil, false
	}
	name, ok := e.opt.IfName(index)
	if !ok {
		return nil, nil, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	st = e.state.Load()
	is = st.byName[name]
	n := *st
	if is == nil {
		if st.others[index] {
			return st, nil, true
		}
		n.others = make(map[uint32]bool, len(st.others)+1)
		for k := range st.others {
			n.others[k] = true
		}
		n.others[index] = true
		e.state.Store(&n)
		return &n, nil, true
	}
	n.byIndex = make(map[uint32]*ifaceState, len(st.byIndex)+1)
	for k, v := range st.byIndex {
		n.byIndex[k] = v
	}
	n.byIndex[index] = is
	e.state.Store(&n)
	return &n, is, true
}

// IsPort reports whether the device with index dev is one of the policy's ports (SPEC
// 4.3), as opposed to a host interface or a device sgd does not list. The daemon's
// reader asks it to map a hook's devices to attachment points. It allocates nothing once
// the device has been seen.
func (e *Engine) IsPort(dev uint32) bool {
	if dev == 0 {
		return false
	}
	st := e.state.Load()
	if !st.ports {
		return false // a host's own interfaces only: the common case costs no lookup
	}
	if is := st.byIndex[dev]; is != nil {
		return is.port != nil
	}
	if st.others[dev] {
		return false
	}
	_, is, _ := e.learn(dev)
	return is != nil && is.port != nil
}

// Counters are one worker's packet and byte counts by direction and reason. Each worker
// writes its own; readers fold them (no shared lock or cache line on the packet path).
type Counters struct {
	Packets [2][NumReasons]atomic.Uint64
	Bytes   [2][NumReasons]atomic.Uint64
	_       [64]byte
}

// Worker judges the packets of one queue reader. It is not safe for concurrent use.
type Worker struct {
	e   *Engine
	id  int
	dec *packet.Decoder
	p   packet.Parsed
	off offloads // the flows the packet being judged started (settle)
	C   Counters
}

// NewWorker returns a worker; create all workers before the first SetPolicy so that the
// per-rule counters have a slot for each (a worker created later counts rules from the
// next SetPolicy on).
func (e *Engine) NewWorker() *Worker {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := &Worker{e: e, id: len(e.workers), dec: packet.NewDecoder()}
	e.workers = append(e.workers, w)
	return w
}

// Counters returns the sum of every worker's counters.
func (e *Engine) Counters() (packets, bytes [2][NumReasons]uint64) {
	e.mu.Lock()
	ws := e.workers
	e.mu.Unlock()
	for _, c := range append([]*Counters{&e.offloaded}, workerCounters(ws)...) {
		for d := range 2 {
			for r := range NumReasons {
				packets[d][r] += c.Packets[d][r].Load()
				bytes[d][r] += c.Bytes[d][r].Load()
			}
		}
	}
	return packets, bytes
}

func workerCounters(ws []*Worker) []*Counters {
	cs := make([]*Counters, len(ws))
	for i, w := range ws {
		cs[i] = &w.C
	}
	return cs
}

// Offloaded returns the packets and bytes CountOffloaded added: what the kernel carried of
// offloaded flows without queueing it.
func (e *Engine) Offloaded() (packets, bytes uint64) {
	for d := range 2 {
		packets += e.offloaded.Packets[d][ReasonTracked].Load()
		bytes += e.offloaded.Bytes[d][ReasonTracked].Load()
	}
	return packets, bytes
}

// CountOffloaded adds packets of an offloaded flow that the kernel carried without
// queueing them (its accounting, SPEC 4.7) to the counters, as tracked packets crossing
// a point in direction dir.
func (e *Engine) CountOffloaded(dir Dir, packets, bytes uint64) {
	e.offloaded.Packets[dir&1][ReasonTracked].Add(packets)
	e.offloaded.Bytes[dir&1][ReasonTracked].Add(bytes)
}

// Point is an attachment point, where a packet is judged: a device (a host interface or
// an instance's port) by its index, and the direction the packet crosses it in.
// Ingress is toward the host or instance the groups protect, egress away from it.
type Point struct {
	Dev uint32
	Dir Dir
}

// Result is the outcome of one packet, for the caller's logs and flow records.
type Result struct {
	Verdict Verdict
	Reason  Reason
	Dir     Dir
	Iface   string
	// ENI is the network interface id of a port's point ("" for a host interface): the
	// interface-id of its flow log records.
	ENI  string
	Zone uint16 // the attachment point's zone (0 when the packet was not resolved to one)
	// Rule is the rule that allowed a new flow or an untracked packet (nil otherwise): its
	// GroupID and Rule.ID name it. It points into an immutable policy, valid for good.
	Rule *rules.RuleInfo
	// Offload says the packet started a flow the kernel may carry from here on (Offload):
	// the caller's verdict asks it to, and the table keeps the flow as offloaded.
	Offload bool
}

// Packet returns the packet the worker decoded last (valid until the next Judge).
func (w *Worker) Packet() *packet.Parsed { return &w.p }

// Judge decides one packet at one attachment point. b holds the packet from its IP
// header (possibly truncated to the copy range). It allocates nothing in the steady state.
func (w *Worker) Judge(b []byte, at Point) Result {
	res := w.judgeOne(b, at)
	w.settle(1, w.length(b), &res)
	return res
}

// judgeOne is Judge without the offload decision.
func (w *Worker) judgeOne(b []byte, at Point) Result {
	res := Result{Reason: ReasonMalformed, Dir: at.Dir}
	if w.dec.Decode(b, &w.p) {
		w.judge(at, &res)
	}
	w.count(len(b), &res)
	return res
}

// JudgePath decides a packet that crosses two attachment points, as one between two
// instances does (SPEC 4.3): it leaves the first through from (its egress), then arrives
// at the second through to (its ingress), each point with its own groups and tracking. A
// drop at from is the verdict; otherwise to's verdict is. Each point judged is counted.
func (w *Worker) JudgePath(b []byte, from, to Point) Result {
	res := w.judgeOne(b, from)
	if res.Verdict != Drop {
		res = Result{Dir: to.Dir}
		w.judge(to, &res)
		w.count(len(b), &res)
	}
	w.settle(2, w.length(b), &res)
	return res
}

// length is the packet's length: its IP header's, when it was decoded, or len(b).
func (w *Worker) length(b []byte) int {
	if w.p.Length != 0 {
		return int(w.p.Length)
	}
	return len(b)
}

// count adds the packet to the worker's counters and sets the verdict.
func (w *Worker) count(n int, res *Result) {
	if w.p.Length != 0 {
		n = int(w.p.Length)
	}
	d := res.Dir & 1
	w.C.Packets[d][res.Reason].Add(1)
	w.C.Bytes[d][res.Reason].Add(uint64(n))
	res.Verdict = res.Reason.Verdict()
}

// judge runs the stages over the decoded packet w.p at one point: resolve the point, then
// screen → track → decide, each deciding res.Reason or passing the packet on. (A stateless
// stage, such as a network ACL, would go between screen and track.)
func (w *Worker) judge(at Point, res *Result) {
	e := w.e
	st, is, ok := e.resolve(at, res)
	if !ok {
		return
	}
	p := &w.p
	if sc := screen(p, at.Dir, is.port, is.nets, &st.local, e.opt.ExemptDHCP); sc != screenPass {
		res.Reason = screenings[sc].reason
		return
	}
	now := e.opt.Now()
	var f flowRef
	f.of(p, is.id)
	if r, ok := w.track(p, at.Dir, &f, now); ok {
		res.Reason = r
		return
	}
	w.decide(st, is, at.Dir, &f, res, now)
}

// resolve finds the attachment point's interface in the published state and names it in
// res. ok is false when the point decides the packet on its own (res.Reason): an index
// that resolves to no interface, or an interface the policy does not list.
func (e *Engine) resolve(at Point, res *Result) (st *state, is *ifaceState, ok bool) {
	st = e.state.Load()
	if is = st.byIndex[at.Dev]; is == nil && st.others[at.Dev] {
		res.Reason = ReasonExempt // as below: a device the policy does not list
		return st, nil, false
	}
	if is == nil {
		var known bool
		if st, is, known = e.learn(at.Dev); !known {
			// sgd's rules queue only configured interfaces, by name: an index that does
			// not resolve (the link went away with its packets in flight) is not let
			// through.
			res.Reason = ReasonUnknownIface
			return st, nil, false
		}
		if is == nil {
			// A name the config does not list: an interface a reload has just removed,
			// whose hooks go away next. sgd no longer filters it.
			res.Reason = ReasonExempt
			return st, nil, false
		}
	}
	res.Iface, res.Zone = is.name, is.id
	if pi := is.itf.Port; pi != nil {
		res.ENI = pi.ENI
	}
	return st, is, true
}

// IsPort is Engine.IsPort, for the worker's reader.
func (w *Worker) IsPort(dev uint32) bool { return w.e.IsPort(dev) }

// ID is the worker's index among the engine's workers (0-based).
func (w *Worker) ID() int { return w.id }
