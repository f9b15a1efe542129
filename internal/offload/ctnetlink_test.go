package offload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// connFrom converts ti-mo/conntrack's flow the way sgd did before parseConn: the
// oracle parseConn is held to.
func connFrom(f *conntrack.Flow) Conn {
	o := f.TupleOrig
	c := Conn{
		ID:           f.ID,
		Proto:        o.Proto.Protocol,
		Src:          o.IP.SourceAddress,
		Dst:          o.IP.DestinationAddress,
		SrcPort:      o.Proto.SourcePort,
		DstPort:      o.Proto.DestinationPort,
		Labels:       labelsFrom(f.Labels),
		OrigPackets:  f.CountersOrig.Packets,
		OrigBytes:    f.CountersOrig.Bytes,
		ReplyPackets: f.CountersReply.Packets,
		ReplyBytes:   f.CountersReply.Bytes,
		Timeout:      f.Timeout,
		Replied:      f.Status.SeenReply(),
		Assured:      f.Status.Assured(),
		Mark:         f.Mark,
	}
	if ipproto.IsICMP(c.Proto) {
		c.SrcPort, c.DstPort = o.Proto.ICMPID, o.Proto.ICMPID
	}
	if r := f.TupleReply; r.IP.SourceAddress.IsValid() && r.IP.DestinationAddress.IsValid() &&
		r.IP.SourceAddress.Is4() == r.IP.DestinationAddress.Is4() && r.Proto.Protocol != 0 {
		c.ReplySrc, c.ReplySrcPort = r.IP.SourceAddress, r.Proto.SourcePort
		if ipproto.IsICMP(r.Proto.Protocol) {
			c.ReplySrcPort = r.Proto.ICMPID
		}
	}
	if f.ProtoInfo.TCP != nil {
		c.TCPState = f.ProtoInfo.TCP.State
	}
	return c
}

// tiMo reads m through ti-mo/conntrack, as Listen, Dump and Lookup did before
// parseConn: the message type as parseConn gives it, and whether it read.
func tiMo(m []byte) (Conn, uint8, bool) {
	var nm netlink.Message
	if err := nm.UnmarshalBinary(m[:min(len(m), (len(m)+3)&^3)]); err != nil || len(m)%4 != 0 {
		// UnmarshalBinary wants whole aligned messages; take the header by hand.
		if len(m) < unix.NLMSG_HDRLEN {
			return Conn{}, 0, false
		}
		l := binary.NativeEndian.Uint32(m)
		if l < unix.NLMSG_HDRLEN || uint64(l) > uint64(len(m)) {
			return Conn{}, 0, false
		}
		nm.Header = netlink.Header{Length: l, Type: netlink.HeaderType(binary.NativeEndian.Uint16(m[4:])), Flags: netlink.HeaderFlags(binary.NativeEndian.Uint16(m[6:]))}
		nm.Data = m[unix.NLMSG_HDRLEN:l]
	}
	var ev conntrack.Event
	if err := ev.Unmarshal(nm); err != nil || ev.Flow == nil {
		return Conn{}, 0, false
	}
	typ := uint8(msgCTNew)
	if ev.Type == conntrack.EventDestroy {
		typ = msgCTDelete
	}
	return connFrom(ev.Flow), typ, true
}

// Builders of hand-made messages: attributes in host order headers, big-endian numbers.

func attr(typ uint16, payload ...byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(unix.SizeofNlAttr+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// nest is a nested attribute (NLA_F_NESTED set, as Linux 5.2 and later send them).
func nest(typ uint16, children ...[]byte) []byte {
	return attr(typ|unix.NLA_F_NESTED, bytes.Join(children, nil)...)
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// ctMsg is a ctnetlink message of type msg: nlmsghdr (length, NFNL_SUBSYS_CTNETLINK <<
// 8 | msg, NLM_F_MULTI, seq 7, port 0), nfgenmsg (AF_INET, version 0, resource 0), then
// attrs.
func ctMsg(msg uint8, attrs ...[]byte) []byte {
	body := bytes.Join(attrs, nil)
	b := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+nfgenLen+len(body)))
	b = binary.NativeEndian.AppendUint16(b, unix.NFNL_SUBSYS_CTNETLINK<<8|uint16(msg))
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_MULTI)
	b = binary.NativeEndian.AppendUint32(b, 7)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, unix.AF_INET, 0, 0, 0)
	return append(b, body...)
}

