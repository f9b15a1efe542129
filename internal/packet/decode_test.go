package packet

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// v4SYN is an IPv4 TCP SYN with the options Linux sends, byte by byte.
var v4SYN = []byte{
	// IPv4 header (RFC 791 section 3.1)
	0x45,       // version 4, IHL 5 (20 bytes)
	0x00,       // DSCP, ECN
	0x00, 0x3c, // total length 60
	0x1c, 0x46, // identification
	0x40, 0x00, // flags DF, fragment offset 0
	0x40,       // TTL 64
	0x06,       // protocol 6 (TCP)
	0x00, 0x00, // header checksum
	192, 0, 2, 1, // source 192.0.2.1
	198, 51, 100, 2, // destination 198.51.100.2
	// TCP header (RFC 9293 section 3.1)
	0x04, 0xd2, // source port 1234
	0x00, 0x50, // destination port 80
	0x6b, 0x8b, 0x45, 0x67, // sequence number
	0x00, 0x00, 0x00, 0x00, // acknowledgment number
	0xa0,       // data offset 10 (40 bytes), reserved
	0x02,       // flags SYN
	0xfa, 0xf0, // window
	0x00, 0x00, // checksum
	0x00, 0x00, // urgent pointer
	0x02, 0x04, 0x05, 0xb4, // option MSS 1460
	0x04, 0x02, // option SACK permitted
	0x08, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // option timestamps
	0x01,             // option NOP
	0x03, 0x03, 0x07, // option window scale 7
}

// v6HopFragSYN is an IPv6 TCP SYN behind a hop-by-hop header (router alert) and the
// fragment header of a first fragment, byte by byte.
var v6HopFragSYN = []byte{
	// IPv6 header (RFC 8200 section 3)
	0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
	0x00, 0x24, // payload length 36
	0x00,                                           // next header 0 (hop-by-hop options)
	0x40,                                           // hop limit 64
	0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, // source 2001:db8::1
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // destination 2001:db8:1::2
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
	// Hop-by-hop options header (RFC 8200 section 4.3)
	0x2c,                   // next header 44 (fragment)
	0x00,                   // header extension length 0 (8 bytes)
	0x05, 0x02, 0x00, 0x00, // option router alert (RFC 2711), value 0
	0x01, 0x00, // option PadN, no data
	// Fragment header (RFC 8200 section 4.5)
	0x06,       // next header 6 (TCP)
	0x00,       // reserved
	0x00, 0x01, // fragment offset 0, res 0, M 1 (more fragments)
	0x00, 0x00, 0x00, 0x07, // identification
	// TCP header (RFC 9293 section 3.1)
	0x04, 0xd2, // source port 1234
	0x01, 0xbb, // destination port 443
	0x6b, 0x8b, 0x45, 0x67, // sequence number
	0x00, 0x00, 0x00, 0x00, // acknowledgment number
	0x50,       // data offset 5 (20 bytes), reserved
	0x02,       // flags SYN
	0xfa, 0xf0, // window
	0x00, 0x00, // checksum
	0x00, 0x00, // urgent pointer
}

type decodeCase struct {
	name string
	b    []byte
	ok   bool
	want Parsed // Length 0 here means len(b)
}

