package conntrack

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

var (
	tcpFlow  = pkt(ipproto.TCP, "192.0.2.1:40000", "198.51.100.7:443")
	udpFlow  = pkt(ipproto.UDP, "192.0.2.1:5353", "198.51.100.7:53")
	pingFlow = echo(ipproto.ICMP, "192.0.2.1", "198.51.100.7", 7)
	greFlow  = ip(47, "192.0.2.1", "198.51.100.7")
)

// pk is a packet in a recipe: from the originator (reply false) or the reply side.
type pk struct {
	reply bool
	flags uint8
}

// play inserts the first packet of steps at time 0 and looks up the others at 1 s, 2 s,
// ...; it returns the time of the last packet.
func play(t *testing.T, tb *Table, tp Tuple, meta Meta, steps []pk) int64 {
	t.Helper()
	if got := tb.Insert(&tp, steps[0].flags, meta, 0); got != Inserted {
		t.Fatalf("Insert(%v) = %v; want %v", tp, got, Inserted)
	}
	now := int64(0)
	for _, s := range steps[1:] {
		now += sec
		p := tp
		if s.reply {
			p = rev(tp)
		}
		if m, _ := tb.Lookup(&p, s.flags, now); m == MatchNone {
			t.Fatalf("Lookup(%v, %s) = %v; want a match", p, flagString(s.flags), m)
		}
	}
	return now
}

func TestTimeouts(t *testing.T) {
	custom := testTimeouts()
	def := DefaultTimeouts()
	tests := []struct {
		tp    Tuple
		steps []pk
		state State
		want  func(*Timeouts) time.Duration
	}{
		{tcpFlow, []pk{{false, syn}}, StateSynSent, func(to *Timeouts) time.Duration { return to.TCPSynSent }},
		{tcpFlow, []pk{{false, syn}, {true, syn | ack}}, StateSynRecv, func(to *Timeouts) time.Duration { return to.TCPSynRecv }},
		{tcpFlow, []pk{{false, syn}, {true, syn | ack}, {false, ack}}, StateEstablished, func(to *Timeouts) time.Duration { return to.TCPEstablished }},
		{tcpFlow, []pk{{false, syn}, {true, syn | ack}, {false, ack}, {false, fin | ack}}, StateFinWait, func(to *Timeouts) time.Duration { return to.TCPFinWait }},
		{tcpFlow, []pk{{false, syn}, {true, syn | ack}, {false, ack}, {false, fin | ack}, {true, ack}}, StateCloseWait, func(to *Timeouts) time.Duration { return to.TCPCloseWait }},
		{tcpFlow, []pk{{false, syn}, {true, syn | ack}, {false, ack}, {false, fin | ack}, {true, ack}, {true, fin | ack}}, StateLastAck, func(to *Timeouts) time.Duration { return to.TCPLastAck }},
		{tcpFlow, []pk{{false, syn}, {true, syn | ack}, {false, ack}, {false, fin | ack}, {true, ack}, {true, fin | ack}, {false, ack}}, StateTimeWait, func(to *Timeouts) time.Duration { return to.TCPTimeWait }},
		{tcpFlow, []pk{{false, syn}, {true, rst | ack}}, StateClose, func(to *Timeouts) time.Duration { return to.TCPClose }},
		{udpFlow, []pk{{false, 0}}, StateUDPUnreplied, func(to *Timeouts) time.Duration { return to.UDP }},
		{udpFlow, []pk{{false, 0}, {false, 0}}, StateUDPUnreplied, func(to *Timeouts) time.Duration { return to.UDP }},
		{udpFlow, []pk{{false, 0}, {true, 0}}, StateUDPReplied, func(to *Timeouts) time.Duration { return to.UDP }},
		{udpFlow, []pk{{false, 0}, {true, 0}, {true, 0}}, StateUDPReplied, func(to *Timeouts) time.Duration { return to.UDP }},
		{udpFlow, []pk{{false, 0}, {true, 0}, {false, 0}}, StateUDPStream, func(to *Timeouts) time.Duration { return to.UDPStream }},
		{udpFlow, []pk{{false, 0}, {true, 0}, {false, 0}, {true, 0}}, StateUDPStream, func(to *Timeouts) time.Duration { return to.UDPStream }},
		{pingFlow, []pk{{false, 0}}, StateICMP, func(to *Timeouts) time.Duration { return to.ICMP }},
		{pingFlow, []pk{{false, 0}, {true, 0}}, StateICMP, func(to *Timeouts) time.Duration { return to.ICMP }},
		{greFlow, []pk{{false, 0}, {true, 0}}, StateOther, func(to *Timeouts) time.Duration { return to.Other }},
	}
	for _, to := range []*Timeouts{nil, custom} {
		for _, tt := range tests {
			name := fmt.Sprintf("%v/%d/custom=%v", tt.state, len(tt.steps), to != nil)
			t.Run(name, func(t *testing.T) {
				tb := New(Config{})
				last := play(t, tb, tt.tp, Meta{Timeouts: to}, tt.steps)
				if got := stateOf(tb, tt.tp); got != tt.state {
					t.Fatalf("state = %v; want %v", got, tt.state)
				}
				want := tt.want(&def)
				if to != nil {
					want = tt.want(to)
				}
				end := last + int64(want)
				if !tb.Peek(&tt.tp, end-1) {
					t.Errorf("Peek(%v, last+%v-1ns) = false; want true", tt.tp, want)
				}
				if tb.Peek(&tt.tp, end) {
					t.Errorf("Peek(%v, last+%v) = true; want false", tt.tp, want)
				}
				if got := tb.Sweep(end - 1); got != 0 {
					t.Errorf("Sweep(last+%v-1ns) = %d; want 0", want, got)
				}
				if m, _ := tb.Lookup(ptr(rev(tt.tp)), ack, end); m != MatchNone {
					t.Errorf("Lookup(%v, last+%v) = %v; want %v", rev(tt.tp), want, m, MatchNone)
				}
				if tb.Len() != 0 {
					t.Errorf("Len() after an expired Lookup = %d; want 0 (removed on the spot)", tb.Len())
				}
			})
		}
	}
}

