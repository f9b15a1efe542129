// Package packet decodes the IP packets NFQUEUE hands to sgd into the few header fields
// a security group judges them by.
package packet

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// TCP header flag bits, as they sit in byte 13 of the TCP header (RFC 9293 section 3.1,
// RFC 3168 section 6.1 for ECE and CWR).
const (
	FlagFIN uint8 = 0x01
	FlagSYN uint8 = 0x02
	FlagRST uint8 = 0x04
	FlagPSH uint8 = 0x08
	FlagACK uint8 = 0x10
	FlagURG uint8 = 0x20
	FlagECE uint8 = 0x40
	FlagCWR uint8 = 0x80
)

// Parsed holds the header fields sgd judges a packet by. The zero value means nothing
// was decoded (Family 0). A Parsed holds no reference to the packet bytes, so it may be
// kept after the buffer is reused; it is a plain value and may be copied.
//
// Family 4 packets have Is4 addresses; Family 6 packets have Is6 addresses, kept as they
// are on the wire even when they are IPv4-mapped (::ffff:0:0/96), so that an IPv6 packet
// is never judged by IPv4 rules. (Linux drops IPv6 packets with a mapped source before
// the PREROUTING hook, RFC 4291 section 2.5.5.2.)
type Parsed struct {
	Family   uint8      // 4 or 6
	Proto    uint8      // IP protocol number after IPv6 extension headers (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...)
	Src, Dst netip.Addr // IPv4 addresses are plain Is4 (never 4-in-6 mapped)
	// SrcPort and DstPort are set for TCP and UDP, except in an IP fragment that is not
	// the first, which carries no transport header.
	SrcPort, DstPort   uint16
	TCPFlags           uint8  // raw flag byte: FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80
	ICMPType, ICMPCode uint8  // icmp (Family 4) / icmpv6 (Family 6) only
	ICMPID             uint16 // echo request/reply identifier (icmp 8/0, icmpv6 128/129), else 0
	// Length is the IP total length as the header says (IPv6: 40 + payload length). It
	// is len(b) when the header says 0: Linux gives GSO packets larger than 64 KiB (BIG
	// TCP) a zero length field, as RFC 2675 jumbograms have. With a truncated copy of a
	// GSO packet the real size is only known to the queue (its payload length).
	Length int
	// LaterFragment is set for an IP fragment other than the first: it carries no
	// transport header, so it cannot be judged by ports or ICMP type.
	LaterFragment bool
	// Inner is the header embedded in an ICMP/ICMPv6 error (v4 types 3,4,5,11,12; v6
	// types 1,2,3,4), decoded from the quoted IP header plus first 8 bytes of its
	// payload. Inner.Valid reports whether it was decodable.
	Inner InnerHeader
}

// InnerHeader is the packet an ICMP error quotes (RFC 792, RFC 4443 section 2.4(c)): the
// offending packet's IP header and the first bytes of what followed it. The zero value
// (Valid false) means there was none, or it could not be decoded. Its addresses follow
// the same rule as Parsed's; its family is always the outer packet's.
type InnerHeader struct {
	Valid    bool
	Proto    uint8 // IP protocol number after IPv6 extension headers
	Src, Dst netip.Addr
	// SrcPort and DstPort are set when Proto is tcp or udp (and the quoted packet is not
	// an IP fragment other than the first).
	SrcPort, DstPort uint16
	// ICMPType is set when the quoted packet is an ICMP (v4) / ICMPv6 (v6) message;
	// ICMPID only when it is an echo request or reply (types 8/0, 128/129).
	ICMPType uint8
	ICMPID   uint16
}

// String describes p in one line for logs and tests, in the style
// "tcp 192.0.2.1:1234 -> 198.51.100.2:80 [S]". It allocates; keep it off the packet path.
func (p *Parsed) String() string {
	if p.Family == 0 {
		return "undecoded"
	}
	var b strings.Builder
	writeFlow(&b, p.Family, p.Proto, p.Src, p.Dst, p.SrcPort, p.DstPort)
	switch {
	case p.Proto == ipproto.TCP:
		b.WriteString(" [")
		writeTCPFlags(&b, p.TCPFlags)
		b.WriteByte(']')
	case isICMP(p.Family, p.Proto):
		fmt.Fprintf(&b, " type=%d code=%d", p.ICMPType, p.ICMPCode)
		if ipproto.IsEcho(p.Proto, p.ICMPType) {
			fmt.Fprintf(&b, " id=%d", p.ICMPID)
		}
		if p.Inner.Valid {
			b.WriteString(" inner(")
			writeInner(&b, p.Family, &p.Inner)
			b.WriteByte(')')
		}
	}
	return b.String()
}

// String describes h in one line, as Parsed.String does; "invalid" when !h.Valid.
// The family is taken from h's addresses.
func (h *InnerHeader) String() string {
	if !h.Valid {
		return "invalid"
	}
	var b strings.Builder
	family := uint8(6)
	if h.Src.Is4() {
		family = 4
	}
	writeInner(&b, family, h)
	return b.String()
}

func writeInner(b *strings.Builder, family uint8, h *InnerHeader) {
	writeFlow(b, family, h.Proto, h.Src, h.Dst, h.SrcPort, h.DstPort)
	if isICMP(family, h.Proto) {
		fmt.Fprintf(b, " type=%d", h.ICMPType)
		if ipproto.IsEcho(h.Proto, h.ICMPType) {
			fmt.Fprintf(b, " id=%d", h.ICMPID)
		}
	}
}

// writeFlow writes "proto src -> dst", with ports for tcp and udp.
func writeFlow(b *strings.Builder, family, proto uint8, src, dst netip.Addr, sport, dport uint16) {
	switch {
	case proto == ipproto.TCP:
		b.WriteString("tcp ")
	case proto == ipproto.UDP:
		b.WriteString("udp ")
	case proto == ipproto.ICMP && family == 4:
		b.WriteString("icmp ")
	case proto == ipproto.ICMPv6 && family == 6:
		b.WriteString("icmpv6 ")
	default:
		fmt.Fprintf(b, "proto-%d ", proto)
	}
	if proto == ipproto.TCP || proto == ipproto.UDP {
		b.WriteString(netip.AddrPortFrom(src, sport).String())
		b.WriteString(" -> ")
		b.WriteString(netip.AddrPortFrom(dst, dport).String())
		return
	}
	b.WriteString(src.String())
	b.WriteString(" -> ")
	b.WriteString(dst.String())
}

// writeTCPFlags writes the flags as tcpdump does: one letter per flag in bit order, "."
// for ACK, "none" when no flag is set.
func writeTCPFlags(b *strings.Builder, flags uint8) {
	if flags == 0 {
		b.WriteString("none")
		return
	}
	const letters = "FSRP.UEW" // FIN SYN RST PSH ACK URG ECE CWR
	for i := range 8 {
		if flags&(1<<i) != 0 {
			b.WriteByte(letters[i])
		}
	}
}

// isICMP reports whether proto is the ICMP of the family (1 in IPv4, 58 in IPv6).
func isICMP(family, proto uint8) bool {
	return family == 4 && proto == ipproto.ICMP || family == 6 && proto == ipproto.ICMPv6
}