func tuple4(proto uint8, sport, dport uint16) []byte {
	return nest(ctaTupleOrig,
		nest(ctaTupleIP, attr(ctaIPv4Src, 192, 0, 2, 1), attr(ctaIPv4Dst, 192, 0, 2, 2)),
		nest(ctaTupleProto, attr(ctaProtoNum, proto), attr(ctaProtoSrcPort, u16(sport)...), attr(ctaProtoDstPort, u16(dport)...)))
}

// labelled is CTA_LABELS with bits 5 and 100 set (host-order words).
var labelled = attr(ctaLabels, labelBytes(Labels{}.With(5).With(100))...)

// tcp4Entry is a dump entry with every attribute sgd reads, in the kernel's order
// (ctnetlink_fill_info), and some it skips.
func tcp4Entry() []byte {
	return ctMsg(msgCTNew,
		tuple4(ipproto.TCP, 40000, 443),
		nest(ctaTupleReply /* without protocol: no NAT hint */, nest(ctaTupleIP, attr(ctaIPv4Src, 192, 0, 2, 2), attr(ctaIPv4Dst, 192, 0, 2, 1))),
		attr(ctaStatus, u32(0x8|0x4|0x2)...), // IPS_CONFIRMED | IPS_ASSURED | IPS_SEEN_REPLY
		nest(ctaCountersOrig, attr(ctaCountersPackets, u64(10)...), attr(ctaCountersBytes, u64(5000)...)),
		nest(ctaCountersReply, attr(ctaCountersPackets, u64(8)...), attr(ctaCountersBytes, u64(1<<33)...)),
		attr(ctaTimeout, u32(431999)...),
		attr(ctaMark, u32(Mark|0x5)...),
		nest(ctaProtoinfo, nest(ctaProtoinfoTCP, attr(ctaProtoinfoTCPState, 3), attr(2 /* WSCALE_ORIGINAL */, 7))),
		attr(11 /* CTA_USE: skipped */, u32(1)...),
		attr(ctaID, u32(0xdeadbeef)...),
		labelled,
	)
}

var tcp4Want = Conn{
	ID: 0xdeadbeef, Proto: ipproto.TCP,
	Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), SrcPort: 40000, DstPort: 443,
	Labels:      Labels{}.With(5).With(100),
	OrigPackets: 10, OrigBytes: 5000, ReplyPackets: 8, ReplyBytes: 1 << 33,
	Timeout: 431999, Replied: true, Assured: true, TCPState: 3, Mark: Mark | 0x5,
}

// patch returns a copy of b with f applied.
func patch(b []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(b)) }