func TestSweepRemovesIdle(t *testing.T) {
	tb := New(Config{})
	play(t, tb, udpFlow, Meta{}, []pk{{false, 0}})
	play(t, tb, tcpFlow, Meta{}, []pk{{false, syn}, {true, syn | ack}, {false, ack}})
	if got := tb.Sweep(30 * sec); got != 1 {
		t.Errorf("Sweep(30s) = %d; want 1 (the UDP flow)", got)
	}
	if tb.Len() != 1 || tb.Peek(&udpFlow, 30*sec) || !tb.Peek(&tcpFlow, 30*sec) {
		t.Errorf("after Sweep(30s): Len() = %d, UDP tracked %v, TCP tracked %v; want 1, false, true",
			tb.Len(), tb.Peek(&udpFlow, 30*sec), tb.Peek(&tcpFlow, 30*sec))
	}
	if got := tb.Sweep(2*sec + 432000*sec); got != 1 {
		t.Errorf("Sweep(2s+432000s) = %d; want 1", got)
	}
}

func TestDefaultTimeouts(t *testing.T) {
	d := DefaultTimeouts()
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"TCPEstablished", d.TCPEstablished, 432000 * time.Second},
		{"TCPSynSent", d.TCPSynSent, 120 * time.Second},
		{"TCPSynRecv", d.TCPSynRecv, 60 * time.Second},
		{"TCPFinWait", d.TCPFinWait, 120 * time.Second},
		{"TCPCloseWait", d.TCPCloseWait, 60 * time.Second},
		{"TCPLastAck", d.TCPLastAck, 30 * time.Second},
		{"TCPTimeWait", d.TCPTimeWait, 120 * time.Second},
		{"TCPClose", d.TCPClose, 10 * time.Second},
		{"UDP", d.UDP, 30 * time.Second},
		{"UDPStream", d.UDPStream, 180 * time.Second},
		{"ICMP", d.ICMP, 30 * time.Second},
		{"Other", d.Other, 600 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("DefaultTimeouts().%s = %v; want %v", c.name, c.got, c.want)
		}
	}
}