// decodeCases are the packet kinds the tests, the benchmarks and the fuzz seeds share.
func decodeCases() []decodeCase {
	const (
		syn    = FlagSYN
		synAck = FlagSYN | FlagACK
		ack    = FlagACK
		pshAck = FlagPSH | FlagACK
	)
	tsOpt := []byte{
		1, 1, // NOP NOP
		8, 10, 0, 0, 0, 1, 0, 0, 0, 2, // timestamps
	}
	// MPTCP MP_CAPABLE on a SYN (RFC 8684 section 3.1): kind 30, length 12, subtype 0
	// version 1, flags A|H, the sender's key.
	mptcpOpt := []byte{30, 12, 0x01, 0x81, 1, 2, 3, 4, 5, 6, 7, 8}
	// Router alert (RFC 2113): type 148, length 4, value 0.
	raOpt := []byte{148, 4, 0, 0}

	v4tcp := func(sp, dp uint16, fl uint8) Parsed {
		return Parsed{Family: 4, Proto: ipproto.TCP, Src: addr(v4a), Dst: addr(v4b), SrcPort: sp, DstPort: dp, TCPFlags: fl}
	}
	v6tcp := func(sp, dp uint16, fl uint8) Parsed {
		return Parsed{Family: 6, Proto: ipproto.TCP, Src: addr(v6a), Dst: addr(v6b), SrcPort: sp, DstPort: dp, TCPFlags: fl}
	}
	v4udp := Parsed{Family: 4, Proto: ipproto.UDP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 5353, DstPort: 53}
	v6udp := Parsed{Family: 6, Proto: ipproto.UDP, Src: addr(v6a), Dst: addr(v6b), SrcPort: 5353, DstPort: 53}
	ip := func(family, proto uint8) Parsed {
		if family == 4 {
			return Parsed{Family: 4, Proto: proto, Src: addr(v4a), Dst: addr(v4b)}
		}
		return Parsed{Family: 6, Proto: proto, Src: addr(v6a), Dst: addr(v6b)}
	}
	laterFrag := func(family, proto uint8) Parsed {
		p := ip(family, proto)
		p.LaterFragment = true
		return p
	}
	icmpErr := func(family, typ, code uint8, in InnerHeader) Parsed {
		p := Parsed{Family: family, Proto: ipproto.ICMP, Src: addr(v4r), Dst: addr(v4a), ICMPType: typ, ICMPCode: code, Inner: in}
		if family == 6 {
			p.Proto, p.Src, p.Dst = ipproto.ICMPv6, addr(v6r), addr(v6a)
		}
		return p
	}
	with := func(p Parsed, f func(*Parsed)) Parsed { f(&p); return p }

	// Packets an ICMP error quotes: sent from a to b.
	quoted4tcp := ipv4(ipproto.TCP, v4a, v4b, tcpSeg(1234, 80, pshAck, nil, zeros(1400)))
	quoted4udp := ipv4(ipproto.UDP, v4a, v4b, udpDgram(5353, 53, zeros(100)))
	quoted4echo := ipv4(ipproto.ICMP, v4a, v4b, icmpMsg(8, 0, echo(0x1234, 9), zeros(56)))
	quoted6tcp := ipv6(ipproto.TCP, v6a, v6b, tcpSeg(1234, 443, pshAck, nil, zeros(1400)))
	quoted6udp := ipv6(ipproto.UDP, v6a, v6b, udpDgram(5353, 53, zeros(100)))
	quoted6echo := ipv6(protoHopByHop, v6a, v6b, extHdr(ipproto.ICMPv6, 1, icmpMsg(128, 0, echo(7, 1), zeros(56))))
	in4tcp := InnerHeader{Valid: true, Proto: ipproto.TCP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 1234, DstPort: 80}
	in4udp := InnerHeader{Valid: true, Proto: ipproto.UDP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 5353, DstPort: 53}
	in6tcp := InnerHeader{Valid: true, Proto: ipproto.TCP, Src: addr(v6a), Dst: addr(v6b), SrcPort: 1234, DstPort: 443}
	in6udp := InnerHeader{Valid: true, Proto: ipproto.UDP, Src: addr(v6a), Dst: addr(v6b), SrcPort: 5353, DstPort: 53}

	// nExt is TCP behind n destination options headers.
	nExt := func(n int) []byte {
		b := tcpSeg(1234, 443, syn, nil, nil)
		next := uint8(ipproto.TCP)
		for range n {
			b = extHdr(next, 1, b)
			next = protoDestOpts
		}
		return ipv6(next, v6a, v6b, b)
	}

	return []decodeCase{
		// IPv4 TCP.
		{"v4/tcp/syn-options", v4SYN, true, v4tcp(1234, 80, syn)},
		{"v4/tcp/syn-ack", ipv4(ipproto.TCP, v4b, v4a, tcpSeg(80, 1234, synAck, tsOpt, nil)), true,
			Parsed{Family: 4, Proto: ipproto.TCP, Src: addr(v4b), Dst: addr(v4a), SrcPort: 80, DstPort: 1234, TCPFlags: synAck}},
		{"v4/tcp/ack", ipv4(ipproto.TCP, v4a, v4b, tcpSeg(1234, 80, ack, tsOpt, nil)), true, v4tcp(1234, 80, ack)},
		{"v4/tcp/ack-payload", ipv4(ipproto.TCP, v4a, v4b, tcpSeg(1234, 80, pshAck, tsOpt, []byte("GET / HTTP/1.1\r\n\r\n"))), true, v4tcp(1234, 80, pshAck)},
		{"v4/tcp/mptcp-option", ipv4(ipproto.TCP, v4a, v4b, tcpSeg(1234, 80, syn, mptcpOpt, nil)), true, v4tcp(1234, 80, syn)},
		{"v4/tcp/all-flags", ipv4(ipproto.TCP, v4a, v4b, tcpSeg(1234, 80, 0xff, nil, nil)), true, v4tcp(1234, 80, 0xff)},
		{"v4/tcp/ip-options", ipv4Opts(ipproto.TCP, v4a, v4b, append(raOpt, 1, 1, 0), tcpSeg(1234, 80, syn, nil, nil)), true, v4tcp(1234, 80, syn)},
		{"v4/tcp/first-fragment", ipv4Frag(ipproto.TCP, v4a, v4b, 0, true, tcpSeg(1234, 80, ack, nil, zeros(100))), true, v4tcp(1234, 80, ack)},
		{"v4/tcp/later-fragment", ipv4Frag(ipproto.TCP, v4a, v4b, 185, false, zeros(100)), true, laterFrag(4, ipproto.TCP)},
		{"v4/tcp/later-fragment-empty", ipv4Frag(ipproto.TCP, v4a, v4b, 185, false, nil), true, laterFrag(4, ipproto.TCP)},
		{"v4/tcp/truncated-copy", cut(ipv4(ipproto.TCP, v4a, v4b, tcpSeg(1234, 80, ack, tsOpt, zeros(1448))), 256), true,
			with(v4tcp(1234, 80, ack), func(p *Parsed) { p.Length = 1500 })},
		{"v4/tcp/gso-length-0", set(ipv4(ipproto.TCP, v4a, v4b, tcpSeg(1234, 80, ack, nil, zeros(216))), 2, 0, 0), true, v4tcp(1234, 80, ack)},
		{"v4/tcp/trailer", append(ipv4(ipproto.TCP, v4a, v4b, tcpSeg(1234, 80, ack, nil, nil)), 0, 0, 0, 0), true,
			with(v4tcp(1234, 80, ack), func(p *Parsed) { p.Length = 40 })},

		// IPv4 UDP.
		{"v4/udp", ipv4(ipproto.UDP, v4a, v4b, udpDgram(5353, 53, zeros(30))), true, v4udp},
		{"v4/udp/empty", ipv4(ipproto.UDP, v4a, v4b, udpDgram(5353, 53, nil)), true, v4udp},
		{"v4/udp/ip-options", ipv4Opts(ipproto.UDP, v4a, v4b, raOpt, udpDgram(5353, 53, zeros(30))), true, v4udp},
		{"v4/udp/truncated-copy", cut(ipv4(ipproto.UDP, v4a, v4b, udpDgram(5353, 53, zeros(1472))), 256), true,
			with(v4udp, func(p *Parsed) { p.Length = 1500 })},
		// A UDP length past the IP payload is malformed (Linux drops it); shorter is padding.
		{"v4/udp/length-past-end", set(ipv4(ipproto.UDP, v4a, v4b, udpDgram(5353, 53, zeros(30))), 20+4, 0, 39), false, Parsed{}},
		{"v4/udp/length-past-end-max", set(ipv4(ipproto.UDP, v4a, v4b, udpDgram(5353, 53, zeros(30))), 20+4, 0xff, 0xff), false, Parsed{}},
		{"v4/udp/length-past-end-options", set(ipv4Opts(ipproto.UDP, v4a, v4b, raOpt, udpDgram(5353, 53, zeros(30))), 24+4, 0, 39), false, Parsed{}},
		{"v4/udp/length-0", set(ipv4(ipproto.UDP, v4a, v4b, udpDgram(5353, 53, zeros(30))), 20+4, 0, 0), false, Parsed{}},
		{"v4/udp/length-7", set(ipv4(ipproto.UDP, v4a, v4b, udpDgram(5353, 53, zeros(30))), 20+4, 0, 7), false, Parsed{}},
		{"v4/udp/padding", set(ipv4(ipproto.UDP, v4a, v4b, udpDgram(5353, 53, zeros(30))), 20+4, 0, 18), true, v4udp},
		{"v4/udp/truncated-copy-length-past-end", cut(set(ipv4(ipproto.UDP, v4a, v4b, udpDgram(5353, 53, zeros(1472))), 20+4, 0x05, 0xc9), 256), false, Parsed{}},

		// ICMP.
		{"v4/icmp/echo-request", ipv4(ipproto.ICMP, v4a, v4b, icmpMsg(8, 0, echo(0x1234, 1), zeros(56))), true,
			with(ip(4, ipproto.ICMP), func(p *Parsed) { p.ICMPType, p.ICMPID = 8, 0x1234 })},
		{"v4/icmp/echo-reply", ipv4(ipproto.ICMP, v4a, v4b, icmpMsg(0, 0, echo(0x1234, 1), zeros(56))), true,
			with(ip(4, ipproto.ICMP), func(p *Parsed) { p.ICMPType, p.ICMPID = 0, 0x1234 })},
		{"v4/icmp/port-unreachable-udp", ipv4(ipproto.ICMP, v4r, v4a, icmpMsg(3, 3, 0, cut(quoted4udp, 28))), true,
			icmpErr(4, 3, 3, in4udp)},
		{"v4/icmp/frag-needed-tcp", ipv4(ipproto.ICMP, v4r, v4a, icmpMsg(3, 4, 1400, cut(quoted4tcp, 28))), true,
			icmpErr(4, 3, 4, in4tcp)},
		{"v4/icmp/frag-needed-tcp-long-quote", ipv4(ipproto.ICMP, v4r, v4a, icmpMsg(3, 4, 1400, cut(quoted4tcp, 548))), true,
			icmpErr(4, 3, 4, in4tcp)},
		{"v4/icmp/time-exceeded-echo", ipv4(ipproto.ICMP, v4r, v4a, icmpMsg(11, 0, 0, cut(quoted4echo, 28))), true,
			icmpErr(4, 11, 0, InnerHeader{Valid: true, Proto: ipproto.ICMP, Src: addr(v4a), Dst: addr(v4b), ICMPType: 8, ICMPID: 0x1234})},
		{"v4/icmp/unreachable-gre", ipv4(ipproto.ICMP, v4r, v4a, icmpMsg(3, 1, 0, ipv4(protoGRE, v4a, v4b, zeros(8)))), true,
			icmpErr(4, 3, 1, InnerHeader{Valid: true, Proto: protoGRE, Src: addr(v4a), Dst: addr(v4b)})},
		{"v4/icmp/unreachable-later-fragment", ipv4(ipproto.ICMP, v4r, v4a, icmpMsg(3, 1, 0, ipv4Frag(ipproto.UDP, v4a, v4b, 100, false, zeros(8)))), true,
			icmpErr(4, 3, 1, InnerHeader{Valid: true, Proto: ipproto.UDP, Src: addr(v4a), Dst: addr(v4b)})},
		{"v4/icmp/unreachable-short-quote", ipv4(ipproto.ICMP, v4r, v4a, icmpMsg(3, 3, 0, cut(quoted4udp, 22))), true,
			icmpErr(4, 3, 3, InnerHeader{})},
		{"v4/icmp/unreachable-quote-v6", ipv4(ipproto.ICMP, v4r, v4a, icmpMsg(3, 3, 0, cut(quoted6udp, 48))), true,
			icmpErr(4, 3, 3, InnerHeader{})},
		{"v4/icmp/unreachable-no-quote", ipv4(ipproto.ICMP, v4r, v4a, icmpMsg(3, 3, 0, nil)), true, icmpErr(4, 3, 3, InnerHeader{})},
		{"v4/icmp/timestamp", ipv4(ipproto.ICMP, v4a, v4b, icmpMsg(13, 0, echo(5, 1), zeros(12))), true,
			with(ip(4, ipproto.ICMP), func(p *Parsed) { p.ICMPType = 13 })},

		// IPv4 other protocols.
		{"v4/gre", ipv4(protoGRE, v4a, v4b, zeros(24)), true, ip(4, protoGRE)},
		{"v4/gre-empty", ipv4(protoGRE, v4a, v4b, nil), true, ip(4, protoGRE)},
		{"v4/sctp", ipv4(protoSCTP, v4a, v4b, zeros(28)), true, ip(4, protoSCTP)},
		{"v4/esp", ipv4(protoESP, v4a, v4b, zeros(40)), true, ip(4, protoESP)},
		{"v4/ipip", ipv4(protoIPIP, v4a, v4b, ipv4(ipproto.TCP, v4r, v4b, tcpSeg(1, 2, syn, nil, nil))), true, ip(4, protoIPIP)},
		{"v4/icmpv6-number", ipv4(ipproto.ICMPv6, v4a, v4b, icmpMsg(128, 0, echo(1, 1), nil)), true, ip(4, ipproto.ICMPv6)},

		// IPv6 TCP.
		{"v6/tcp/syn-options", ipv6(ipproto.TCP, v6a, v6b, tcpSeg(1234, 443, syn, append([]byte{2, 4, 5, 0xa0, 4, 2}, tsOpt...), nil)), true, v6tcp(1234, 443, syn)},
		{"v6/tcp/syn-ack", ipv6(ipproto.TCP, v6b, v6a, tcpSeg(443, 1234, synAck, tsOpt, nil)), true,
			Parsed{Family: 6, Proto: ipproto.TCP, Src: addr(v6b), Dst: addr(v6a), SrcPort: 443, DstPort: 1234, TCPFlags: synAck}},
		{"v6/tcp/ack-payload", ipv6(ipproto.TCP, v6a, v6b, tcpSeg(1234, 443, pshAck, tsOpt, zeros(100))), true, v6tcp(1234, 443, pshAck)},
		{"v6/tcp/hop-by-hop-fragment", v6HopFragSYN, true, v6tcp(1234, 443, syn)},
		{"v6/tcp/hop-dest-routing-dest", ipv6(protoHopByHop, v6a, v6b, extHdr(protoDestOpts, 1, extHdr(protoRouting, 2,
			routingHdr(protoDestOpts, extHdr(ipproto.TCP, 1, tcpSeg(1234, 443, ack, nil, nil)))))), true, v6tcp(1234, 443, ack)},
		{"v6/tcp/later-fragment", ipv6(protoFragment, v6a, v6b, fragHdr(ipproto.TCP, 100, true, zeros(64))), true, laterFrag(6, ipproto.TCP)},
		{"v6/tcp/8-ext-headers", nExt(8), true, v6tcp(1234, 443, syn)},
		{"v6/tcp/truncated-copy", cut(ipv6(ipproto.TCP, v6a, v6b, tcpSeg(1234, 443, ack, tsOpt, zeros(1428))), 256), true,
			with(v6tcp(1234, 443, ack), func(p *Parsed) { p.Length = 1500 })},
		{"v6/tcp/options-cut-by-copy", cut(ipv6(protoDestOpts, v6a, v6b, extHdr(ipproto.TCP, 24, tcpSeg(1234, 443, ack, zeros(20), zeros(1000)))), 256), true,
			with(v6tcp(1234, 443, ack), func(p *Parsed) { p.Length = 40 + 192 + 40 + 1000 })},
		{"v6/tcp/big-tcp-length-0", set(ipv6(ipproto.TCP, v6a, v6b, tcpSeg(1234, 443, ack, nil, zeros(196))), 4, 0, 0), true, v6tcp(1234, 443, ack)},
		{"v6/tcp/trailer", append(ipv6(ipproto.TCP, v6a, v6b, tcpSeg(1234, 443, ack, nil, nil)), 0, 0), true,
			with(v6tcp(1234, 443, ack), func(p *Parsed) { p.Length = 60 })},

		// IPv6 UDP.
		{"v6/udp", ipv6(ipproto.UDP, v6a, v6b, udpDgram(5353, 53, zeros(30))), true, v6udp},
		{"v6/udp/atomic-fragment", ipv6(protoFragment, v6a, v6b, fragHdr(ipproto.UDP, 0, false, udpDgram(5353, 53, zeros(30)))), true, v6udp},
		{"v6/udp/length-0", set(ipv6(ipproto.UDP, v6a, v6b, udpDgram(5353, 53, zeros(30))), 40+4, 0, 0), true, v6udp},
		{"v6/udp/length-past-end", set(ipv6(ipproto.UDP, v6a, v6b, udpDgram(5353, 53, zeros(30))), 40+4, 0, 39), false, Parsed{}},
		{"v6/udp/length-past-end-ext", ipv6(protoHopByHop, v6a, v6b, extHdr(ipproto.UDP, 1, set(udpDgram(5353, 53, zeros(30)), 4, 0, 39))), false, Parsed{}},
		{"v6/udp/padding", set(ipv6(ipproto.UDP, v6a, v6b, udpDgram(5353, 53, zeros(30))), 40+4, 0, 8), true, v6udp},
		{"v6/udp/v4-mapped-source", ipv6(ipproto.UDP, "::ffff:192.0.2.1", v6b, udpDgram(5353, 53, nil)), true,
			with(v6udp, func(p *Parsed) { p.Src = addr("::ffff:192.0.2.1") })},

		// ICMPv6.
		{"v6/icmp/echo-request", ipv6(ipproto.ICMPv6, v6a, v6b, icmpMsg(128, 0, echo(0xbeef, 1), zeros(56))), true,
			with(ip(6, ipproto.ICMPv6), func(p *Parsed) { p.ICMPType, p.ICMPID = 128, 0xbeef })},
		{"v6/icmp/echo-reply", ipv6(ipproto.ICMPv6, v6a, v6b, icmpMsg(129, 0, echo(0xbeef, 1), nil)), true,
			with(ip(6, ipproto.ICMPv6), func(p *Parsed) { p.ICMPType, p.ICMPID = 129, 0xbeef })},
		{"v6/icmp/neighbor-solicitation", ipv6(ipproto.ICMPv6, v6a, "ff02::1:ff00:2", icmpMsg(135, 0, 0,
			append(addr(v6b).AsSlice(), 1, 1, 2, 0, 0, 0, 0, 1))), true, // target address, source link-layer address option
			Parsed{Family: 6, Proto: ipproto.ICMPv6, Src: addr(v6a), Dst: addr("ff02::1:ff00:2"), ICMPType: 135}},
		{"v6/icmp/packet-too-big-tcp", ipv6(ipproto.ICMPv6, v6r, v6a, icmpMsg(2, 0, 1280, cut(quoted6tcp, 1232))), true,
			icmpErr(6, 2, 0, in6tcp)},
		{"v6/icmp/port-unreachable-udp", ipv6(ipproto.ICMPv6, v6r, v6a, icmpMsg(1, 4, 0, cut(quoted6udp, 48))), true,
			icmpErr(6, 1, 4, in6udp)},
		{"v6/icmp/time-exceeded-echo-behind-hop-by-hop", ipv6(ipproto.ICMPv6, v6r, v6a, icmpMsg(3, 0, 0, cut(quoted6echo, 56))), true,
			icmpErr(6, 3, 0, InnerHeader{Valid: true, Proto: ipproto.ICMPv6, Src: addr(v6a), Dst: addr(v6b), ICMPType: 128, ICMPID: 7})},
		{"v6/icmp/param-problem-cut-ext-chain", ipv6(ipproto.ICMPv6, v6r, v6a, icmpMsg(4, 1, 40, ipv6(protoHopByHop, v6a, v6b, extHdr(protoRouting, 1, nil)))), true,
			icmpErr(6, 4, 1, InnerHeader{})},
		{"v6/icmp/packet-too-big-quote-v4", ipv6(ipproto.ICMPv6, v6r, v6a, icmpMsg(2, 0, 1280, cut(quoted4tcp, 28))), true,
			icmpErr(6, 2, 0, InnerHeader{})},

		// IPv6 other protocols.
		{"v6/sctp", ipv6(protoSCTP, v6a, v6b, zeros(28)), true, ip(6, protoSCTP)},
		{"v6/gre-behind-dest-opts", ipv6(protoDestOpts, v6a, v6b, extHdr(protoGRE, 1, zeros(8))), true, ip(6, protoGRE)},
		{"v6/esp", ipv6(protoESP, v6a, v6b, zeros(40)), true, ip(6, protoESP)},
		{"v6/no-next-header", ipv6(protoNoNext, v6a, v6b, nil), true, ip(6, protoNoNext)},
		{"v6/ipv6-in-ipv6", ipv6(protoIPv6, v6a, v6b, ipv6(ipproto.TCP, v6r, v6b, tcpSeg(1, 2, syn, nil, nil))), true, ip(6, protoIPv6)},
		{"v6/icmpv4-number", ipv6(ipproto.ICMP, v6a, v6b, icmpMsg(8, 0, echo(1, 1), nil)), true, ip(6, ipproto.ICMP)},

		// Malformed.
		{"bad/empty", []byte{}, false, Parsed{}},
		{"bad/nil", nil, false, Parsed{}},
		{"bad/version-only", []byte{0x45}, false, Parsed{}},
		{"bad/version-0", set(v4SYN, 0, 0x05), false, Parsed{}},
		{"bad/version-5", set(v4SYN, 0, 0x55), false, Parsed{}},
		{"bad/version-15", set(v4SYN, 0, 0xf5), false, Parsed{}},
		{"bad/v4/short-header", cut(v4SYN, 19), false, Parsed{}},
		{"bad/v4/ihl-4", set(v4SYN, 0, 0x44), false, Parsed{}},
		{"bad/v4/ihl-beyond-data", set(ipv4(protoGRE, v4a, v4b, nil), 0, 0x4f), false, Parsed{}},
		{"bad/v4/ihl-beyond-total-length", set(ipv4(protoGRE, v4a, v4b, zeros(8)), 0, 0x46, 0, 0, 20), false, Parsed{}},
		{"bad/v4/total-length-10", set(v4SYN, 2, 0, 10), false, Parsed{}},
		{"bad/v4/option-length-1", ipv4Opts(ipproto.UDP, v4a, v4b, []byte{148, 1}, udpDgram(1, 2, nil)), false, Parsed{}},
		{"bad/v4/option-overruns", ipv4Opts(ipproto.UDP, v4a, v4b, []byte{148, 8, 0, 0}, udpDgram(1, 2, nil)), false, Parsed{}},
		{"bad/v4/tcp-missing", ipv4(ipproto.TCP, v4a, v4b, nil), false, Parsed{}},
		{"bad/v4/tcp-10-bytes", ipv4(ipproto.TCP, v4a, v4b, zeros(10)), false, Parsed{}},
		{"bad/v4/tcp-19-bytes", ipv4(ipproto.TCP, v4a, v4b, cut(tcpSeg(1, 2, syn, nil, nil), 19)), false, Parsed{}},
		{"bad/v4/tcp-data-offset-4", ipv4(ipproto.TCP, v4a, v4b, set(tcpSeg(1, 2, syn, nil, nil), 12, 0x40)), false, Parsed{}},
		{"bad/v4/tcp-data-offset-beyond-packet", ipv4(ipproto.TCP, v4a, v4b, set(tcpSeg(1, 2, syn, nil, nil), 12, 0xf0)), false, Parsed{}},
		{"bad/v4/first-fragment-tcp-8-bytes", ipv4Frag(ipproto.TCP, v4a, v4b, 0, true, zeros(8)), false, Parsed{}},
		{"bad/v4/udp-4-bytes", ipv4(ipproto.UDP, v4a, v4b, zeros(4)), false, Parsed{}},
		{"bad/v4/udp-length-5", ipv4(ipproto.UDP, v4a, v4b, set(udpDgram(1, 2, zeros(4)), 4, 0, 5)), false, Parsed{}},
		{"bad/v4/icmp-4-bytes", ipv4(ipproto.ICMP, v4a, v4b, zeros(4)), false, Parsed{}},
		{"bad/v4/icmp-missing", ipv4(ipproto.ICMP, v4a, v4b, nil), false, Parsed{}},
		{"bad/v6/short-header", cut(v6HopFragSYN, 39), false, Parsed{}},
		{"bad/v6/header-only-40", cut(v6HopFragSYN, 40), false, Parsed{}},
		{"bad/v6/ext-overruns", ipv6(protoHopByHop, v6a, v6b, set(extHdr(ipproto.TCP, 1, tcpSeg(1, 2, syn, nil, nil)), 1, 5)), false, Parsed{}},
		{"bad/v6/ext-1-byte", ipv6(protoDestOpts, v6a, v6b, []byte{6}), false, Parsed{}},
		{"bad/v6/ext-chain-cut", ipv6(protoHopByHop, v6a, v6b, extHdr(protoRouting, 1, nil)), false, Parsed{}},
		{"bad/v6/9-ext-headers", nExt(9), false, Parsed{}},
		{"bad/v6/fragment-4-bytes", ipv6(protoFragment, v6a, v6b, zeros(4)), false, Parsed{}},
		{"bad/v6/tcp-10-bytes", ipv6(ipproto.TCP, v6a, v6b, zeros(10)), false, Parsed{}},
		{"bad/v6/tcp-data-offset-beyond-packet", ipv6(ipproto.TCP, v6a, v6b, set(tcpSeg(1, 2, syn, nil, zeros(8)), 12, 0xf0)), false, Parsed{}},
		{"bad/v6/tcp-cut-by-copy", cut(ipv6(protoDestOpts, v6a, v6b, extHdr(ipproto.TCP, 26, tcpSeg(1234, 443, ack, nil, zeros(1000)))), 256), false, Parsed{}},
		{"bad/v6/udp-7-bytes", ipv6(ipproto.UDP, v6a, v6b, zeros(7)), false, Parsed{}},
		{"bad/v6/icmp-4-bytes", ipv6(ipproto.ICMPv6, v6a, v6b, icmpMsg(128, 0, 0, nil)[:4]), false, Parsed{}},
	}
}

