package packet

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// Packet builders for the tests. Each writes one header field by field, so a fixture
// reads as the headers it stacks: ipv4(ipproto.TCP, v4a, v4b, tcpSeg(1234, 80, syn, nil, nil)).
// Checksums are left 0: Decode does not check them (the kernel did).

// Addresses from the documentation ranges (RFC 5737, RFC 3849).
const (
	v4a = "192.0.2.1"
	v4b = "198.51.100.2"
	v4r = "203.0.113.9" // a router sending ICMP errors
	v6a = "2001:db8::1"
	v6b = "2001:db8:1::2"
	v6r = "2001:db8:ff::9"
)

// IP protocol numbers of extension headers and other protocols in the fixtures.
const (
	protoHopByHop = 0
	protoIPIP     = 4
	protoIPv6     = 41
	protoRouting  = 43
	protoFragment = 44
	protoGRE      = 47
	protoESP      = 50
	protoNoNext   = 59
	protoDestOpts = 60
	protoSCTP     = 132
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// ipv4 returns an IPv4 header (RFC 791 section 3.1) with total length covering payload.
func ipv4(proto uint8, src, dst string, payload []byte) []byte {
	h := []byte{
		0x45,       // version 4, IHL 5 (20 bytes)
		0x00,       // DSCP, ECN
		0x00, 0x00, // total length: set below
		0x1c, 0x46, // identification
		0x40, 0x00, // flags DF, fragment offset 0
		64,         // TTL
		proto,      // protocol
		0x00, 0x00, // header checksum
	}
	h = append(h, addr(src).AsSlice()...) // source address
	h = append(h, addr(dst).AsSlice()...) // destination address
	binary.BigEndian.PutUint16(h[2:4], uint16(len(h)+len(payload)))
	return append(h, payload...)
}

// ipv4Opts is ipv4 with IP options (padded with end-of-list to a multiple of 4 bytes).
func ipv4Opts(proto uint8, src, dst string, opts, payload []byte) []byte {
	opts = pad4(opts)
	b := ipv4(proto, src, dst, append(slices.Clone(opts), payload...))
	b[0] = 0x40 | byte((20+len(opts))/4) // version 4, IHL
	return b
}

// ipv4Frag is ipv4 with fragment offset off (in 8-byte units) and MF set when more.
func ipv4Frag(proto uint8, src, dst string, off uint16, more bool, payload []byte) []byte {
	b := ipv4(proto, src, dst, payload)
	flags := uint16(0)
	if more {
		flags = 0x2000 // MF
	}
	binary.BigEndian.PutUint16(b[6:8], flags|off) // flags, fragment offset
	return b
}

// ipv6 returns an IPv6 header (RFC 8200 section 3) with payload length covering payload.
func ipv6(next uint8, src, dst string, payload []byte) []byte {
	h := []byte{
		0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
		0x00, 0x00, // payload length: set below
		next, // next header
		64,   // hop limit
	}
	h = append(h, addr(src).AsSlice()...) // source address
	h = append(h, addr(dst).AsSlice()...) // destination address
	binary.BigEndian.PutUint16(h[4:6], uint16(len(payload)))
	return append(h, payload...)
}

// extHdr returns a hop-by-hop or destination options header (RFC 8200 sections 4.3,
// 4.6) holding one PadN option that fills it to n*8 bytes (n >= 1).
func extHdr(next uint8, n int, payload []byte) []byte {
	h := make([]byte, n*8)
	h[0] = next          // next header
	h[1] = byte(n - 1)   // header extension length, 8-byte units not counting the first
	h[2] = 1             // option type PadN
	h[3] = byte(n*8 - 4) // option data length
	return append(h, payload...)
}

// routingHdr returns a routing header (RFC 8200 section 4.4) of type 4 (segment routing)
// with segments left 0 and one address.
func routingHdr(next uint8, payload []byte) []byte {
	h := []byte{
		next,       // next header
		2,          // header extension length: 16 bytes after the first 8
		4,          // routing type 4
		0,          // segments left
		0, 0, 0, 0, // type-specific data
	}
	h = append(h, addr(v6b).AsSlice()...) // segment list[0]
	return append(h, payload...)
}

// fragHdr returns a fragment header (RFC 8200 section 4.5).
func fragHdr(next uint8, off uint16, more bool, payload []byte) []byte {
	m := uint16(0)
	if more {
		m = 1
	}
	h := []byte{
		next, // next header
		0,    // reserved
		0, 0, // fragment offset (13 bits, 8-byte units), res, M flag: set below
		0, 0, 0, 7, // identification
	}
	binary.BigEndian.PutUint16(h[2:4], off<<3|m)
	return append(h, payload...)
}

// tcpSeg returns a TCP header (RFC 9293 section 3.1) with options (padded with
// end-of-list to a multiple of 4 bytes) and payload.
func tcpSeg(sport, dport uint16, flags uint8, opts, payload []byte) []byte {
	opts = pad4(opts)
	h := []byte{
		0, 0, // source port: set below
		0, 0, // destination port: set below
		0x6b, 0x8b, 0x45, 0x67, // sequence number
		0x00, 0x00, 0x00, 0x00, // acknowledgment number
		byte((20 + len(opts)) / 4 << 4), // data offset, reserved
		flags,                           // flags
		0xfa, 0xf0,                      // window
		0x00, 0x00, // checksum
		0x00, 0x00, // urgent pointer
	}
	binary.BigEndian.PutUint16(h[0:2], sport)
	binary.BigEndian.PutUint16(h[2:4], dport)
	h = append(h, opts...)
	return append(h, payload...)
}

// udpDgram returns a UDP header (RFC 768) with payload.
func udpDgram(sport, dport uint16, payload []byte) []byte {
	h := []byte{
		0, 0, // source port
		0, 0, // destination port
		0, 0, // length
		0, 0, // checksum
	}
	binary.BigEndian.PutUint16(h[0:2], sport)
	binary.BigEndian.PutUint16(h[2:4], dport)
	binary.BigEndian.PutUint16(h[4:6], uint16(8+len(payload)))
	return append(h, payload...)
}

// icmpMsg returns an ICMP (RFC 792) or ICMPv6 (RFC 4443) message whose 4 bytes after
// the checksum are rest: identifier and sequence number for an echo, unused or MTU for
// an error.
func icmpMsg(typ, code uint8, rest uint32, body []byte) []byte {
	h := []byte{
		typ,        // type
		code,       // code
		0x00, 0x00, // checksum
		0, 0, 0, 0, // rest of header: set below
	}
	binary.BigEndian.PutUint32(h[4:8], rest)
	return append(h, body...)
}

// echo returns the rest-of-header of an echo message: identifier, sequence number.
func echo(id, seq uint16) uint32 { return uint32(id)<<16 | uint32(seq) }

// pad4 pads b with zero bytes (end of option list) to a multiple of 4 bytes.
func pad4(b []byte) []byte {
	b = slices.Clone(b)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// cut returns the first n bytes of b, as a truncated copy from the queue or an ICMP
// error's quote would have them.
func cut(b []byte, n int) []byte { return slices.Clone(b[:n]) }

// set returns b with b[i] = v, for breaking one field of a fixture.
func set(b []byte, i int, v ...byte) []byte {
	b = slices.Clone(b)
	copy(b[i:], v)
	return b
}

// zeros returns n zero bytes of payload.
func zeros(n int) []byte { return make([]byte, n) }