// Unset fields take the defaults; the flow keeps the values it was inserted with.
func TestTimeoutsCopied(t *testing.T) {
	tb := New(Config{})
	to := &Timeouts{UDP: 45 * time.Second}
	tb.Insert(&udpFlow, 0, Meta{Timeouts: to}, 0)
	tb.Insert(&tcpFlow, syn, Meta{Timeouts: to}, 0)
	to.UDP = time.Second
	if got := deadlineOf(tb, udpFlow); got != 45*sec {
		t.Errorf("UDP deadline = %d; want %d", got, 45*sec)
	}
	if got := deadlineOf(tb, tcpFlow); got != 120*sec {
		t.Errorf("TCP SYN_SENT deadline with unset TCPSynSent = %d; want %d", got, 120*sec)
	}
	m, info := tb.Lookup(ptr(rev(udpFlow)), 0, sec)
	if m != MatchReply || info.Meta.Timeouts == nil || info.Meta.Timeouts.UDP != 45*time.Second ||
		info.Meta.Timeouts.UDPStream != 180*time.Second {
		t.Errorf("Lookup(%v) = %v, %+v; want reply with UDP 45s, UDPStream 180s", rev(udpFlow), m, info.Meta.Timeouts)
	}
	_, info = tb.Lookup(&tcpFlow, syn, sec)
	if info.Meta.Timeouts == nil || info.Meta.Timeouts.UDP != 45*time.Second {
		t.Errorf("Lookup(%v).Meta.Timeouts = %+v; want UDP 45s", tcpFlow, info.Meta.Timeouts)
	}
}

func TestFlowIdentity(t *testing.T) {
	tests := []struct {
		name   string
		insert Tuple
		probe  Tuple
		want   Match
	}{
		{"tcp same direction", tcpFlow, tcpFlow, MatchOriginal},
		{"tcp reverse", tcpFlow, rev(tcpFlow), MatchReply},
		{"tcp other source port", tcpFlow, pkt(ipproto.TCP, "192.0.2.1:40001", "198.51.100.7:443"), MatchNone},
		{"tcp other destination", tcpFlow, pkt(ipproto.TCP, "192.0.2.1:40000", "198.51.100.8:443"), MatchNone},
		{"tcp ports swapped only", tcpFlow, pkt(ipproto.TCP, "192.0.2.1:443", "198.51.100.7:40000"), MatchNone},
		{"udp is not tcp", tcpFlow, pkt(ipproto.UDP, "192.0.2.1:40000", "198.51.100.7:443"), MatchNone},
		{"udp reverse", udpFlow, rev(udpFlow), MatchReply},
		{"same address, ports differ", pkt(ipproto.UDP, "192.0.2.1:1000", "192.0.2.1:2000"), pkt(ipproto.UDP, "192.0.2.1:2000", "192.0.2.1:1000"), MatchReply},
		{"same endpoint both sides", pkt(ipproto.UDP, "192.0.2.1:1000", "192.0.2.1:1000"), pkt(ipproto.UDP, "192.0.2.1:1000", "192.0.2.1:1000"), MatchOriginal},
		{"icmp echo reply", pingFlow, rev(pingFlow), MatchReply},
		{"icmp other identifier", pingFlow, echo(ipproto.ICMP, "198.51.100.7", "192.0.2.1", 8), MatchNone},
		{"icmpv6 echo reply", echo(ipproto.ICMPv6, "2001:db8::1", "2001:db8::2", 9), echo(ipproto.ICMPv6, "2001:db8::2", "2001:db8::1", 9), MatchReply},
		{"icmpv6 other identifier", echo(ipproto.ICMPv6, "2001:db8::1", "2001:db8::2", 9), echo(ipproto.ICMPv6, "2001:db8::2", "2001:db8::1", 10), MatchNone},
		{"icmp is not icmpv6", pingFlow, echo(ipproto.ICMPv6, "::ffff:198.51.100.7", "::ffff:192.0.2.1", 7), MatchNone},
		{"other by address pair", greFlow, rev(greFlow), MatchReply},
		{"other: other protocol", greFlow, ip(50, "198.51.100.7", "192.0.2.1"), MatchNone},
		{"other: other address", greFlow, ip(47, "198.51.100.8", "192.0.2.1"), MatchNone},
		{"v4 is not v4-mapped v6", tcpFlow, pkt(ipproto.TCP, "[::ffff:198.51.100.7]:443", "[::ffff:192.0.2.1]:40000"), MatchNone},
		{"v4-mapped v6 is not v4", pkt(ipproto.TCP, "[::ffff:192.0.2.1]:40000", "[::ffff:198.51.100.7]:443"), rev(tcpFlow), MatchNone},
		{"v6 reverse", pkt(ipproto.TCP, "[2001:db8::1]:40000", "[2001:db8:1::7]:443"), pkt(ipproto.TCP, "[2001:db8:1::7]:443", "[2001:db8::1]:40000"), MatchReply},
	}
	for _, tt := range tests {
		tb := New(Config{})
		if got := tb.Insert(&tt.insert, syn, Meta{}, 0); got != Inserted {
			t.Fatalf("%s: Insert(%v) = %v; want %v", tt.name, tt.insert, got, Inserted)
		}
		if m, _ := tb.Lookup(&tt.probe, ack, sec); m != tt.want {
			t.Errorf("%s: Lookup(%v) after Insert(%v) = %v; want %v", tt.name, tt.probe, tt.insert, m, tt.want)
		}
	}
}

