package conntrack

import (
	"fmt"
	"testing"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// tcpStep is one packet of a TCP conversation: from the originator or the reply side,
// the Lookup result expected and the flow's state afterwards (StateNone: not tracked).
type tcpStep struct {
	reply bool
	flags uint8
	match Match
	state State
}

func o(flags uint8, m Match, s State) tcpStep { return tcpStep{false, flags, m, s} }
func r(flags uint8, m Match, s State) tcpStep { return tcpStep{true, flags, m, s} }

const (
	mN = MatchNone
	mO = MatchOriginal
	mR = MatchReply
)

func flagString(f uint8) string {
	s := ""
	for _, x := range []struct {
		bit  uint8
		name string
	}{{syn, "S"}, {ack, "A"}, {fin, "F"}, {rst, "R"}, {psh, "P"}} {
		if f&x.bit != 0 {
			s += x.name
		}
	}
	return s
}

// handshake is the common opening: the originator's SYN is inserted before the steps.
var handshake = []tcpStep{
	r(syn|ack, mR, StateSynRecv),
	o(ack, mO, StateEstablished),
}

func with(pre []tcpStep, steps ...tcpStep) []tcpStep {
	return append(append([]tcpStep(nil), pre...), steps...)
}

func TestTCPTransitions(t *testing.T) {
	tests := []struct {
		name  string
		steps []tcpStep
	}{
		{"handshake", with(handshake, o(ack|psh, mO, StateEstablished), r(ack|psh, mR, StateEstablished))},
		{"close from originator", with(handshake,
			o(fin|ack, mO, StateFinWait), r(ack, mR, StateCloseWait), r(fin|ack, mR, StateLastAck), o(ack, mO, StateTimeWait),
			o(ack, mO, StateTimeWait))},
		{"close from reply side", with(handshake,
			r(fin|ack, mR, StateFinWait), o(ack, mO, StateCloseWait), o(fin|ack, mO, StateLastAck), r(ack, mR, StateTimeWait))},
		{"fin+ack answered by fin+ack", with(handshake,
			o(fin|ack, mO, StateFinWait), r(fin|ack, mR, StateLastAck), o(ack, mO, StateTimeWait))},
		{"simultaneous close", with(handshake,
			o(fin|ack, mO, StateFinWait), r(fin|ack, mR, StateLastAck), o(ack, mO, StateTimeWait), r(ack, mR, StateTimeWait))},
		{"simultaneous open", []tcpStep{
			r(syn, mR, StateSynRecv), o(syn|ack, mO, StateSynRecv), r(syn|ack, mR, StateSynRecv), o(ack, mO, StateEstablished)}},
		{"refused: rst from reply side", []tcpStep{r(rst|ack, mR, StateClose), o(ack, mO, StateClose)}},
		{"rst from originator", with(handshake, o(rst, mO, StateClose))},
		{"rst from reply side", with(handshake, r(rst, mR, StateClose))},
		{"rst in fin_wait", with(handshake, o(fin|ack, mO, StateFinWait), r(rst, mR, StateClose))},
		{"retransmitted syn", []tcpStep{o(syn, mO, StateSynSent), r(syn|ack, mR, StateSynRecv), r(syn|ack, mR, StateSynRecv)}},
		// Invalid for the state: still part of the flow, the state does not move.
		{"ack before syn-ack", []tcpStep{o(ack, mO, StateSynSent), r(ack, mR, StateSynSent)}},
		{"syn in established", with(handshake, o(syn, mO, StateEstablished), r(syn, mR, StateEstablished))},
		{"no flags", with(handshake, o(0, mO, StateEstablished))},
		{"late syn-ack", with(handshake, r(syn|ack, mR, StateEstablished))},
		// After close, a SYN is never part of the old flow.
		{"time_wait reopened by originator", with(handshake,
			o(fin|ack, mO, StateFinWait), r(fin|ack, mR, StateLastAck), o(ack, mO, StateTimeWait),
			o(syn, mN, StateNone))},
		{"time_wait: syn from reply side", with(handshake,
			o(fin|ack, mO, StateFinWait), r(fin|ack, mR, StateLastAck), o(ack, mO, StateTimeWait),
			r(syn, mN, StateTimeWait), o(ack, mO, StateTimeWait))},
		{"close reopened by originator", with(handshake, r(rst, mR, StateClose), o(syn, mN, StateNone))},
		{"close: syn from reply side", with(handshake, o(rst, mO, StateClose), r(syn, mN, StateClose), r(syn|ack, mR, StateClose))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := New(Config{})
			tp := pkt(ipproto.TCP, "192.0.2.1:40000", "198.51.100.7:443")
			if got := tb.Insert(&tp, syn, Meta{}, 0); got != Inserted {
				t.Fatalf("Insert(%v, S) = %v; want %v", tp, got, Inserted)
			}
			for i, st := range tt.steps {
				p := tp
				if st.reply {
					p = rev(tp)
				}
				now := int64(i+1) * sec
				m, info := tb.Lookup(&p, st.flags, now)
				if m != st.match {
					t.Fatalf("step %d: Lookup(%v, %s) = %v; want %v", i, p, flagString(st.flags), m, st.match)
				}
				if m != MatchNone && info.State != st.state {
					t.Errorf("step %d: Lookup(%v, %s) state = %v; want %v", i, p, flagString(st.flags), info.State, st.state)
				}
				if got := stateOf(tb, tp); got != st.state {
					t.Fatalf("step %d: after Lookup(%v, %s) the flow is %v; want %v", i, p, flagString(st.flags), got, st.state)
				}
			}
		})
	}
}

