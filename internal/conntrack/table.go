// Package conntrack is sgd's own connection table: it remembers the flows the rules
// allowed so that their later packets, in both directions, pass without the rules (SPEC
// 1.4, after AWS's security group connection tracking).
package conntrack

import (
	"context"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// DefaultCapacity is SPEC's max_tracked_connections default.
const DefaultCapacity = 262144

// DefaultShards is the number of lock shards when Config.Shards is 0.
const DefaultShards = 256

// Config configures a Table. The zero value is the defaults.
type Config struct {
	// Capacity is the most flows tracked at once; 0 (or less) means DefaultCapacity.
	Capacity int
	// Shards is the number of independently locked parts; 0 (or less) means
	// DefaultShards. It is rounded up to a power of two, at most 65536.
	Shards int
}

// Match says whether, and in which direction, a packet belongs to a tracked flow.
type Match uint8

const (
	MatchNone     Match = iota // no tracked flow
	MatchOriginal              // same direction as the flow's first packet
	MatchReply                 // the opposite direction
)

func (m Match) String() string {
	switch m {
	case MatchNone:
		return "none"
	case MatchOriginal:
		return "original"
	case MatchReply:
		return "reply"
	}
	return "unknown"
}

// InsertResult is what Insert did.
type InsertResult uint8

const (
	Inserted InsertResult = iota // a new flow is tracked
	Exists                       // the flow was already tracked (a racing packet created it); the packet advanced it like a Lookup hit
	Full                         // the table is at capacity: nothing stored, the packet should be dropped
	NoFlow                       // the packet cannot start a flow (TCP other than a lone SYN): nothing stored
)

func (r InsertResult) String() string {
	switch r {
	case Inserted:
		return "inserted"
	case Exists:
		return "exists"
	case Full:
		return "full"
	case NoFlow:
		return "no_flow"
	}
	return "unknown"
}

// Meta is what the caller stores with a flow. Timeouts nil means DefaultTimeouts; its
// values are copied at Insert (later changes to *Timeouts do not affect the flow).
type Meta struct {
	Timeouts *Timeouts
	Ingress  bool // the flow's first packet arrived (ingress); false: it left
	// Rule is the caller's stable number for the rule that allowed the flow (0: none), so
	// that a flow names its rule across reloads (filter.Engine numbers rule ids this way).
	Rule uint32
}

// FlowInfo is a copy of what the table knows about a flow. Meta.Timeouts points to the
// table's (read-only) copy of the flow's timeouts and is never nil.
type FlowInfo struct {
	Meta  Meta
	State State
	// Offloaded says the kernel's conntrack tracks the flow (Offload): it lives until
	// Forget, and State is the one it had when it was offloaded.
	Offloaded bool
}

// Table is a connection table. It is safe for concurrent use by many goroutines: flows
// are spread over lock shards by a seeded hash of their key, every operation locks at
// most one shard at a time, and the flow count is atomic. Nothing in the table reads the
// clock: callers pass now, monotonic nanoseconds, so that tests need not sleep. Use New;
// the zero Table is not usable.
type Table struct {
	shards   []shard
	shift    uint // 64 - log2(len(shards))
	seed     uint64
	capacity int64
	tos      timeouts
	// n is written by every new and every removed flow: keep it off the cache line
	// every Lookup reads.
	_   [64]byte
	n   atomic.Int64 // flows stored, including expired ones not yet swept
	off atomic.Int64 // of which offloaded (Offload)
}

// shard is one lock's worth of flows. Keys and flows are pointer-free, so the map is never
// scanned by the garbage collector. Key and flow share one 56-byte map slot: at a million
// flows a hit fetches one map group from memory (its control word and the slot), and the
// write-back of the updated flow finds both in cache. (A map of indexes into a slab of
// flows, tried first, needed two cold fetches per hit and 180 B/flow instead of 151:
// measured 2026-11-22, Go 1.26, amd64, TestMemory1M.)
type shard struct {
	shardData
	_ [128 - unsafe.Sizeof(shardData{})%128]byte // keep shards on separate cache lines
}

type shardData struct {
	mu    sync.Mutex
	m     map[key]flow
	peak  int      // most flows in m since it was made (to give memory back after a burst)
	count [4]int32 // flows by protoClass
}

// flow is what the table knows about a tracked flow, apart from its key (16 bytes).
type flow struct {
	deadline int64 // idle deadline: the flow is live while now < deadline
	rule     uint32
	tidx     uint16 // index into the table's interned timeouts
	state    State
	flags    uint8
}

const (
	flagOrigA     = 1 << iota // the originator is endpoint a of k
	flagIngress               // Meta.Ingress
	flagOffloaded             // the kernel tracks the flow (Offload): deadline holds counted, not a time
)

// live reports whether f is tracked at now: an offloaded flow lives until Forget, whatever
// the clock says (the kernel's conntrack decides its life).
func (f *flow) live(now int64) bool { return f.flags&flagOffloaded != 0 || now < f.deadline }

// protoClass maps a protocol to its CountByProto slot: 0 tcp, 1 udp, 2 icmp, 3 other.
func protoClass(p uint8) int {
	switch p {
	case ipproto.TCP:
		return 0
	case ipproto.UDP:
		return 1
	case ipproto.ICMP, ipproto.ICMPv6:
		return 2
	}
	return 3
}

// New returns an empty table.
func New(cfg Config) *Table {
	capacity := cfg.Capacity
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	n := cfg.Shards
	if n <= 0 {
		n = DefaultShards
	}
	n = min(n, 1<<16)
	lg := bits.Len(uint(n - 1)) // n rounded up to 1<<lg
	t := &Table{
		shards:   make([]shard, 1<<lg),
		shift:    uint(64 - lg),
		seed:     rand.Uint64(),
		capacity: int64(capacity),
	}
	for i := range t.shards {
		t.shards[i].m = make(map[key]flow)
	}
	t.tos.init()
	return t
}

func (t *Table) shardFor(k *key) *shard {
	if t.shift == 64 {
		return &t.shards[0]
	}
	return &t.shards[k.hash(t.seed)>>t.shift]
}

// Lookup finds the flow of the packet tp, in either direction. When the packet belongs
// to it, Lookup advances the flow's state (tcpFlags is the TCP header's flags byte,
// ignored for other protocols), refreshes its idle deadline and returns the packet's
// direction and a copy of the flow's info. It returns MatchNone when there is no flow;
// when the flow has expired (Lookup removes it); and for a TCP SYN over a flow in
// TIME_WAIT or CLOSE: from the originator the old flow is removed (a new connection, for
// the rules to judge), from the reply side it is left as it is (see step). A packet the
// TCP state machine finds invalid, or a retransmission, still matches but advances
// neither the state nor the deadline. Lookup allocates nothing.
func (t *Table) Lookup(tp *Tuple, tcpFlags uint8, now int64) (Match, FlowInfo) {
	return t.lookup(tp, tcpFlags, now, MatchNone)
}

// LookupFrom is Lookup for a packet that belongs to its flow only when it travels in the
// direction side (MatchOriginal: from the flow's originator; MatchReply: toward it), as an
// ICMP echo request rides only the flow its sender opened and a reply only the other way:
// a packet of the flow's tuple in the other direction matches nothing and changes nothing
// (it neither advances the flow nor refreshes its deadline).
func (t *Table) LookupFrom(tp *Tuple, side Match, now int64) bool {
	m, _ := t.lookup(tp, 0, now, side)
	return m != MatchNone
}

// lookup is Lookup, restricted to packets in direction side unless side is MatchNone.
func (t *Table) lookup(tp *Tuple, tcpFlags uint8, now int64, side Match) (Match, FlowInfo) {
	k, srcIsA := makeKey(tp)
	s := t.shardFor(&k)
	s.mu.Lock()
	f, ok := s.m[k]
	if !ok {
		s.mu.Unlock()
		return MatchNone, FlowInfo{}
	}
	if !f.live(now) {
		t.remove(s, &k, &f)
		s.mu.Unlock()
		return MatchNone, FlowInfo{}
	}
	set := t.tos.set.Load() // after Lock: f.tidx was published before f was stored
	orig := srcIsA == (f.flags&flagOrigA != 0)
	if side != MatchNone && orig != (side == MatchOriginal) {
		s.mu.Unlock()
		return MatchNone, FlowInfo{}
	}
	if f.flags&flagOffloaded != 0 {
		// The kernel sees the flow's packets, not sgd: its state here is the one it had
		// when it was offloaded, and a packet that still reaches the table (an ICMP error,
		// one the kernel found invalid) changes nothing.
	} else {
		switch step(&f, orig, tcpFlags, now, &set.byState[f.tidx]) {
		case stepHit:
			s.m[k] = f
		case stepRestart:
			t.remove(s, &k, &f)
			s.mu.Unlock()
			return MatchNone, FlowInfo{}
		case stepForeign:
			s.mu.Unlock()
			return MatchNone, FlowInfo{}
		}
	}
	info := f.info(set)
	s.mu.Unlock()
	if orig {
		return MatchOriginal, info
	}
	return MatchReply, info
}

// Peek reports whether the packet tp belongs to a live tracked flow (either direction)
// at now, changing nothing. It serves ICMP errors that quote a packet of a flow.
func (t *Table) Peek(tp *Tuple, now int64) bool {
	_, live := t.Find(tp, now)
	return live
}

// Find returns what the table knows of the live flow of tp (either direction) at now,
// changing nothing; ok is false when there is none.
func (t *Table) Find(tp *Tuple, now int64) (info FlowInfo, ok bool) {
	k, _ := makeKey(tp)
	s := t.shardFor(&k)
	s.mu.Lock()
	f, found := s.m[k]
	if ok = found && f.live(now); ok {
		info = f.info(t.tos.set.Load())
	}
	s.mu.Unlock()
	return info, ok
}

// Insert starts tracking the flow of the packet tp, whose first packet it is, with meta.
// TCP flows start only from a lone SYN (other TCP packets return NoFlow). If the flow
// is already tracked and live, the packet advances it like a Lookup and Insert returns
// Exists; a flow that has expired, or a TCP flow in TIME_WAIT or CLOSE that the SYN tp
// reopens (from either side), is replaced. At capacity Insert returns Full: it never
// evicts a live flow.
func (t *Table) Insert(tp *Tuple, tcpFlags uint8, meta Meta, now int64) InsertResult {
	starts := tp.Proto != ipproto.TCP || startsTCP(tcpFlags)
	k, srcIsA := makeKey(tp)
	tidx := t.tos.intern(meta.Timeouts)
	s := t.shardFor(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	set := t.tos.set.Load()
	if f, ok := s.m[k]; ok {
		if f.flags&flagOffloaded != 0 {
			return Exists // as Lookup: the kernel has it, nothing changes here
		}
		if now < f.deadline {
			orig := srcIsA == (f.flags&flagOrigA != 0)
			switch step(&f, orig, tcpFlags, now, &set.byState[f.tidx]) {
			case stepHit:
				s.m[k] = f
				return Exists
			case stepStale:
				return Exists
			}
		}
		if !starts {
			t.remove(s, &k, &f)
			return NoFlow
		}
		// Replace: the count does not change.
		s.m[k] = newFlow(k.proto, srcIsA, tidx, meta, now, set)
		return Inserted
	}
	if !starts {
		return NoFlow
	}
	if !t.reserve() {
		return Full
	}
	s.m[k] = newFlow(k.proto, srcIsA, tidx, meta, now, set)
	s.peak = max(s.peak, len(s.m))
	s.count[protoClass(k.proto)]++
	return Inserted
}

// Adopt tracks a TCP connection that was established before sgd saw it (the host's own
// open connections at start), tp in the direction of its originator: the flow starts in
// ESTABLISHED, so both directions pass as for a flow sgd had seen open. A flow already
// tracked is left alone (Exists). At capacity Adopt returns Full.
func (t *Table) Adopt(tp *Tuple, meta Meta, now int64) InsertResult {
	if tp.Proto != ipproto.TCP {
		return NoFlow
	}
	k, srcIsA := makeKey(tp)
	tidx := t.tos.intern(meta.Timeouts)
	s := t.shardFor(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	set := t.tos.set.Load()
	if f, ok := s.m[k]; ok && f.live(now) {
		return Exists
	} else if !ok && !t.reserve() {
		return Full
	}
	f := newFlow(k.proto, srcIsA, tidx, meta, now, set)
	f.state = StateEstablished
	f.deadline = now + set.byState[tidx][f.state]
	if _, ok := s.m[k]; !ok {
		s.count[protoClass(k.proto)]++
	}
	s.m[k] = f
	s.peak = max(s.peak, len(s.m))
	return Inserted
}

// reserve counts one more flow unless the table is at capacity. A compare-and-swap,
// not an add-then-undo, so Len never reads above the capacity.
func (t *Table) reserve() bool {
	for {
		n := t.n.Load()
		if n >= t.capacity {
			return false
		}
		if t.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func newFlow(proto uint8, srcIsA bool, tidx uint16, meta Meta, now int64, set *timeoutSet) flow {
	f := flow{rule: meta.Rule, tidx: tidx}
	if srcIsA {
		f.flags |= flagOrigA
	}
	if meta.Ingress {
		f.flags |= flagIngress
	}
	switch proto {
	case ipproto.TCP:
		f.state = StateSynSent
	case ipproto.UDP:
		f.state = StateUDPUnreplied
	case ipproto.ICMP, ipproto.ICMPv6:
		f.state = StateICMP
	default:
		f.state = StateOther
	}
	f.deadline = now + set.byState[tidx][f.state]
	return f
}

func (f *flow) info(set *timeoutSet) FlowInfo {
	return FlowInfo{
		Meta: Meta{
			Timeouts: set.vals[f.tidx],
			Ingress:  f.flags&flagIngress != 0,
			Rule:     f.rule,
		},
		State:     f.state,
		Offloaded: f.flags&flagOffloaded != 0,
	}
}

func (f *flow) tuple(k *key) Tuple { return k.tuple(f.flags&flagOrigA != 0) }

// remove deletes the flow f of k from s; s.mu must be held.
func (t *Table) remove(s *shard, k *key, f *flow) {
	delete(s.m, *k)
	s.count[protoClass(k.proto)]--
	t.n.Add(-1)
	if f.flags&flagOffloaded != 0 {
		t.off.Add(-1)
	}
}

// Sweep removes the flows idle past their timeout at now and returns how many it
// removed. It locks one shard at a time, so packets of other shards never wait for it.
func (t *Table) Sweep(now int64) int {
	return t.deleteIf(func(_ key, f flow, _ *timeoutSet) bool { return !f.live(now) })
}

// DeleteIf removes the flows for which del returns true and returns how many it removed
// (used on reload). It locks one shard at a time and calls del with that shard locked:
// del must be quick and must not call the table.
func (t *Table) DeleteIf(del func(Tuple, FlowInfo) bool) int {
	return t.deleteIf(func(k key, f flow, set *timeoutSet) bool { return del(f.tuple(&k), f.info(set)) })
}

// shrinkBelow is the fraction of its peak a shard's map must fall under to be rebuilt.
const shrinkBelow = 8

// deleteIf takes key and flow by value: pointers to the loop variables would make them
// escape, costing two allocations per flow visited.
func (t *Table) deleteIf(del func(key, flow, *timeoutSet) bool) int {
	removed := 0
	for j := range t.shards {
		s := &t.shards[j]
		s.mu.Lock()
		set := t.tos.set.Load()
		for k, f := range s.m {
			if del(k, f, set) {
				delete(s.m, k)
				s.count[protoClass(k.proto)]--
				t.n.Add(-1)
				if f.flags&flagOffloaded != 0 {
					t.off.Add(-1)
				}
				removed++
			}
		}
		if s.peak > 1024 && len(s.m) < s.peak/shrinkBelow {
			// Give back the memory of a burst that is over: Go maps never shrink.
			m := make(map[key]flow, len(s.m))
			for k, f := range s.m {
				m[k] = f
			}
			s.m, s.peak = m, len(m)
		}
		s.mu.Unlock()
	}
	return removed
}

// Run sweeps every period until ctx is done, reading the time from now.
// A period of zero or less means one second.
func (t *Table) Run(ctx context.Context, every time.Duration, now func() int64) {
	if every <= 0 {
		every = time.Second
	}
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			t.Sweep(now())
		}
	}
}

// Len returns the number of flows stored, including expired ones not yet swept: the
// number that counts against the capacity.
func (t *Table) Len() int { return int(t.n.Load()) }

// Capacity returns the most flows the table holds.
func (t *Table) Capacity() int { return int(t.capacity) }

// CountByProto returns the flows stored per protocol (icmp counts ICMP and ICMPv6),
// including expired ones not yet swept. Shards are read one at a time, so under traffic
// the sum is approximate.
func (t *Table) CountByProto() (tcp, udp, icmp, other int) {
	for j := range t.shards {
		s := &t.shards[j]
		s.mu.Lock()
		c := s.count
		s.mu.Unlock()
		tcp += int(c[0])
		udp += int(c[1])
		icmp += int(c[2])
		other += int(c[3])
	}
	return
}

// Flush removes every flow, one shard at a time.
func (t *Table) Flush() {
	for j := range t.shards {
		s := &t.shards[j]
		s.mu.Lock()
		t.n.Add(-int64(len(s.m)))
		for _, f := range s.m {
			if f.flags&flagOffloaded != 0 {
				t.off.Add(-1)
			}
		}
		s.m = make(map[key]flow)
		s.peak = 0
		s.count = [4]int32{}
		s.mu.Unlock()
	}
}

// Range calls fn for each flow (expired ones not yet swept included) until fn returns
// false. It copies one shard's flows at a time and calls fn with no lock held, so fn may
// call the table; flows that change meanwhile may be seen in either state.
func (t *Table) Range(fn func(Tuple, FlowInfo) bool) {
	type kf struct {
		k key
		f flow
	}
	var buf []kf
	for j := range t.shards {
		s := &t.shards[j]
		s.mu.Lock()
		buf = buf[:0]
		for k, f := range s.m {
			buf = append(buf, kf{k, f})
		}
		set := t.tos.set.Load()
		s.mu.Unlock()
		for i := range buf {
			if !fn(buf[i].f.tuple(&buf[i].k), buf[i].f.info(set)) {
				return
			}
		}
	}
}
