package filter

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/ipproto"
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
	// Share it with whatever else needs the numbers (the fast path's marks).
	Zones *Zones
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
}

// state is one published policy with what the packet path needs precomputed.
type state struct {
	pol     *rules.Policy
	byName  map[string]*ifaceState
	byIndex map[uint32]*ifaceState
	local   addrSet // Host.Local
	// hits[w][rule] counts new flows (and untracked packets) each rule allowed, per worker.
	hits [][]atomic.Uint64
}

type ifaceState struct {
	id       uint16 // the interface's zone (Zones.Of)
	name     string
	itf      *rules.Iface
	timeouts *conntrack.Timeouts
	nets     []netip.Prefix // Host.Nets: the link, for the DHCPv4 exemption
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
	st := &state{pol: p, byName: map[string]*ifaceState{}, byIndex: map[uint32]*ifaceState{}, local: newAddrSet(h.Local)}
	for _, name := range p.InterfaceNames() {
		itf := p.Interface(name)
		to := conntrack.DefaultTimeouts()
		to.TCPEstablished = itf.Timeouts.TCPEstablished
		to.UDP = itf.Timeouts.UDP
		to.UDPStream = itf.Timeouts.UDPStream
		is := &ifaceState{id: e.opt.Zones.Of(name), name: name, itf: itf, timeouts: &to, nets: h.Nets[name]}
		st.byName[name] = is
		if idx, ok := h.Index[name]; ok {
			st.byIndex[idx] = is
		}
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

// RuleKey names a rule across reloads: its group and its security group rule id.
type RuleKey struct{ Group, Rule string }

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
	if is == nil {
		return st, nil, true
	}
	n := *st
	n.byIndex = make(map[uint32]*ifaceState, len(st.byIndex)+1)
	for k, v := range st.byIndex {
		n.byIndex[k] = v
	}
	n.byIndex[index] = is
	e.state.Store(&n)
	return &n, is, true
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
	for _, w := range ws {
		for d := range 2 {
			for r := range NumReasons {
				packets[d][r] += w.C.Packets[d][r].Load()
				bytes[d][r] += w.C.Bytes[d][r].Load()
			}
		}
	}
	return packets, bytes
}

// Result is the outcome of one packet, for the caller's logs and flow records.
type Result struct {
	Verdict Verdict
	Reason  Reason
	Dir     Dir
	Iface   string
	Zone    uint16 // the interface's zone (0 when the packet was not resolved to one)
	Rule    rules.RuleID
}

// Packet returns the packet the worker decoded last (valid until the next Judge).
func (w *Worker) Packet() *packet.Parsed { return &w.p }

// Judge decides one packet. b holds the packet from its IP header (possibly truncated to
// the copy range); inDev is the input interface index for INPUT-hook packets, outDev the
// output one for OUTPUT (0 = absent). It allocates nothing in the steady state.
func (w *Worker) Judge(b []byte, inDev, outDev uint32) Result {
	dir, dev := DirIngress, inDev
	if inDev == 0 {
		dir, dev = DirEgress, outDev
	}
	res := w.judge(b, dir, dev)
	res.Dir = dir
	n := uint64(w.p.Length)
	if n == 0 {
		n = uint64(len(b))
	}
	w.C.Packets[dir][res.Reason].Add(1)
	w.C.Bytes[dir][res.Reason].Add(n)
	res.Verdict = res.Reason.Verdict()
	return res
}

func (w *Worker) judge(b []byte, dir Dir, dev uint32) Result {
	e := w.e
	st := e.state.Load()
	p := &w.p
	if !w.dec.Decode(b, p) {
		return Result{Reason: ReasonMalformed}
	}
	is := st.byIndex[dev]
	if is == nil {
		var known bool
		if st, is, known = e.learn(dev); !known {
			// sgd's rules queue only configured interfaces, by name: an index that does not
			// resolve (the link went away with its packets in flight) is not let through.
			return Result{Reason: ReasonUnknownIface}
		}
		if is == nil {
			// A name the config does not list: an interface a reload has just removed,
			// whose hooks go away next. sgd no longer filters it.
			return Result{Reason: ReasonExempt}
		}
	}
	res := Result{Iface: is.name, Zone: is.id}
	if p.LaterFragment {
		// The kernel reassembles what arrives (IPv4 always; IPv6 because sgd's rules load
		// conntrack) and fragments what leaves after the hooks, so only a datagram cut up
		// by a raw socket gets here in pieces: its ports cannot be judged (SPEC 1.4).
		res.Reason = ReasonFragment
		return res
	}
	if p.Proto == ipproto.ICMPv6 && p.ICMPType >= 133 && p.ICMPType <= 137 {
		res.Reason = ReasonExempt // neighbour discovery is the fabric's, not the SG's (SPEC 1.2)
		return res
	}
	if dir == DirIngress {
		if st.local.has(p.Src) {
			// Only a forged packet arrives from the host's own address (the host's
			// own traffic to itself runs on loopback): a VPC never delivers one, and it
			// would match rules that reference the host's own groups (SPEC 1.1).
			res.Reason = ReasonSpoofedLocal
			return res
		}
	}
	if e.opt.ExemptDHCP && p.Proto == ipproto.UDP && dhcpExempt(p, dir, is.nets, st.local) {
		res.Reason = ReasonExempt
		return res
	}
	now := e.opt.Now()
	t := conntrack.Tuple{Proto: p.Proto, Src: p.Src, Dst: p.Dst, Zone: is.id}
	startsFlow := true
	switch p.Proto {
	case ipproto.TCP:
		t.SrcPort, t.DstPort = p.SrcPort, p.DstPort
		startsFlow = p.TCPFlags&(packet.FlagSYN|packet.FlagACK|packet.FlagRST) == packet.FlagSYN
	case ipproto.UDP:
		t.SrcPort, t.DstPort = p.SrcPort, p.DstPort
	case ipproto.ICMP, ipproto.ICMPv6:
		if isEcho(p.Proto, p.ICMPType) {
			t.SrcPort, t.DstPort = p.ICMPID, p.ICMPID
			startsFlow = isEchoRequest(p.Proto, p.ICMPType)
		} else {
			startsFlow = false
			if e.opt.AllowRelatedICMP && p.Inner.Valid && relatedError(p.Proto, p.ICMPType) && w.related(p, dir, is.id, now) {
				res.Reason = ReasonRelatedICMP
				return res
			}
		}
	}
	if p.Proto != ipproto.ICMP && p.Proto != ipproto.ICMPv6 {
		if m, _ := e.table.Lookup(&t, p.TCPFlags, now); m != conntrack.MatchNone {
			res.Reason = ReasonTracked
			return res
		}
	} else if isEcho(p.Proto, p.ICMPType) {
		// The flow is keyed by identifier only: a request rides it only from the side that
		// sent the first request, a reply only from the other side (as Linux does).
		if m, _ := e.table.Lookup(&t, 0, now); (m == conntrack.MatchOriginal && startsFlow) || (m == conntrack.MatchReply && !startsFlow) {
			res.Reason = ReasonTracked
			return res
		}
	}
	remote := p.Src
	if dir == DirEgress {
		remote = p.Dst
	}
	rid, untracked := is.itf.Decide(rules.Direction(dir), p.Proto, remote, p.DstPort, p.ICMPType, p.ICMPCode)
	if rid == 0 {
		res.Reason = ReasonNoRule
		return res
	}
	res.Rule = rid
	if h := st.hits; w.id < len(h) && int(rid) < len(h[w.id]) {
		h[w.id][rid].Add(1)
	}
	switch {
	case untracked:
		res.Reason = ReasonUntracked
		return res
	case !startsFlow:
		res.Reason = ReasonRuleNoFlow
		return res
	case (p.Proto == ipproto.TCP || p.Proto == ipproto.UDP) && replyOfUntracked(is.itf, dir, p.Proto, remote, p.SrcPort):
		// The packet answers a flow the other direction allows untracked (AWS's DNS
		// server: udp/53 in from 0.0.0.0/0, all out). It must not start a tracked flow of
		// its own, or the untracked flow would live on through it after its rule is gone.
		res.Reason = ReasonUntracked
		return res
	}
	meta := conntrack.Meta{Timeouts: is.timeouts, Iface: is.id, Ingress: dir == DirIngress, Rule: uint32(rid)}
	switch e.table.Insert(&t, p.TCPFlags, meta, now) {
	case conntrack.Full:
		res.Reason = ReasonTableFull
	case conntrack.NoFlow:
		res.Reason = ReasonRuleNoFlow // e.g. SYN+FIN: allowed by the rules, starts nothing
	default:
		res.Reason = ReasonRule
	}
	return res
}

// replyOfUntracked reports whether a packet (direction dir, to or from remote, with source
// port sport) is the reply of a flow the opposite direction allows untracked: the packet
// the other way, remote → our sport, would be allowed by an untracked rule.
func replyOfUntracked(itf *rules.Iface, dir Dir, proto uint8, remote netip.Addr, sport uint16) bool {
	r, untracked := itf.Decide(rules.Direction(dir^1), proto, remote, sport, 0, 0)
	return r != 0 && untracked
}

// relatedError reports whether an ICMP message of this type may pass as related to a
// tracked flow: destination unreachable and time exceeded (RFC 792 types 3 and 11;
// RFC 4443 types 1 and 3) and ICMPv6 packet too big (type 2), the errors SPEC 1.4 names.
// Redirects, source quench and parameter problems quote a packet too, but change routes
// or rates or report a header fault: they are judged by the rules.
func relatedError(proto, typ uint8) bool {
	if proto == ipproto.ICMP {
		return typ == 3 || typ == 11
	}
	return typ >= 1 && typ <= 3
}

// related reports whether the ICMP error in p, seen in direction dir, quotes a packet of
// a flow tracked in zone that went the other way: an error arriving quotes a packet this
// host sent (from the error's destination), one leaving quotes a packet it received.
func (w *Worker) related(p *packet.Parsed, dir Dir, zone uint16, now int64) bool {
	in := &p.Inner
	if (dir == DirIngress && in.Src != p.Dst) || (dir == DirEgress && in.Dst != p.Src) {
		return false
	}
	t := conntrack.Tuple{Proto: in.Proto, Src: in.Src, Dst: in.Dst, Zone: zone}
	switch in.Proto {
	case ipproto.TCP, ipproto.UDP:
		t.SrcPort, t.DstPort = in.SrcPort, in.DstPort
	case ipproto.ICMP, ipproto.ICMPv6:
		if !isEcho(in.Proto, in.ICMPType) {
			return false
		}
		t.SrcPort, t.DstPort = in.ICMPID, in.ICMPID
	}
	return w.e.table.Peek(&t, now)
}

func isEcho(proto, typ uint8) bool {
	if proto == ipproto.ICMP {
		return typ == 8 || typ == 0
	}
	return typ == 128 || typ == 129
}

func isEchoRequest(proto, typ uint8) bool {
	if proto == ipproto.ICMP {
		return typ == 8
	}
	return typ == 128
}

// ID is the worker's index among the engine's workers (0-based).
func (w *Worker) ID() int { return w.id }