// After an originator's SYN over a closed flow the rules judge it, and Insert starts a
// new connection; after a reply-side SYN the rules judge it too, and if they allow it a
// new connection starts in the other direction.
func TestTCPReopen(t *testing.T) {
	for _, fromReply := range []bool{false, true} {
		t.Run(fmt.Sprintf("fromReply=%v", fromReply), func(t *testing.T) {
			tb := New(Config{})
			tp := pkt(ipproto.TCP, "192.0.2.1:40000", "198.51.100.7:443")
			tb.Insert(&tp, syn, Meta{Rule: 1}, 0)
			tb.Lookup(ptr(rev(tp)), syn|ack, sec)
			tb.Lookup(&tp, rst, 2*sec)
			p := tp
			if fromReply {
				p = rev(tp)
			}
			if m, _ := tb.Lookup(&p, syn, 3*sec); m != MatchNone {
				t.Fatalf("Lookup(%v, S) over CLOSE = %v; want %v", p, m, MatchNone)
			}
			if got := tb.Insert(&p, syn, Meta{Rule: 2}, 3*sec); got != Inserted {
				t.Fatalf("Insert(%v, S) = %v; want %v", p, got, Inserted)
			}
			if tb.Len() != 1 {
				t.Errorf("Len() = %d; want 1", tb.Len())
			}
			m, info := tb.Lookup(ptr(rev(p)), syn|ack, 4*sec)
			if m != MatchReply || info.State != StateSynRecv || info.Meta.Rule != 2 {
				t.Errorf("Lookup(%v, SA) = %v, %+v; want reply, SYN_RECV, rule 2", rev(p), m, info)
			}
		})
	}
}

func TestInsertNonSYN(t *testing.T) {
	tp := pkt(ipproto.TCP, "192.0.2.1:40000", "198.51.100.7:443")
	for _, f := range []uint8{0, ack, syn | ack, rst, syn | rst, fin, syn | fin, ack | psh} {
		tb := New(Config{})
		if got := tb.Insert(&tp, f, Meta{}, 0); got != NoFlow {
			t.Errorf("Insert(%v, %s) = %v; want %v", tp, flagString(f), got, NoFlow)
		}
		if tb.Len() != 0 {
			t.Errorf("Insert(%v, %s): Len() = %d; want 0", tp, flagString(f), tb.Len())
		}
	}
	// ECN-setup SYN (SYN|ECE|CWR) starts a flow.
	tb := New(Config{})
	if got := tb.Insert(&tp, syn|0x40|0x80, Meta{}, 0); got != Inserted {
		t.Errorf("Insert(%v, SYN|ECE|CWR) = %v; want %v", tp, got, Inserted)
	}
}