func TestParseConn(t *testing.T) {
	v6 := func(s string) []byte { return netip.MustParseAddr(s).AsSlice() }
	icmp6 := nest(ctaTupleOrig,
		nest(ctaTupleIP, attr(ctaIPv6Src, v6("2001:db8::1")...), attr(ctaIPv6Dst, v6("2001:db8::2")...)),
		nest(ctaTupleProto, attr(ctaProtoNum, ipproto.ICMPv6), attr(ctaProtoICMPv6ID, u16(77)...), attr(ctaProtoICMPv6Type, 128), attr(ctaProtoICMPv6Code, 0)))
	bare := Conn{Proto: ipproto.UDP, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"), SrcPort: 1000, DstPort: 53}
	withCounters := bare
	withCounters.OrigPackets, withCounters.OrigBytes = 3, 300
	flagless := tuple4(ipproto.UDP, 1000, 53)
	binary.NativeEndian.PutUint16(flagless[2:], ctaTupleOrig) // the nest without NLA_F_NESTED
	for _, tc := range []struct {
		name string
		m    []byte
		typ  uint8
		want Conn
		ok   bool
	}{
		{"tcp4 dump entry", tcp4Entry(), msgCTNew, tcp4Want, true},
		{"destroy event", ctMsg(msgCTDelete, tuple4(ipproto.UDP, 1000, 53)), msgCTDelete, bare, true},
		{"reply tuple of a DNAT'd entry: the new destination", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53),
			nest(ctaTupleReply, nest(ctaTupleIP, attr(ctaIPv4Src, 192, 0, 2, 3), attr(ctaIPv4Dst, 192, 0, 2, 1)),
				nest(ctaTupleProto, attr(ctaProtoNum, 17), attr(ctaProtoSrcPort, u16(5353)...), attr(ctaProtoDstPort, u16(1000)...)))),
			msgCTNew, func() Conn { c := bare; c.ReplySrc, c.ReplySrcPort = netip.MustParseAddr("192.0.2.3"), 5353; return c }(), true},
		{"reply tuple with a 16-byte IPv4 source: malformed, the entry unreadable", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53),
			nest(ctaTupleReply, nest(ctaTupleIP, attr(ctaIPv4Src, v6("2001:db8::3")...), attr(ctaIPv4Dst, 192, 0, 2, 1)),
				nest(ctaTupleProto, attr(ctaProtoNum, 17)))), 0, Conn{}, false},
		{"reply tuple without protocol: no hint, the entry still read", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53),
			nest(ctaTupleReply, nest(ctaTupleIP, attr(ctaIPv4Src, 192, 0, 2, 3), attr(ctaIPv4Dst, 192, 0, 2, 1)))), msgCTNew, bare, true},
		{"icmpv6 echo: the id in both ports", ctMsg(msgCTNew, icmp6), msgCTNew, Conn{Proto: ipproto.ICMPv6,
			Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), SrcPort: 77, DstPort: 77}, true},
		{"32-bit counters", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53),
			nest(ctaCountersOrig, attr(ctaCounters32Packets, u32(3)...), attr(ctaCounters32Bytes, u32(300)...))), msgCTNew, withCounters, true},
		{"counters with padding", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53),
			nest(ctaCountersOrig, attr(5 /* CTA_COUNTERS_PAD */), attr(ctaCountersPackets, u64(3)...), attr(ctaCountersBytes, u64(300)...))), msgCTNew, withCounters, true},
		{"nest without NLA_F_NESTED", ctMsg(msgCTNew, flagless), msgCTNew, bare, true},
		{"NLA_F_NET_BYTEORDER on a number", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), attr(ctaMark|unix.NLA_F_NET_BYTEORDER, u32(9)...)), msgCTNew,
			func() Conn { c := bare; c.Mark = 9; return c }(), true},
		{"unknown attributes skipped", ctMsg(msgCTNew, attr(200, 1, 2, 3), tuple4(ipproto.UDP, 1000, 53), nest(201, attr(1))), msgCTNew, bare, true},
		{"last attribute unpadded", patch(ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), attr(ctaProtoinfo|unix.NLA_F_NESTED, attr(3 /* SCTP */, 1)...), attr(250, 1)), func(b []byte) []byte {
			b = b[:len(b)-3] // attr(250, 1) is 5 bytes and 3 of padding
			binary.NativeEndian.PutUint32(b, uint32(len(b)))
			return b
		}), msgCTNew, bare, true},
		{"bytes after nlmsg_len ignored", append(ctMsg(msgCTDelete, tuple4(ipproto.UDP, 1000, 53)), 0xff, 0xff, 0xff, 0xff, 0xff), msgCTDelete, bare, true},
		{"repeated tuple: the last one", ctMsg(msgCTNew, tuple4(ipproto.TCP, 1, 2), tuple4(ipproto.UDP, 1000, 53)), msgCTNew, bare, true},

		// Not a conntrack entry.
		{"empty", nil, 0, Conn{}, false},
		{"header only", patch(ctMsg(msgCTNew), func(b []byte) []byte { b = b[:16]; binary.NativeEndian.PutUint32(b, 16); return b }), 0, Conn{}, false},
		{"nlmsg_len past the end", patch(tcp4Entry(), func(b []byte) []byte { return b[:len(b)-1] }), 0, Conn{}, false},
		{"nlmsg_len below the headers", patch(tcp4Entry(), func(b []byte) []byte { binary.NativeEndian.PutUint32(b, 19); return b }), 0, Conn{}, false},
		{"expectation subsystem", patch(tcp4Entry(), func(b []byte) []byte { b[5] = 2; return b }), 0, Conn{}, false},
		{"a GET", patch(tcp4Entry(), func(b []byte) []byte { b[4] = msgCTGet; return b }), 0, Conn{}, false},
		{"NLMSG_ERROR", patch(tcp4Entry(), func(b []byte) []byte { binary.NativeEndian.PutUint16(b[4:], unix.NLMSG_ERROR); return b }), 0, Conn{}, false},
		{"no tuple", ctMsg(msgCTNew, attr(ctaID, u32(1)...), labelled), 0, Conn{}, false},

		// Malformed.
		{"attribute length past the end", patch(tcp4Entry(), func(b []byte) []byte { binary.NativeEndian.PutUint16(b[20:], 0xfff0); return b }), 0, Conn{}, false},
		{"zero-length attribute", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), []byte{0, 0, 0, 0}), 0, Conn{}, false},
		{"attribute length below its header", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), binary.NativeEndian.AppendUint16(binary.NativeEndian.AppendUint16(nil, 3), ctaMark)), 0, Conn{}, false},
		{"trailing bytes", patch(ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), []byte{1, 0, 0, 0}), func(b []byte) []byte {
			b = b[:len(b)-2]
			binary.NativeEndian.PutUint32(b, uint32(len(b)))
			return b
		}), 0, Conn{}, false},
		{"empty CTA_ID", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), attr(ctaID)), 0, Conn{}, false},
		{"short CTA_MARK", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), attr(ctaMark, 1, 2)), 0, Conn{}, false},
		{"long CTA_TIMEOUT", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), attr(ctaTimeout, u64(1)...)), 0, Conn{}, false},
		{"short CTA_STATUS", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), attr(ctaStatus, 1)), 0, Conn{}, false},
		{"nested garbage", ctMsg(msgCTNew, attr(ctaTupleOrig|unix.NLA_F_NESTED, 0xff, 0xff, 0xff, 0xff, 1, 2, 3)), 0, Conn{}, false},
		{"inner attribute past its nest", ctMsg(msgCTNew, nest(ctaTupleOrig, patch(nest(ctaTupleIP, attr(ctaIPv4Src, 192, 0, 2, 1), attr(ctaIPv4Dst, 192, 0, 2, 2)), func(b []byte) []byte {
			binary.NativeEndian.PutUint16(b[4:], 64) // CTA_IP_V4_SRC's length past CTA_TUPLE_IP
			return b
		}), nest(ctaTupleProto, attr(ctaProtoNum, 17))), attr(ctaID, u32(1)...), attr(ctaMark, u32(1)...), attr(ctaTimeout, u32(1)...)), 0, Conn{}, false},
		{"garbage counters", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), attr(ctaCountersOrig|unix.NLA_F_NESTED, 9, 0, 1)), 0, Conn{}, false},
		{"7-byte packet counter", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), nest(ctaCountersOrig, attr(ctaCountersPackets, 1, 2, 3, 4, 5, 6, 7))), 0, Conn{}, false},
		{"8-byte 32-bit counter", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), nest(ctaCountersReply, attr(ctaCounters32Bytes, u64(1)...))), 0, Conn{}, false},
		{"2-byte TCP state", ctMsg(msgCTNew, tuple4(ipproto.TCP, 1000, 53), nest(ctaProtoinfo, nest(ctaProtoinfoTCP, attr(ctaProtoinfoTCPState, 3, 3)))), 0, Conn{}, false},
		{"garbage TCP info", ctMsg(msgCTNew, tuple4(ipproto.TCP, 1000, 53), nest(ctaProtoinfo, attr(ctaProtoinfoTCP|unix.NLA_F_NESTED, 0xff, 0xff))), 0, Conn{}, false},
		{"tuple without protocol", ctMsg(msgCTNew, nest(ctaTupleOrig, nest(ctaTupleIP, attr(ctaIPv4Src, 192, 0, 2, 1), attr(ctaIPv4Dst, 192, 0, 2, 2)))), 0, Conn{}, false},
		{"tuple without destination", ctMsg(msgCTNew, nest(ctaTupleOrig, nest(ctaTupleIP, attr(ctaIPv4Src, 192, 0, 2, 1)), nest(ctaTupleProto, attr(ctaProtoNum, 17)))), 0, Conn{}, false},
		{"mixed families", ctMsg(msgCTNew, nest(ctaTupleOrig, nest(ctaTupleIP, attr(ctaIPv4Src, 192, 0, 2, 1), attr(ctaIPv6Dst, v6("2001:db8::2")...)), nest(ctaTupleProto, attr(ctaProtoNum, 17)))), 0, Conn{}, false},
		{"16-byte IPv4 address", ctMsg(msgCTNew, nest(ctaTupleOrig, nest(ctaTupleIP, attr(ctaIPv4Src, v6("2001:db8::1")...), attr(ctaIPv4Dst, v6("2001:db8::2")...)), nest(ctaTupleProto, attr(ctaProtoNum, 17)))), 0, Conn{}, false},
		{"2-byte protocol", ctMsg(msgCTNew, nest(ctaTupleOrig, nest(ctaTupleIP, attr(ctaIPv4Src, 192, 0, 2, 1), attr(ctaIPv4Dst, 192, 0, 2, 2)), nest(ctaTupleProto, attr(ctaProtoNum, 0, 17)))), 0, Conn{}, false},
		{"3-byte port", ctMsg(msgCTNew, nest(ctaTupleOrig, nest(ctaTupleIP, attr(ctaIPv4Src, 192, 0, 2, 1), attr(ctaIPv4Dst, 192, 0, 2, 2)), nest(ctaTupleProto, attr(ctaProtoNum, 17), attr(ctaProtoSrcPort, 1, 2, 3)))), 0, Conn{}, false},
		{"a bad tuple after a good one", ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), nest(ctaTupleOrig, attr(ctaTupleIP))), 0, Conn{}, false},
	} {
		c := Conn{ID: 99, Mark: 99} // parseConn overwrites it whole
		typ, ok := parseConn(tc.m, &c)
		if typ != tc.typ || ok != tc.ok || c != tc.want {
			t.Errorf("%s: parseConn(% x) = %d, %+v, %v; want %d, %+v, %v", tc.name, tc.m, typ, c, ok, tc.typ, tc.want, tc.ok)
		}
		// Where ti-mo/conntrack reads the message too, it reads the same.
		if want, wantTyp, wantOK := tiMo(tc.m); ok && wantOK && (want != c || wantTyp != typ) {
			t.Errorf("%s: parseConn = %d, %+v; ti-mo/conntrack reads %d, %+v", tc.name, typ, c, wantTyp, want)
		}
	}
}