// junk is what p holds before each Decode, to show that no field survives it.
var junk = Parsed{
	Family: 9, Proto: 99, Src: addr("203.0.113.99"), Dst: addr("2001:db8::99"), SrcPort: 9, DstPort: 9,
	TCPFlags: 0xff, ICMPType: 9, ICMPCode: 9, ICMPID: 9, Length: 9,
	Inner: InnerHeader{Valid: true, Proto: 9, Src: addr("203.0.113.98"), SrcPort: 9, ICMPType: 9, ICMPID: 9},
}

func TestDecode(t *testing.T) {
	d := NewDecoder()
	for _, tc := range decodeCases() {
		want := tc.want
		if tc.ok && want.Length == 0 {
			want.Length = len(tc.b)
		}
		p := junk
		if ok := d.Decode(tc.b, &p); ok != tc.ok || p != want {
			t.Errorf("%s: Decode(% x) = %v, %v; want %v, %v", tc.name, tc.b, ok, p.String(), tc.ok, want.String())
			if p.Inner != want.Inner {
				t.Errorf("%s: Inner = %+v; want %+v", tc.name, p.Inner, want.Inner)
			}
		}
	}
}

// TestDecodeAfterEach decodes every case after every other with one Decoder, to show
// that nothing of one packet leaks into the next through the Decoder's layers.
func TestDecodeAfterEach(t *testing.T) {
	cases := decodeCases()
	fresh := make([]Parsed, len(cases))
	for i, tc := range cases {
		NewDecoder().Decode(tc.b, &fresh[i])
	}
	d := NewDecoder()
	for i, tc := range cases {
		for j, prev := range cases {
			var p Parsed
			d.Decode(prev.b, &p)
			if d.Decode(tc.b, &p); p != fresh[i] {
				t.Errorf("Decode(%s) after Decode(%s) = %v; want %v", tc.name, cases[j].name, p.String(), fresh[i].String())
			}
		}
	}
}

