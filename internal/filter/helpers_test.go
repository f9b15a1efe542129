package filter

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// Interface indexes the tests use.
const (
	ifEth0  = 2
	ifEth1  = 3  // "eth1": in the configs that list it
	ifOther = 9  // "eth9": exists, not in the config
	ifGone  = 77 // resolves to no interface
)

// fakeClock is the engine's clock in tests: nanoseconds that only move when told.
type fakeClock struct{ t int64 }

func (c *fakeClock) now() int64 { return c.t }

// newTestEngine compiles yaml and returns an engine with one worker.
func newTestEngine(t testing.TB, yaml string, capacity int) (*Engine, *Worker, *fakeClock) {
	t.Helper()
	return newTestEngineWith(t, yaml, capacity, nil)
}

// newTestEngineWith is newTestEngine with the options changed by edit (nil: as they are).
func newTestEngineWith(t testing.TB, yaml string, capacity int, edit func(*Options)) (*Engine, *Worker, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: 1}
	opt := Options{Table: conntrack.New(conntrack.Config{Capacity: capacity}), Now: clk.now,
		IfName: func(i uint32) (string, bool) {
			switch i {
			case ifEth0:
				return "eth0", true
			case ifEth1:
				return "eth1", true
			case ifOther:
				return "eth9", true
			}
			return "", false // ifGone and anything else
		}}
	if edit != nil {
		edit(&opt)
	}
	e := New(opt)
	w := e.NewWorker()
	setPolicy(t, e, yaml, rules.Options{})
	return e, w, clk
}

func setPolicy(t testing.TB, e *Engine, yaml string, opt rules.Options) {
	t.Helper()
	doc, err := rules.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	m, err := rules.Validate(doc, opt)
	if err != nil {
		t.Fatal(err)
	}
	p, err := rules.Compile(m, rules.Env{LocalAddrs: func(string) []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")}
	}})
	if err != nil {
		t.Fatal(err)
	}
	e.SetPolicy(p, testHost())
}

// testHost is the host the tests' packets reach: eth0 is 192.0.2.10/24 and 2001:db8::10
// (plus a link-local address), eth9 is 198.51.100.1/24 (not configured), and loopback.
func testHost() Host {
	return Host{
		Index: map[string]uint32{"eth0": ifEth0},
		Local: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10"),
			netip.MustParseAddr("fe80::10"), netip.MustParseAddr("198.51.100.1"),
			netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		Nets: map[string][]netip.Prefix{"eth0": {netip.MustParsePrefix("192.0.2.0/24")}},
	}
}

// pkt builds an IP packet: proto is "tcp", "udp", "icmp", "icmpv6" or "gre"; src and dst
// are "addr:port" for tcp/udp, plain addresses otherwise. For tcp, extra[0] is the flag
// byte; for icmp/icmpv6, extra is type, code, and the echo id.
func pkt(proto, src, dst string, extra ...int) []byte {
	var sa, da netip.Addr
	var sp, dp uint16
	if proto == "tcp" || proto == "udp" {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
		sa, da, sp, dp = s.Addr(), d.Addr(), s.Port(), d.Port()
	} else {
		sa, da = netip.MustParseAddr(src), netip.MustParseAddr(dst)
	}
	var l4 []byte
	var pn uint8
	switch proto {
	case "tcp":
		pn = 6
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], sp) // source port
		binary.BigEndian.PutUint16(l4[2:], dp) // destination port
		l4[12] = 5 << 4                        // data offset: 5 words
		if len(extra) > 0 {
			l4[13] = byte(extra[0]) // flags
		}
		binary.BigEndian.PutUint16(l4[14:], 65535) // window
	case "udp":
		pn = 17
		l4 = make([]byte, 8+4)
		binary.BigEndian.PutUint16(l4[0:], sp)
		binary.BigEndian.PutUint16(l4[2:], dp)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4))) // length
	case "icmp", "icmpv6":
		pn = 1
		if proto == "icmpv6" {
			pn = 58
		}
		l4 = make([]byte, 8)
		l4[0], l4[1] = byte(extra[0]), byte(extra[1]) // type, code
		if len(extra) > 2 {
			binary.BigEndian.PutUint16(l4[4:], uint16(extra[2])) // echo identifier
		}
	case "gre":
		pn = 47
		l4 = make([]byte, 4)
	}
	if sa.Is4() {
		ip := make([]byte, 20, 20+len(l4))
		ip[0] = 0x45                                           // version 4, IHL 5
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4))) // total length
		ip[8] = 64                                             // TTL
		ip[9] = pn                                             // protocol
		s4, d4 := sa.As4(), da.As4()
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		return append(ip, l4...)
	}
	ip := make([]byte, 40, 40+len(l4))
	ip[0] = 0x60                                        // version 6
	binary.BigEndian.PutUint16(ip[4:], uint16(len(l4))) // payload length
	ip[6] = pn                                          // next header
	ip[7] = 64                                          // hop limit
	s16, d16 := sa.As16(), da.As16()
	copy(ip[8:], s16[:])
	copy(ip[24:], d16[:])
	return append(ip, l4...)
}

// icmpError builds an ICMP ("icmp" or "icmpv6") error of type typ from src to dst that
// quotes the packet quoted (RFC 792, RFC 4443 section 3: 8 bytes of header, then the quote).
func icmpError(proto string, typ int, src, dst string, quoted []byte) []byte {
	b := pkt(proto, src, dst, typ, 0)
	b = append(b, quoted...)
	if b[0]>>4 == 4 {
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	} else {
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	}
	return b
}

// TCP flag bytes.
const (
	syn    = 0x02
	synAck = 0x12
	ack    = 0x10
	finAck = 0x11
	rst    = 0x04
)

// in and out name the hook a packet is judged at.
type hook struct{ in, out uint32 }

var (
	in  = Point{Dev: ifEth0}
	out = Point{Dev: ifEth0, Dir: DirEgress}
)

// laterFragment turns an IPv4 packet into a fragment other than the first: offset 8 bytes.
// Its bytes after the IP header are then data, not a transport header.
func laterFragment(b []byte) []byte {
	b[6], b[7] = 0, 1 // flags 0, fragment offset 1 (× 8 bytes)
	return b
}