func TestKeyCanonical(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		tp := randTuple(rng, 1<<16)
		k1, a1 := makeKey(&tp)
		r := rev(tp)
		k2, a2 := makeKey(&r)
		if k1 != k2 || (a1 == a2 && (tp.Src != tp.Dst || tp.SrcPort != tp.DstPort)) {
			t.Fatalf("makeKey(%v) = %v, %v and makeKey(%v) = %v, %v; want the same key, opposite sides", tp, k1, a1, r, k2, a2)
		}
		if got := k1.tuple(a1); got != tp {
			t.Fatalf("makeKey(%v).tuple() = %v; want the tuple back", tp, got)
		}
	}
}

func TestMeta(t *testing.T) {
	tb := New(Config{})
	meta := Meta{Ingress: true, Rule: 12345}
	tb.Insert(&udpFlow, 0, meta, 0)
	m, info := tb.Lookup(ptr(rev(udpFlow)), 0, sec)
	info.Meta.Timeouts = nil
	if m != MatchReply || info.Meta != meta || info.State != StateUDPReplied {
		t.Errorf("Lookup(%v) = %v, %+v; want reply, %+v, UDP_REPLIED", rev(udpFlow), m, info, meta)
	}
}

func TestCapacity(t *testing.T) {
	tb := New(Config{Capacity: 3, Shards: 2})
	flows := []Tuple{tcpFlow, udpFlow, pingFlow, greFlow}
	for i, tp := range flows[:3] {
		if got := tb.Insert(&tp, syn, Meta{}, int64(i)*sec); got != Inserted {
			t.Fatalf("Insert(%v) = %v; want %v", tp, got, Inserted)
		}
	}
	if got := tb.Insert(&greFlow, 0, Meta{}, 3*sec); got != Full {
		t.Errorf("Insert(%v) at capacity = %v; want %v", greFlow, got, Full)
	}
	if tb.Len() != 3 {
		t.Errorf("Len() = %d; want 3", tb.Len())
	}
	if tcp, udp, icmp, other := tb.CountByProto(); tcp != 1 || udp != 1 || icmp != 1 || other != 0 {
		t.Errorf("CountByProto() = %d, %d, %d, %d; want 1, 1, 1, 0", tcp, udp, icmp, other)
	}
	// No eviction: the flows already tracked keep going.
	for _, tp := range flows[:3] {
		if m, _ := tb.Lookup(ptr(rev(tp)), syn|ack, 4*sec); m != MatchReply {
			t.Errorf("Lookup(%v) at capacity = %v; want %v", rev(tp), m, MatchReply)
		}
	}
	// An existing flow is not a new entry: Exists, not Full.
	if got := tb.Insert(&tcpFlow, syn, Meta{}, 4*sec); got != Exists {
		t.Errorf("Insert(%v) of a tracked flow at capacity = %v; want %v", tcpFlow, got, Exists)
	}
	// An expired flow not yet swept is replaced in place, even at capacity.
	if got := tb.Insert(&pingFlow, 0, Meta{Rule: 9}, 4*sec+30*sec); got != Inserted {
		t.Errorf("Insert(%v) over its expired flow = %v; want %v", pingFlow, got, Inserted)
	}
	// The sweep frees room (the UDP flow idles out at 4s+30s, the ICMP one lives on).
	if got := tb.Sweep(4*sec + 30*sec); got != 1 {
		t.Errorf("Sweep(34s) = %d; want 1", got)
	}
	if got := tb.Insert(&greFlow, 0, Meta{}, 35*sec); got != Inserted {
		t.Errorf("Insert(%v) after Sweep = %v; want %v", greFlow, got, Inserted)
	}
	if tcp, udp, icmp, other := tb.CountByProto(); tcp != 1 || udp != 0 || icmp != 1 || other != 1 || tb.Len() != 3 {
		t.Errorf("CountByProto() = %d, %d, %d, %d, Len() = %d; want 1, 0, 1, 1, 3", tcp, udp, icmp, other, tb.Len())
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []struct {
		cfg              Config
		shards, capacity int
	}{
		{Config{}, DefaultShards, DefaultCapacity},
		{Config{Shards: 1, Capacity: 10}, 1, 10},
		{Config{Shards: 3}, 4, DefaultCapacity},
		{Config{Shards: 1024, Capacity: -1}, 1024, DefaultCapacity},
		{Config{Shards: 1 << 20}, 1 << 16, DefaultCapacity},
	} {
		tb := New(c.cfg)
		if len(tb.shards) != c.shards || tb.Capacity() != c.capacity {
			t.Errorf("New(%+v): %d shards, capacity %d; want %d, %d", c.cfg, len(tb.shards), tb.Capacity(), c.shards, c.capacity)
		}
		tb.Insert(&tcpFlow, syn, Meta{}, 0)
		if m, _ := tb.Lookup(ptr(rev(tcpFlow)), syn|ack, 0); m != MatchReply {
			t.Errorf("New(%+v): Lookup(%v) = %v; want %v", c.cfg, rev(tcpFlow), m, MatchReply)
		}
	}
}

func TestDeleteIfRangeFlush(t *testing.T) {
	tb := New(Config{Shards: 4})
	want := map[Tuple]Meta{}
	for i := range 100 {
		tp := pkt(ipproto.UDP, fmt.Sprintf("192.0.2.%d:%d", i, 1000+i), "198.51.100.7:53")
		if i%2 == 1 {
			tp = pkt(ipproto.UDP, "198.51.100.7:53", fmt.Sprintf("192.0.2.%d:%d", i, 1000+i)) // the other endpoint first
		}
		meta := Meta{Ingress: i%3 == 1, Rule: uint32(i)}
		tb.Insert(&tp, 0, meta, 0)
		want[tp] = meta
	}
	seen := 0
	tb.Range(func(tp Tuple, fi FlowInfo) bool {
		seen++
		meta, ok := want[tp]
		fi.Meta.Timeouts = nil
		if !ok || fi.Meta != meta || fi.State != StateUDPUnreplied {
			t.Errorf("Range gave %v, %+v; want a tuple in the originator's direction with %+v", tp, fi, meta)
		}
		return true
	})
	if seen != 100 {
		t.Errorf("Range saw %d flows; want 100", seen)
	}
	n := 0
	tb.Range(func(Tuple, FlowInfo) bool { n++; return n < 5 })
	if n != 5 {
		t.Errorf("Range after fn returned false: %d calls; want 5", n)
	}
	got := tb.DeleteIf(func(tp Tuple, fi FlowInfo) bool { return fi.Meta.Ingress })
	if got != 33 || tb.Len() != 67 {
		t.Errorf("DeleteIf(ingress) = %d, Len() = %d; want 33, 67", got, tb.Len())
	}
	for tp, meta := range want {
		if tracked := tb.Peek(&tp, sec); tracked != !meta.Ingress {
			t.Errorf("after DeleteIf: Peek(%v) = %v; want %v", tp, tracked, !meta.Ingress)
		}
	}
	tb.Flush()
	if tcp, udp, icmp, other := tb.CountByProto(); tb.Len() != 0 || tcp+udp+icmp+other != 0 {
		t.Errorf("after Flush: Len() = %d, CountByProto() = %d, %d, %d, %d; want 0", tb.Len(), tcp, udp, icmp, other)
	}
	if got := tb.Insert(&udpFlow, 0, Meta{}, 0); got != Inserted {
		t.Errorf("Insert(%v) after Flush = %v; want %v", udpFlow, got, Inserted)
	}
}

func TestRun(t *testing.T) {
	tb := New(Config{})
	tb.Insert(&udpFlow, 0, Meta{}, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		tb.Run(ctx, time.Millisecond, func() int64 { return 31 * sec })
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for tb.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if tb.Len() != 0 {
		t.Errorf("Len() after Run with now = 31s = %d; want 0", tb.Len())
	}
}

// The packet path allocates nothing: lookups of every kind, hits and misses, and
// Insert of a flow that exists.
func TestNoAllocs(t *testing.T) {
	tb := New(Config{})
	v6 := pkt(ipproto.TCP, "[2001:db8::1]:40000", "[2001:db8:1::7]:443")
	for _, tp := range []Tuple{tcpFlow, udpFlow, pingFlow, greFlow, v6} {
		tb.Insert(&tp, syn, Meta{Timeouts: testTimeouts()}, 0)
	}
	miss := pkt(ipproto.TCP, "192.0.2.9:1", "198.51.100.7:443")
	now := sec
	for _, c := range []struct {
		name string
		tp   Tuple
		f    uint8
	}{
		{"tcp original", tcpFlow, ack}, {"tcp reply", rev(tcpFlow), ack},
		{"tcp v6", v6, ack}, {"udp original", udpFlow, 0}, {"udp reply", rev(udpFlow), 0},
		{"icmp", rev(pingFlow), 0}, {"other", rev(greFlow), 0}, {"miss", miss, syn},
	} {
		if n := testing.AllocsPerRun(100, func() { now++; tb.Lookup(&c.tp, c.f, now) }); n != 0 {
			t.Errorf("Lookup(%s) allocates %v per call; want 0", c.name, n)
		}
		if n := testing.AllocsPerRun(100, func() { tb.Peek(&c.tp, now) }); n != 0 {
			t.Errorf("Peek(%s) allocates %v per call; want 0", c.name, n)
		}
	}
	meta := Meta{Timeouts: testTimeouts()}
	if n := testing.AllocsPerRun(100, func() { now++; tb.Insert(&udpFlow, 0, meta, now) }); n != 0 {
		t.Errorf("Insert(existing) allocates %v per call; want 0", n)
	}
	if n := testing.AllocsPerRun(10, func() { tb.Sweep(now) }); n != 0 {
		t.Errorf("Sweep allocates %v per call; want 0", n)
	}
}

func randTuple(rng *rand.Rand, space int) Tuple {
	var a, b [16]byte
	a[15], a[14] = byte(rng.IntN(space)), byte(rng.IntN(4))
	b[15], b[14] = byte(rng.IntN(space)), byte(rng.IntN(4))
	tp := Tuple{Proto: []uint8{ipproto.TCP, ipproto.UDP, ipproto.ICMP, 47}[rng.IntN(4)]}
	if rng.IntN(2) == 0 {
		tp.Src, tp.Dst = netip.AddrFrom4([4]byte(a[12:])), netip.AddrFrom4([4]byte(b[12:]))
	} else {
		a[0], b[0] = 0x20, 0x20
		tp.Src, tp.Dst = netip.AddrFrom16(a), netip.AddrFrom16(b)
	}
	switch tp.Proto {
	case ipproto.TCP, ipproto.UDP:
		tp.SrcPort, tp.DstPort = uint16(rng.IntN(space)), uint16(rng.IntN(space))
	case ipproto.ICMP:
		tp.SrcPort = uint16(rng.IntN(space))
		tp.DstPort = tp.SrcPort
	}
	if rng.IntN(2) == 0 {
		tp = rev(tp)
	}
	return tp
}

// refFlow and refTable are the slow, obviously correct model of the table: a slice of
// flows searched linearly in both directions, sharing only step with the real one.
type refFlow struct {
	orig Tuple
	f    flow
}

type refTable struct {
	flows    []refFlow
	capacity int
	to       [numStates]int64
}

func (r *refTable) find(tp Tuple) (int, bool) {
	for i, f := range r.flows {
		if f.orig == tp {
			return i, true
		}
		if f.orig == rev(tp) {
			return i, false
		}
	}
	return -1, false
}

func (r *refTable) del(i int) { r.flows = append(r.flows[:i], r.flows[i+1:]...) }

func (r *refTable) lookup(tp Tuple, flags uint8, now int64) (Match, State) {
	i, orig := r.find(tp)
	if i < 0 {
		return MatchNone, StateNone
	}
	f := &r.flows[i].f
	if now >= f.deadline {
		r.del(i)
		return MatchNone, StateNone
	}
	switch step(f, orig, flags, now, &r.to) {
	case stepRestart:
		r.del(i)
		return MatchNone, StateNone
	case stepForeign:
		return MatchNone, StateNone
	}
	if orig {
		return MatchOriginal, f.state
	}
	return MatchReply, f.state
}

func (r *refTable) insert(tp Tuple, flags uint8, now int64) InsertResult {
	starts := tp.Proto != ipproto.TCP || startsTCP(flags)
	st := map[uint8]State{ipproto.TCP: StateSynSent, ipproto.UDP: StateUDPUnreplied, ipproto.ICMP: StateICMP}[tp.Proto]
	if st == StateNone {
		st = StateOther
	}
	nf := refFlow{tp, flow{state: st, deadline: now + r.to[st]}}
	if i, orig := r.find(tp); i >= 0 {
		f := &r.flows[i].f
		if now < f.deadline {
			switch step(f, orig, flags, now, &r.to) {
			case stepHit, stepStale:
				return Exists
			}
		}
		if !starts {
			r.del(i)
			return NoFlow
		}
		r.flows[i] = nf
		return Inserted
	}
	if !starts {
		return NoFlow
	}
	if len(r.flows) >= r.capacity {
		return Full
	}
	r.flows = append(r.flows, nf)
	return Inserted
}

func (r *refTable) sweep(now int64) int {
	n := 0
	for i := 0; i < len(r.flows); {
		if now >= r.flows[i].f.deadline {
			r.del(i)
			n++
		} else {
			i++
		}
	}
	return n
}

// TestAgainstReference runs random packets through the table and the reference model,
// on a small space of tuples so that flows collide, restart and expire often.
func TestAgainstReference(t *testing.T) {
	to := Timeouts{
		TCPEstablished: 50 * time.Second, TCPSynSent: 5 * time.Second, TCPSynRecv: 6 * time.Second,
		TCPFinWait: 7 * time.Second, TCPCloseWait: 8 * time.Second, TCPLastAck: 3 * time.Second,
		TCPTimeWait: 9 * time.Second, TCPClose: 2 * time.Second, UDP: 4 * time.Second,
		UDPStream: 12 * time.Second, ICMP: 4 * time.Second, Other: 20 * time.Second,
	}
	for seed := range uint64(5) {
		rng := rand.New(rand.NewPCG(seed, 99))
		tb := New(Config{Capacity: 40, Shards: 4})
		ref := &refTable{capacity: 40, to: to.byState()}
		flags := []uint8{syn, syn | ack, ack, fin | ack, rst, rst | ack, 0, syn | fin}
		now := int64(0)
		for i := range 20000 {
			now += rng.Int64N(sec / 2)
			tp := randTuple(rng, 3)
			f := flags[rng.IntN(len(flags))]
			switch op := rng.IntN(10); {
			case op < 5:
				gm, gi := tb.Lookup(&tp, f, now)
				wm, ws := ref.lookup(tp, f, now)
				if gm != wm || gm != MatchNone && gi.State != ws {
					t.Fatalf("seed %d op %d: Lookup(%v, %s) = %v, %v; want %v, %v", seed, i, tp, flagString(f), gm, gi.State, wm, ws)
				}
			case op < 9:
				got, want := tb.Insert(&tp, f, Meta{Timeouts: &to}, now), ref.insert(tp, f, now)
				if got != want {
					t.Fatalf("seed %d op %d: Insert(%v, %s) = %v; want %v", seed, i, tp, flagString(f), got, want)
				}
			default:
				if got, want := tb.Sweep(now), ref.sweep(now); got != want {
					t.Fatalf("seed %d op %d: Sweep(%d) = %d; want %d", seed, i, now, got, want)
				}
			}
			if tb.Len() != len(ref.flows) {
				t.Fatalf("seed %d op %d: Len() = %d; want %d", seed, i, tb.Len(), len(ref.flows))
			}
		}
		n := 0
		tb.Range(func(tp Tuple, fi FlowInfo) bool {
			n++
			if i, orig := ref.find(tp); i < 0 || !orig || ref.flows[i].f.state != fi.State {
				t.Errorf("seed %d: Range gave %v %v, not in the reference", seed, tp, fi.State)
			}
			return true
		})
		if n != len(ref.flows) {
			t.Errorf("seed %d: Range saw %d flows; want %d", seed, n, len(ref.flows))
		}
	}
}

// TestConcurrent hammers one table from many goroutines; run it with -race.
func TestConcurrent(t *testing.T) {
	const capacity = 500
	tb := New(Config{Capacity: capacity, Shards: 8})
	var clock sync.Mutex
	now := int64(0)
	tick := func() int64 {
		clock.Lock()
		defer clock.Unlock()
		now += sec / 100
		return now
	}
	ctx, cancel := context.WithCancel(context.Background())
	var packets, background sync.WaitGroup
	for g := range 8 {
		packets.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 20000 {
				tp := randTuple(rng, 40)
				n := tick()
				if m, _ := tb.Lookup(&tp, ack, n); m == MatchNone {
					tb.Insert(&tp, syn, Meta{Rule: uint32(g)}, n)
				}
				if tb.Len() > capacity {
					t.Errorf("Len() = %d > capacity %d", tb.Len(), capacity)
				}
				if g == 0 && i == 10000 {
					tb.Flush()
				}
			}
		})
	}
	background.Go(func() { tb.Run(ctx, time.Millisecond, tick) })
	background.Go(func() {
		for ctx.Err() == nil {
			tb.DeleteIf(func(_ Tuple, fi FlowInfo) bool { return fi.Meta.Rule == 7 })
			tb.Range(func(Tuple, FlowInfo) bool { return true })
			tb.CountByProto()
			tb.Peek(&tcpFlow, tick())
			time.Sleep(time.Millisecond)
		}
	})
	packets.Wait()
	cancel()
	background.Wait()
	n := 0
	tb.Range(func(Tuple, FlowInfo) bool { n++; return true })
	tcp, udp, icmp, other := tb.CountByProto()
	if n != tb.Len() || tcp+udp+icmp+other != n {
		t.Errorf("after the storm: Range saw %d, Len() = %d, CountByProto() sums to %d; want all equal", n, tb.Len(), tcp+udp+icmp+other)
	}
}