// seedDir holds FuzzParseConn's seed corpus: messages Linux 6.18 sent, captured by
// TestNetnsParseConn -update-seeds.
var seedDir = filepath.Join("testdata", "fuzz", "FuzzParseConn")

// seedFile is a message in the corpus file format of go test -fuzz.
func seedFile(b []byte) string { return fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b) }

// captureName is the name of a seed TestNetnsParseConn captured (seedName); the others
// in seedDir are inputs the fuzzer found.
var captureName = regexp.MustCompile(`^(dump|new|update|destroy)-`)

// seeds reads the captured seeds back: name -> message. Their netlink headers are in
// the host order of the machine that captured them (little endian).
func seeds(tb testing.TB) map[string][]byte {
	tb.Helper()
	files, err := os.ReadDir(seedDir)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		if !captureName.MatchString(f.Name()) {
			continue // one the fuzzer found
		}
		b, err := os.ReadFile(filepath.Join(seedDir, f.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
			tb.Fatalf("seed %s: not one []byte in the fuzz corpus format", f.Name())
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			tb.Fatalf("seed %s: %v", f.Name(), err)
		}
		out[f.Name()] = []byte(s)
	}
	if len(out) == 0 {
		tb.Fatalf("no seeds in %s", seedDir)
	}
	return out
}