func TestDecodeNoAllocs(t *testing.T) {
	d := NewDecoder()
	for _, tc := range decodeCases() {
		var p Parsed
		n := testing.AllocsPerRun(100, func() {
			if d.Decode(tc.b, &p) != tc.ok {
				t.Fatalf("%s: Decode = %v; want %v", tc.name, !tc.ok, tc.ok)
			}
		})
		if n != 0 {
			t.Errorf("%s: Decode allocates %v times per packet; want 0", tc.name, n)
		}
	}
}

// TestDecodeSerialized decodes packets built by gopacket's serializer, a second opinion
// on the hand-built fixtures.
func TestDecodeSerialized(t *testing.T) {
	ip4 := func(proto layers.IPProtocol) *layers.IPv4 {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: net.ParseIP(v4a), DstIP: net.ParseIP(v4b)}
	}
	ip6 := func(next layers.IPProtocol) *layers.IPv6 {
		return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: net.ParseIP(v6a), DstIP: net.ParseIP(v6b)}
	}
	tcp := func() *layers.TCP {
		return &layers.TCP{SrcPort: 40000, DstPort: 22, SYN: true, ECE: true, CWR: true, Window: 64240, Options: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}}
	}
	udp := &layers.UDP{SrcPort: 123, DstPort: 123}
	tcpFlags := FlagSYN | FlagECE | FlagCWR
	v4, v6 := ip4(layers.IPProtocolTCP), ip6(layers.IPProtocolTCP)
	quoted := ip4(layers.IPProtocolUDP)
	cases := []struct {
		name   string
		layers []gopacket.SerializableLayer
		want   Parsed
	}{
		{"v4/tcp", []gopacket.SerializableLayer{v4, tcp()},
			Parsed{Family: 4, Proto: ipproto.TCP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 40000, DstPort: 22, TCPFlags: tcpFlags}},
		{"v6/tcp", []gopacket.SerializableLayer{v6, tcp(), gopacket.Payload("hello")},
			Parsed{Family: 6, Proto: ipproto.TCP, Src: addr(v6a), Dst: addr(v6b), SrcPort: 40000, DstPort: 22, TCPFlags: tcpFlags}},
		{"v4/udp", []gopacket.SerializableLayer{ip4(layers.IPProtocolUDP), udp, gopacket.Payload("ntp")},
			Parsed{Family: 4, Proto: ipproto.UDP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 123, DstPort: 123}},
		{"v6/icmp-echo", []gopacket.SerializableLayer{ip6(layers.IPProtocolICMPv6),
			&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)},
			&layers.ICMPv6Echo{Identifier: 77, SeqNumber: 1}},
			Parsed{Family: 6, Proto: ipproto.ICMPv6, Src: addr(v6a), Dst: addr(v6b), ICMPType: 128, ICMPID: 77}},
		{"v4/icmp-unreachable", []gopacket.SerializableLayer{ip4(layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)},
			quoted, udp},
			Parsed{Family: 4, Proto: ipproto.ICMP, Src: addr(v4a), Dst: addr(v4b), ICMPType: 3, ICMPCode: 3,
				Inner: InnerHeader{Valid: true, Proto: ipproto.UDP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 123, DstPort: 123}}},
	}
	d := NewDecoder()
	for _, tc := range cases {
		buf := gopacket.NewSerializeBuffer()
		opts := gopacket.SerializeOptions{FixLengths: true} // Decode does not check checksums
		if err := gopacket.SerializeLayers(buf, opts, tc.layers...); err != nil {
			t.Fatalf("%s: SerializeLayers: %v", tc.name, err)
		}
		b := buf.Bytes()
		want := tc.want
		want.Length = len(b)
		var p Parsed
		if ok := d.Decode(b, &p); !ok || p != want {
			t.Errorf("%s: Decode(% x) = %v, %v; want true, %v", tc.name, b, ok, p.String(), want.String())
		}
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		p    Parsed
		want string
	}{
		{Parsed{}, "undecoded"},
		{Parsed{Family: 4, Proto: ipproto.TCP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 1234, DstPort: 80, TCPFlags: FlagSYN},
			"tcp 192.0.2.1:1234 -> 198.51.100.2:80 [S]"},
		{Parsed{Family: 6, Proto: ipproto.TCP, Src: addr(v6a), Dst: addr(v6b), SrcPort: 1234, DstPort: 443, TCPFlags: FlagPSH | FlagACK},
			"tcp [2001:db8::1]:1234 -> [2001:db8:1::2]:443 [P.]"},
		{Parsed{Family: 4, Proto: ipproto.TCP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 1, DstPort: 2},
			"tcp 192.0.2.1:1 -> 198.51.100.2:2 [none]"},
		{Parsed{Family: 4, Proto: ipproto.TCP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 1, DstPort: 2, TCPFlags: 0xff},
			"tcp 192.0.2.1:1 -> 198.51.100.2:2 [FSRP.UEW]"},
		{Parsed{Family: 4, Proto: ipproto.UDP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 5353, DstPort: 53},
			"udp 192.0.2.1:5353 -> 198.51.100.2:53"},
		{Parsed{Family: 4, Proto: ipproto.ICMP, Src: addr(v4a), Dst: addr(v4b), ICMPType: 8, ICMPID: 4660},
			"icmp 192.0.2.1 -> 198.51.100.2 type=8 code=0 id=4660"},
		{Parsed{Family: 4, Proto: ipproto.ICMP, Src: addr(v4r), Dst: addr(v4a), ICMPType: 3, ICMPCode: 4,
			Inner: InnerHeader{Valid: true, Proto: ipproto.TCP, Src: addr(v4a), Dst: addr(v4b), SrcPort: 1234, DstPort: 80}},
			"icmp 203.0.113.9 -> 192.0.2.1 type=3 code=4 inner(tcp 192.0.2.1:1234 -> 198.51.100.2:80)"},
		{Parsed{Family: 6, Proto: ipproto.ICMPv6, Src: addr(v6r), Dst: addr(v6a), ICMPType: 3,
			Inner: InnerHeader{Valid: true, Proto: ipproto.ICMPv6, Src: addr(v6a), Dst: addr(v6b), ICMPType: 128, ICMPID: 7}},
			"icmpv6 2001:db8:ff::9 -> 2001:db8::1 type=3 code=0 inner(icmpv6 2001:db8::1 -> 2001:db8:1::2 type=128 id=7)"},
		{Parsed{Family: 6, Proto: ipproto.ICMPv6, Src: addr(v6a), Dst: addr(v6b), ICMPType: 135}, "icmpv6 2001:db8::1 -> 2001:db8:1::2 type=135 code=0"},
		{Parsed{Family: 4, Proto: protoGRE, Src: addr(v4a), Dst: addr(v4b)}, "proto-47 192.0.2.1 -> 198.51.100.2"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("(%+v).String() = %q; want %q", tc.p, got, tc.want)
		}
	}
}

func TestInnerHeaderString(t *testing.T) {
	for _, tc := range []struct {
		h    InnerHeader
		want string
	}{
		{InnerHeader{}, "invalid"},
		{InnerHeader{Valid: true, Proto: ipproto.UDP, Src: addr(v6a), Dst: addr(v6b), SrcPort: 1, DstPort: 2}, "udp [2001:db8::1]:1 -> [2001:db8:1::2]:2"},
		{InnerHeader{Valid: true, Proto: ipproto.ICMP, Src: addr(v4a), Dst: addr(v4b), ICMPType: 0, ICMPID: 5}, "icmp 192.0.2.1 -> 198.51.100.2 type=0 id=5"},
	} {
		if got := tc.h.String(); got != tc.want {
			t.Errorf("(%+v).String() = %q; want %q", tc.h, got, tc.want)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, tc := range decodeCases() {
		b.Run(tc.name, func(b *testing.B) {
			d := NewDecoder()
			var p Parsed
			b.ReportAllocs()
			for b.Loop() {
				if d.Decode(tc.b, &p) != tc.ok {
					b.Fatalf("Decode(%s) = %v; want %v", tc.name, !tc.ok, tc.ok)
				}
			}
		})
	}
}