// After a burst is swept away, a shard's map is rebuilt small (Go maps never shrink).
func TestShrinkAfterBurst(t *testing.T) {
	tb := New(Config{Shards: 1, Capacity: 10000})
	for i := range 5000 {
		tp := nthFlow(i)
		tp.Proto = ipproto.UDP
		tb.Insert(&tp, 0, Meta{}, 0)
	}
	tb.Insert(&tcpFlow, syn, Meta{}, 10*sec)
	if got := tb.Sweep(30 * sec); got != 5000 {
		t.Fatalf("Sweep(30s) = %d; want 5000", got)
	}
	if s := &tb.shards[0]; s.peak != 1 || len(s.m) != 1 {
		t.Errorf("after the sweep: peak %d, %d flows; want 1, 1", s.peak, len(s.m))
	}
	if m, _ := tb.Lookup(ptr(rev(tcpFlow)), syn|ack, 31*sec); m != MatchReply || tb.Len() != 1 {
		t.Errorf("Lookup(%v) after the shrink = %v, Len() = %d; want %v, 1", rev(tcpFlow), m, tb.Len(), MatchReply)
	}
}

// The memory bar (SPEC 3.1) rests on these sizes: a 56-byte map slot per flow.
func TestSizes(t *testing.T) {
	if got := unsafe.Sizeof(key{}); got != 40 {
		t.Errorf("unsafe.Sizeof(key{}) = %d; want 40", got)
	}
	if got := unsafe.Sizeof(flow{}); got != 16 {
		t.Errorf("unsafe.Sizeof(flow{}) = %d; want 16", got)
	}
	if got := unsafe.Sizeof(shard{}) % 128; got != 0 {
		t.Errorf("unsafe.Sizeof(shard{}) %% 128 = %d; want 0", got)
	}
}