func sortedNames(m map[string][]byte) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// TestParseConnSeeds: the captured kernel messages read as ti-mo/conntrack reads them
// (TestNetnsParseConn checks this live; this keeps it checked without root), and every
// prefix of each is refused or read within its bounds.
func TestParseConnSeeds(t *testing.T) {
	all := seeds(t)
	for _, name := range sortedNames(all) {
		m := all[name]
		var c Conn
		typ, ok := parseConn(m, &c)
		want, wantTyp, wantOK := tiMo(m)
		if !ok || !wantOK || typ != wantTyp || c != want {
			t.Errorf("%s: parseConn = %d, %+v, %v; ti-mo/conntrack reads %d, %+v, %v", name, typ, c, ok, wantTyp, want, wantOK)
		}
		wantTyp = msgCTNew
		if strings.HasPrefix(name, "destroy") {
			wantTyp = msgCTDelete
		}
		if typ != wantTyp {
			t.Errorf("%s: type %d; want %d", name, typ, wantTyp)
		}
		for n := range len(m) {
			// Cut short, nlmsg_len says more is to come: refused.
			if _, ok := parseConn(m[:n], &c); ok {
				t.Errorf("%s cut to %d bytes: parseConn = true; want false (nlmsg_len %d)", name, n, len(m))
			}
			// Cut short with nlmsg_len fixed: whatever reads is sane.
			if n >= 4 {
				b := bytes.Clone(m[:n])
				binary.NativeEndian.PutUint32(b, uint32(n))
				if typ, ok := parseConn(b, &c); ok {
					checkSane(t, b, typ, c)
				}
			}
		}
	}
}

