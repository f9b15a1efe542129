package conntrack

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Timeouts are idle timeouts: a flow is removed once it has seen no packet that advanced
// it for the timeout of its current state. A zero or negative field means the default.
type Timeouts struct {
	TCPEstablished time.Duration // AWS tcp_established_timeout
	TCPSynSent     time.Duration
	TCPSynRecv     time.Duration
	TCPFinWait     time.Duration
	TCPCloseWait   time.Duration
	TCPLastAck     time.Duration
	TCPTimeWait    time.Duration
	TCPClose       time.Duration
	UDP            time.Duration // AWS udp_timeout: one way, or one request/response
	UDPStream      time.Duration // AWS udp_stream_timeout: more than one request/response
	ICMP           time.Duration
	Other          time.Duration
}

// DefaultTimeouts returns AWS's defaults for the settings AWS exposes (SPEC 1.4:
// tcp_established 432000 s, udp 30 s, udp_stream 180 s, ICMP 30 s, other protocols
// 600 s) and Linux nf_conntrack's defaults for the other TCP states
// (net/netfilter/nf_conntrack_proto_tcp.c, tcp_timeouts).
func DefaultTimeouts() Timeouts {
	return Timeouts{
		TCPEstablished: 432000 * time.Second,
		TCPSynSent:     120 * time.Second,
		TCPSynRecv:     60 * time.Second,
		TCPFinWait:     120 * time.Second,
		TCPCloseWait:   60 * time.Second,
		TCPLastAck:     30 * time.Second,
		TCPTimeWait:    120 * time.Second,
		TCPClose:       10 * time.Second,
		UDP:            30 * time.Second,
		UDPStream:      180 * time.Second,
		ICMP:           30 * time.Second,
		Other:          600 * time.Second,
	}
}

// normalised returns to with its unset fields taken from the defaults.
func (to Timeouts) normalised() Timeouts {
	d := DefaultTimeouts()
	or := func(v, def time.Duration) time.Duration {
		if v <= 0 {
			return def
		}
		return v
	}
	return Timeouts{
		TCPEstablished: or(to.TCPEstablished, d.TCPEstablished),
		TCPSynSent:     or(to.TCPSynSent, d.TCPSynSent),
		TCPSynRecv:     or(to.TCPSynRecv, d.TCPSynRecv),
		TCPFinWait:     or(to.TCPFinWait, d.TCPFinWait),
		TCPCloseWait:   or(to.TCPCloseWait, d.TCPCloseWait),
		TCPLastAck:     or(to.TCPLastAck, d.TCPLastAck),
		TCPTimeWait:    or(to.TCPTimeWait, d.TCPTimeWait),
		TCPClose:       or(to.TCPClose, d.TCPClose),
		UDP:            or(to.UDP, d.UDP),
		UDPStream:      or(to.UDPStream, d.UDPStream),
		ICMP:           or(to.ICMP, d.ICMP),
		Other:          or(to.Other, d.Other),
	}
}

// byState lays the timeouts out by State, in nanoseconds, for the packet path.
func (to *Timeouts) byState() (s [numStates]int64) {
	s[StateSynSent] = int64(to.TCPSynSent)
	s[StateSynRecv] = int64(to.TCPSynRecv)
	s[StateEstablished] = int64(to.TCPEstablished)
	s[StateFinWait] = int64(to.TCPFinWait)
	s[StateCloseWait] = int64(to.TCPCloseWait)
	s[StateLastAck] = int64(to.TCPLastAck)
	s[StateTimeWait] = int64(to.TCPTimeWait)
	s[StateClose] = int64(to.TCPClose)
	s[StateUDPUnreplied] = int64(to.UDP)
	s[StateUDPReplied] = int64(to.UDP)
	s[StateUDPStream] = int64(to.UDPStream)
	s[StateICMP] = int64(to.ICMP)
	s[StateOther] = int64(to.Other)
	return s
}

// timeoutSet interns the distinct Timeouts values flows use, so that a flow stores a
// 16-bit index instead of a pointer and the flow slabs stay pointer-free (never scanned
// by the garbage collector, which matters at a million flows). A set is immutable once
// published; adding a value publishes a copy.
type timeoutSet struct {
	vals    []*Timeouts // index → the table's copy
	byState [][numStates]int64
	index   map[Timeouts]uint16
}

// timeouts holds the table's interned timeout values. Index 0 is the defaults.
type timeouts struct {
	mu  sync.Mutex // serialises additions
	set atomic.Pointer[timeoutSet]
}

func (ts *timeouts) init() {
	d := DefaultTimeouts()
	ts.set.Store(&timeoutSet{
		vals:    []*Timeouts{&d},
		byState: [][numStates]int64{d.byState()},
		index:   map[Timeouts]uint16{d: 0},
	})
}

// intern returns the index of *p's values (with defaults filled in), adding them if new.
// nil means the defaults. Values are never forgotten (a flow may refer to them at any
// time); once 65536 distinct values are in use, far beyond any real sequence of reloads,
// further new values get the defaults.
func (ts *timeouts) intern(p *Timeouts) uint16 {
	if p == nil {
		return 0
	}
	v := p.normalised()
	if i, ok := ts.set.Load().index[v]; ok {
		return i
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	old := ts.set.Load()
	if i, ok := old.index[v]; ok {
		return i
	}
	if len(old.vals) > math.MaxUint16 {
		return 0
	}
	i := uint16(len(old.vals))
	stored := v // a copy, so that v itself stays on the stack of the fast path
	set := &timeoutSet{
		vals:    append(old.vals[:len(old.vals):len(old.vals)], &stored),
		byState: append(old.byState[:len(old.byState):len(old.byState)], v.byState()),
		index:   make(map[Timeouts]uint16, len(old.index)+1),
	}
	for k, j := range old.index {
		set.index[k] = j
	}
	set.index[v] = i
	ts.set.Store(set)
	return i
}