// Insert over a live flow (a racing packet created it) is a Lookup hit.
func TestInsertExists(t *testing.T) {
	tb := New(Config{})
	tp := pkt(ipproto.TCP, "192.0.2.1:40000", "198.51.100.7:443")
	tb.Insert(&tp, syn, Meta{Rule: 1}, 0)
	if got := tb.Insert(&tp, syn, Meta{Rule: 2}, sec); got != Exists {
		t.Fatalf("Insert(%v, S) again = %v; want %v", tp, got, Exists)
	}
	if got := tb.Insert(ptr(rev(tp)), syn|ack, Meta{Rule: 3}, 2*sec); got != Exists {
		t.Fatalf("Insert(%v, SA) = %v; want %v", rev(tp), got, Exists)
	}
	m, info := tb.Lookup(&tp, ack, 3*sec)
	if m != MatchOriginal || info.State != StateEstablished || info.Meta.Rule != 1 {
		t.Errorf("Lookup(%v, A) = %v, %+v; want original, ESTABLISHED, rule 1", tp, m, info)
	}
	if tb.Len() != 1 {
		t.Errorf("Len() = %d; want 1", tb.Len())
	}
}

func ptr[T any](v T) *T { return &v }

// An adopted connection (open before sgd started) is established at once: packets of both
// directions match it, it idles out on the established timeout, and it is counted.
func TestAdopt(t *testing.T) {
	tb := New(Config{Capacity: 2})
	tp := pkt(ipproto.TCP, "198.51.100.7:50000", "192.0.2.10:22") // an SSH session in
	if got := tb.Adopt(&tp, Meta{Ingress: true}, 0); got != Inserted {
		t.Fatalf("Adopt = %v; want inserted", got)
	}
	for _, c := range []struct {
		tp   Tuple
		want Match
	}{{tp, MatchOriginal}, {rev(tp), MatchReply}} {
		m, info := tb.Lookup(&c.tp, ack, sec)
		if m != c.want || info.State != StateEstablished || !info.Meta.Ingress {
			t.Errorf("Lookup(%v) = %v, %v; want %v in ESTABLISHED", c.tp, m, info.State, c.want)
		}
	}
	if got := tb.Adopt(&tp, Meta{}, sec); got != Exists {
		t.Errorf("Adopt again = %v; want exists", got)
	}
	udp := pkt(ipproto.UDP, "192.0.2.10:53", "198.51.100.7:50000")
	if got := tb.Adopt(&udp, Meta{}, 0); got != NoFlow {
		t.Errorf("Adopt(udp) = %v; want no_flow (only TCP connections are adopted)", got)
	}
	other := pkt(ipproto.TCP, "198.51.100.8:50000", "192.0.2.10:22")
	third := pkt(ipproto.TCP, "198.51.100.9:50000", "192.0.2.10:22")
	if tb.Adopt(&other, Meta{}, 0) != Inserted || tb.Adopt(&third, Meta{}, 0) != Full || tb.Len() != 2 {
		t.Errorf("at capacity 2: Len() = %d; want the third adoption refused", tb.Len())
	}
	if tcp, _, _, _ := tb.CountByProto(); tcp != 2 {
		t.Errorf("CountByProto tcp = %d; want 2", tcp)
	}
	est := DefaultTimeouts().TCPEstablished
	if m, _ := tb.Lookup(&tp, ack, int64(est)+2*sec); m != MatchNone {
		t.Errorf("Lookup after the established timeout = %v; want none", m)
	}
}