// checkSane fails t unless c, read from m, could be a kernel entry.
func checkSane(t *testing.T, m []byte, typ uint8, c Conn) {
	t.Helper()
	if typ != msgCTNew && typ != msgCTDelete {
		t.Fatalf("parseConn(% x) = type %d; want %d or %d", m, typ, msgCTNew, msgCTDelete)
	}
	if !c.Src.IsValid() || !c.Dst.IsValid() || c.Src.Is4() != c.Dst.Is4() || c.Src.Zone() != "" || c.Dst.Zone() != "" {
		t.Fatalf("parseConn(% x) = %+v; want two addresses of one family", m, c)
	}
	if ipproto.IsICMP(c.Proto) && c.SrcPort != c.DstPort {
		t.Fatalf("parseConn(% x) = %+v; want the echo id in both ports", m, c)
	}
}

func TestParseConnNoAllocs(t *testing.T) {
	all := seeds(t)
	for _, name := range sortedNames(all) {
		m := all[name]
		var c Conn
		if n := testing.AllocsPerRun(100, func() {
			if _, ok := parseConn(m, &c); !ok {
				t.Fatal("not read")
			}
		}); n != 0 {
			t.Errorf("parseConn(%s): %v allocations; want 0", name, n)
		}
	}
	datagram := bytes.Join([][]byte{tcp4Entry(), tcp4Entry(), tcp4Entry()}, nil)
	if n := testing.AllocsPerRun(100, func() {
		var c Conn
		for ms := (nlmsgs{b: datagram}); ms.next(); {
			if _, ok := parseConn(ms.msg, &c); !ok {
				t.Fatal("not read")
			}
		}
	}); n != 0 {
		t.Errorf("walking a datagram of 3 entries: %v allocations; want 0", n)
	}
}