// A flow is tracked per zone (SPEC 4.2): the same tuple in another zone — a packet on
// another interface carrying a tracked flow's addresses and ports — is another flow, and
// finds nothing; ICMP errors quoting it (Peek) neither.
func TestZones(t *testing.T) {
	tb := New(Config{})
	udp := pkt(ipproto.UDP, "192.0.2.2:4000", "192.0.2.1:53")
	udp.Zone = 1
	if r := tb.Insert(&udp, 0, Meta{Rule: 1}, 0); r != Inserted {
		t.Fatalf("Insert(%v) = %v; want %v", udp, r, Inserted)
	}
	for _, tc := range []struct {
		zone uint16
		want Match
	}{{1, MatchReply}, {2, MatchNone}, {0, MatchNone}} {
		reply := rev(udp)
		reply.Zone = tc.zone
		if m, _ := tb.Lookup(&reply, 0, sec); m != tc.want {
			t.Errorf("Lookup(%v) = %v; want %v", reply, m, tc.want)
		}
		if got := tb.Peek(&reply, sec); got != (tc.want != MatchNone) {
			t.Errorf("Peek(%v) = %v; want %v", reply, got, tc.want != MatchNone)
		}
	}
	other := udp
	other.Zone = 2
	if r := tb.Insert(&other, 0, Meta{Rule: 2}, sec); r != Inserted || tb.Len() != 2 {
		t.Errorf("Insert(%v) = %v, Len() = %d; want %v, 2", other, r, tb.Len(), Inserted)
	}
	var zones []uint16
	tb.Range(func(tp Tuple, _ FlowInfo) bool { zones = append(zones, tp.Zone); return true })
	if len(zones) != 2 || zones[0]+zones[1] != 3 {
		t.Errorf("Range zones = %v; want [1 2] in any order", zones)
	}
}