// TestInlining keeps attrs.next small enough to inline: parseConn's time is mostly
// its calls.
func TestInlining(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping in -short: builds the package")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: no go command")
	}
	out, err := exec.Command(gobin, "build", "-gcflags=-m", "-o", os.DevNull, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -gcflags=-m: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "can inline (*attrs).next") {
		t.Errorf("(*attrs).next is not inlined any more (go build -gcflags=-m=2 says why)")
	}
}

func TestNlmsgs(t *testing.T) {
	unaligned := ctMsg(msgCTNew, tuple4(ipproto.UDP, 1000, 53), attr(ctaProtoNum, 1)) // 1-byte payload + 3 padding
	unaligned = unaligned[:len(unaligned)-3]
	binary.NativeEndian.PutUint32(unaligned, uint32(len(unaligned)))
	for _, tc := range []struct {
		name string
		b    []byte
		n    int // messages walked
		bad  bool
	}{
		{"empty", nil, 0, false},
		{"two entries", append(tcp4Entry(), tcp4Entry()...), 2, false},
		{"an unaligned message padded, then another", append(append(bytes.Clone(unaligned), 0, 0, 0), tcp4Entry()...), 2, false},
		{"an unaligned last message", unaligned, 1, false},
		{"a short tail", append(tcp4Entry(), 1, 2, 3), 1, true},
		{"a length past the end", append(tcp4Entry(), tcp4Entry()[:40]...), 1, true},
		{"a length below the header", append(tcp4Entry(), append(binary.NativeEndian.AppendUint32(nil, 8), make([]byte, 12)...)...), 1, true},
	} {
		ms := nlmsgs{b: tc.b}
		n := 0
		for ms.next() {
			n++
			if int(binary.NativeEndian.Uint32(ms.msg)) != len(ms.msg) || ms.typ != unix.NFNL_SUBSYS_CTNETLINK<<8 || ms.flags != unix.NLM_F_MULTI || ms.seq != 7 {
				t.Errorf("%s: message %d = % x (type %#x flags %#x seq %d)", tc.name, n, ms.msg, ms.typ, ms.flags, ms.seq)
			}
		}
		if n != tc.n || ms.bad != tc.bad {
			t.Errorf("%s: walked %d, bad %v; want %d, %v", tc.name, n, ms.bad, tc.n, tc.bad)
		}
	}
}

// TestReader reads datagrams through a unix datagram socket (reader is a netlink
// socket's in sgd; the reading is the same): whole datagrams, no allocation per
// datagram, one past the buffer reported, the deadline ending the wait.
func TestReader(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "reader")
	defer f.Close()
	defer unix.Close(fds[1])
	if err := unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20); err != nil {
		t.Fatal(err)
	}
	r, err := newReader(f)
	if err != nil {
		t.Fatal(err)
	}
	entry := tcp4Entry()
	const runs = 50
	for range runs + 1 { // AllocsPerRun runs once more to warm up
		if err := unix.Send(fds[1], entry, 0); err != nil {
			t.Fatal(err)
		}
	}
	var got []byte
	if n := testing.AllocsPerRun(runs, func() {
		if got, err = r.read(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("reader.read: %v allocations per datagram; want 0", n)
	}
	if !bytes.Equal(got, entry) {
		t.Errorf("reader.read() = % x; want % x", got, entry)
	}

	big := make([]byte, recvBuffer+100)
	big[0] = 1
	if err := unix.Send(fds[1], big, 0); err != nil {
		t.Fatal(err)
	}
	if got, err := r.read(); !errors.Is(err, errTruncated) || len(got) != recvBuffer || got[0] != 1 {
		t.Errorf("reader.read() of %d bytes = %d bytes, %v; want the first %d and errTruncated", len(big), len(got), err, recvBuffer)
	}
	// The next datagram is whole again.
	if err := unix.Send(fds[1], entry, 0); err != nil {
		t.Fatal(err)
	}
	if got, err := r.read(); err != nil || !bytes.Equal(got, entry) {
		t.Errorf("reader.read() after a truncated one = %d bytes, %v; want the entry", len(got), err)
	}

	if err := f.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("reader.read() with nothing queued = %v; want the deadline's error", err)
	}
}

// FuzzParseConn checks that parseConn never panics or reads outside the message, that
// what it reads is sane and depends on the message alone, and that it agrees with
// ti-mo/conntrack wherever both read the message.
func FuzzParseConn(f *testing.F) {
	f.Add(tcp4Entry())
	f.Fuzz(func(t *testing.T, m []byte) {
		// A copy with no room past its length: a read beyond len(m) panics.
		m = bytes.Clone(m)[:len(m):len(m)]
		c := Conn{ID: 1, Proto: 6, SrcPort: 9}
		typ, ok := parseConn(m, &c)
		if !ok {
			if typ != 0 || c != (Conn{}) {
				t.Fatalf("parseConn(% x) = %d, %+v, false; want 0 and the zero Conn", m, typ, c)
			}
			return
		}
		checkSane(t, m, typ, c)
		// Bytes after nlmsg_len are not the message's.
		var again Conn
		if typ2, ok2 := parseConn(append(bytes.Clone(m), 0xff, 0, 0xff, 0), &again); typ2 != typ || !ok2 || again != c {
			t.Fatalf("parseConn(% x) = %+v; with 4 bytes more %d, %+v, %v", m, c, typ2, again, ok2)
		}
		if !smallTypes(m[unix.NLMSG_HDRLEN+nfgenLen : binary.NativeEndian.Uint32(m)]) {
			return
		}
		if want, wantTyp, wantOK := tiMo(m); wantOK && (want != c || wantTyp != typ) {
			t.Fatalf("parseConn(% x) = %d, %#v; ti-mo/conntrack reads %d, %#v", m, typ, c, wantTyp, want)
		}
	})
}

// smallTypes reports whether every attribute of b, and of every payload that is a run
// of attributes itself, has a type below 256. ti-mo/conntrack reads attribute types as
// uint8 (0x3002 is its CTA_PROTO_SRC_PORT), the kernel sends none above 255, and
// parseConn reads them whole: where they differ, ti-mo is no oracle.
func smallTypes(b []byte) bool {
	a := attrs{b: b}
	for a.next() {
		if a.typ > 0xff {
			return false
		}
		if inner := (attrs{b: a.data}); len(a.data) > 0 && whole(inner) && !smallTypes(a.data) {
			return false
		}
	}
	return true
}

// whole reports whether a's bytes are a run of attributes to the end.
func whole(a attrs) bool {
	for a.next() {
	}
	return !a.bad
}

// BenchmarkParseConn reads captured kernel messages (a dump's entry, a destroy event)
// with parseConn (new) and the way sgd did before, through ti-mo/conntrack (ti-mo).
func BenchmarkParseConn(b *testing.B) {
	all := seeds(b)
	for _, name := range []string{"dump-tcp4-acct-labels-mark-state3", "destroy-tcp4-acct-mark-state3"} {
		m, ok := all[name]
		if !ok {
			b.Fatalf("no seed %s", name)
		}
		b.Run(name+"/new", func(b *testing.B) {
			b.ReportAllocs()
			var c Conn
			for b.Loop() {
				if _, ok := parseConn(m, &c); !ok || c.Mark&Mark == 0 {
					b.Fatal("not read")
				}
			}
		})
		b.Run(name+"/ti-mo", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if c, _, ok := tiMo(m); !ok || c.Mark&Mark == 0 {
					b.Fatal("not read")
				}
			}
		})
	}
}
