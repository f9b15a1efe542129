package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// The DecodingLayers below are what the gopacket.DecodingLayerParser in decode.go walks.
// Where gopacket's own layer decodes a header without allocating, it is used, wrapped to
// check the lengths first: gopacket builds every decode error with fmt.Errorf or
// errors.New, which allocates, so a wrapper turns each input that would take such a path
// into errMalformed before the gopacket layer sees it. Where gopacket's layer allocates
// on valid input, or rejects input that Linux passes, the header is decoded here by hand
// (measured with gopacket v1.7.7, 2026-11: layers.TCP allocates on an MPTCP option,
// layers.IPv6 twice on a hop-by-hop header with two options, layers.IPv6Destination four
// times on the same header).
//
// NextLayerType of every IP-level layer names only the headers sgd reads (see next4,
// next6); anything else ends the walk, so the outer header of IP-in-IP (protocols 4 and
// 41) is the one judged, and gopacket's application-layer guesses by port never run.

// errMalformed is returned by every layer here for a header that does not fit. It is one
// preallocated value so that a malformed packet costs no allocation either.
var errMalformed = errors.New("packet: malformed header")

const (
	ipv4MinHeader = 20 // RFC 791 section 3.1, IHL 5
	ipv6Header    = 40 // RFC 8200 section 3
	tcpMinHeader  = 20 // RFC 9293 section 3.1, data offset 5
	udpHeader     = 8  // RFC 768
	icmpHeader    = 8  // RFC 792; for ICMPv6 the size of Linux's struct icmp6hdr, which nf_conntrack requires too
	fragHeader    = 8  // RFC 8200 section 4.5
	// maxIPv4Options bounds the options in an IPv4 header: 40 bytes of options, at
	// least one byte each.
	maxIPv4Options = 60 - ipv4MinHeader
	// maxExtHeaders bounds the IPv6 extension headers walked in one packet; more is
	// malformed. RFC 8200 section 4.1 allows each header once (destination options
	// twice), so a legitimate chain of the four kinds walked here has at most five; the
	// bound keeps the parser's list of decoded layers from growing.
	maxExtHeaders = 8
	// maxLayers is how many layers one walk can decode: IP, extension headers,
	// transport, ICMPv6 echo.
	maxLayers = 1 + maxExtHeaders + 2
)

// next4 names the layer that decodes IPv4 protocol p, or LayerTypeZero to stop.
func next4(p layers.IPProtocol) gopacket.LayerType {
	switch p {
	case layers.IPProtocolTCP:
		return layers.LayerTypeTCP
	case layers.IPProtocolUDP:
		return layers.LayerTypeUDP
	case layers.IPProtocolICMPv4:
		return layers.LayerTypeICMPv4
	}
	return gopacket.LayerTypeZero
}

// next6 names the layer that decodes IPv6 next header p, or LayerTypeZero to stop. The
// extension headers skipped are those ip6tables skips before matching a protocol
// (hop-by-hop, routing, fragment, destination options); AH (51) and ESP (50) are
// protocols in their own right here, as in a security group rule.
func next6(p layers.IPProtocol) gopacket.LayerType {
	switch p {
	case layers.IPProtocolTCP:
		return layers.LayerTypeTCP
	case layers.IPProtocolUDP:
		return layers.LayerTypeUDP
	case layers.IPProtocolICMPv6:
		return layers.LayerTypeICMPv6
	case layers.IPProtocolIPv6HopByHop:
		return layers.LayerTypeIPv6HopByHop
	case layers.IPProtocolIPv6Routing:
		return layers.LayerTypeIPv6Routing
	case layers.IPProtocolIPv6Fragment:
		return layers.LayerTypeIPv6Fragment
	case layers.IPProtocolIPv6Destination:
		return layers.LayerTypeIPv6Destination
	}
	return gopacket.LayerTypeZero
}

// ip4Layer is layers.IPv4 behind length checks. Its Options must be preallocated with
// capacity maxIPv4Options (NewDecoder does), or the first packet with options allocates.
type ip4Layer struct {
	layers.IPv4
}

// DecodeFromBytes decodes an IPv4 header (RFC 791 section 3.1). A total length of 0 with
// a complete header is a GSO packet larger than 64 KiB, not an error; a total length
// larger than data is a truncated copy, not an error either. The header checksum is not
// verified: the kernel did before the packet reached the queue.
func (l *ip4Layer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < ipv4MinHeader || data[0]>>4 != 4 {
		return errMalformed
	}
	hl := int(data[0]&0x0f) * 4
	tl := int(binary.BigEndian.Uint16(data[2:4]))
	if hl < ipv4MinHeader || hl > len(data) || tl != 0 && tl < hl || !ip4OptionsValid(data[ipv4MinHeader:hl]) {
		return errMalformed
	}
	return l.IPv4.DecodeFromBytes(data, df)
}

// NextLayerType goes on into the transport header unless this is a fragment other than
// the first. (layers.IPv4 stops at every fragment, the first included, although the
// first one carries the transport header.)
func (l *ip4Layer) NextLayerType() gopacket.LayerType {
	if l.FragOffset != 0 {
		return gopacket.LayerTypeZero
	}
	return next4(l.Protocol)
}

// ip4OptionsValid reports whether the IPv4 options in opts are well formed, by the rules
// layers.IPv4 applies (RFC 791 section 3.1): end of list (0) and no-operation (1) are one
// byte; every other option has a length byte of at least 2 that fits in what is left.
func ip4OptionsValid(opts []byte) bool {
	for len(opts) > 0 {
		switch opts[0] {
		case 0:
			return true
		case 1:
			opts = opts[1:]
		default:
			if len(opts) < 2 || opts[1] < 2 || int(opts[1]) > len(opts) {
				return false
			}
			opts = opts[opts[1]:]
		}
	}
	return true
}

// ip6Layer decodes the fixed IPv6 header (RFC 8200 section 3) by hand. layers.IPv6 is
// not used because it decodes a hop-by-hop header inline with one allocation per option,
// and rejects a payload length of 0 unless a jumbo option is present, while Linux sends
// GSO packets larger than 64 KiB (BIG TCP) with payload length 0 and, in recent kernels,
// no hop-by-hop header. A hop-by-hop header is left to ip6ExtLayer.
type ip6Layer struct {
	layers.BaseLayer
	next     layers.IPProtocol
	plen     uint16 // payload length field
	src, dst netip.Addr
}

func (l *ip6Layer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < ipv6Header || data[0]>>4 != 6 {
		return errMalformed
	}
	l.plen = binary.BigEndian.Uint16(data[4:6])
	l.next = layers.IPProtocol(data[6])
	l.src = netip.AddrFrom16([16]byte(data[8:24]))
	l.dst = netip.AddrFrom16([16]byte(data[24:40]))
	payload := data[ipv6Header:]
	// The payload length covers the extension headers (RFC 8200 section 3). 0 is a
	// jumbogram (RFC 2675) or a GSO packet: the payload is whatever is there.
	if n := int(l.plen); n != 0 {
		if n < len(payload) {
			payload = payload[:n]
		} else if n > len(payload) {
			df.SetTruncated()
		}
	}
	l.Contents, l.Payload = data[:ipv6Header], payload
	return nil
}

func (l *ip6Layer) CanDecode() gopacket.LayerClass    { return layers.LayerTypeIPv6 }
func (l *ip6Layer) NextLayerType() gopacket.LayerType { return next6(l.next) }

// ip6ExtLayer is layers.IPv6ExtensionSkipper behind length checks, for the hop-by-hop,
// routing and destination options headers (RFC 8200 sections 4.3, 4.4, 4.6), which share
// the layout next header, length in 8-octet units not counting the first. The skipper is
// used rather than layers.IPv6HopByHop and layers.IPv6Destination because those allocate
// per option, and layers.IPv6Routing has no DecodeFromBytes. One instance decodes every
// such header of a packet in turn.
type ip6ExtLayer struct {
	layers.IPv6ExtensionSkipper
	budget *int // extension headers this packet may still have; shared with ip6FragLayer
	// class is what the layer decodes: the skipper's own class minus the fragment
	// header, which ip6FragLayer decodes. Set by ipLayers.init.
	class gopacket.LayerClass
}

func (l *ip6ExtLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < 2 || len(data) < int(data[1])*8+8 || !spend(l.budget) {
		return errMalformed
	}
	return l.IPv6ExtensionSkipper.DecodeFromBytes(data, df)
}

func (l *ip6ExtLayer) CanDecode() gopacket.LayerClass    { return l.class }
func (l *ip6ExtLayer) NextLayerType() gopacket.LayerType { return next6(l.NextHeader) }

// ip6FragLayer is layers.IPv6Fragment behind a length check (RFC 8200 section 4.5).
type ip6FragLayer struct {
	layers.IPv6Fragment
	budget *int // shared with ip6ExtLayer
}

func (l *ip6FragLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < fragHeader || !spend(l.budget) {
		return errMalformed
	}
	return l.IPv6Fragment.DecodeFromBytes(data, df)
}

// NextLayerType goes on into the next header unless this is a fragment other than the
// first. (layers.IPv6Fragment stops at every fragment but an atomic one, although the
// first fragment carries the headers that follow.)
func (l *ip6FragLayer) NextLayerType() gopacket.LayerType {
	if l.FragmentOffset != 0 {
		return gopacket.LayerTypeZero
	}
	return next6(l.NextHeader)
}

// spend takes one extension header from *budget and reports whether there was one left.
func spend(budget *int) bool {
	if *budget <= 0 {
		return false
	}
	*budget--
	return true
}

// tcpLayer decodes the fixed part of a TCP header (RFC 9293 section 3.1) by hand.
// layers.TCP is not used because it decodes every option and allocates for some (an
// MPTCP option, more than four options), while sgd needs the ports and flags only.
type tcpLayer struct {
	layers.BaseLayer
	srcPort, dstPort uint16
	flags            uint8
	// hdrLen is the header length the data offset gives. It exceeds len(Contents) when
	// the header does not fit in data; Decode tells a truncated copy (fine) from a
	// header longer than its packet (malformed).
	hdrLen int
}

func (l *tcpLayer) DecodeFromBytes(data []byte, _ gopacket.DecodeFeedback) error {
	if len(data) < tcpMinHeader {
		return errMalformed
	}
	l.hdrLen = int(data[12]>>4) * 4
	if l.hdrLen < tcpMinHeader {
		return errMalformed
	}
	l.srcPort = binary.BigEndian.Uint16(data[0:2])
	l.dstPort = binary.BigEndian.Uint16(data[2:4])
	l.flags = data[13]
	if l.hdrLen > len(data) {
		l.Contents, l.Payload = data, nil
	} else {
		l.Contents, l.Payload = data[:l.hdrLen], data[l.hdrLen:]
	}
	return nil
}

func (l *tcpLayer) CanDecode() gopacket.LayerClass    { return layers.LayerTypeTCP }
func (l *tcpLayer) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

// udpLayer is layers.UDP behind length checks (RFC 768). A length field of 0 is allowed,
// as layers.UDP allows it (a jumbogram, RFC 2675 section 4).
type udpLayer struct {
	layers.UDP
}

func (l *udpLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < udpHeader {
		return errMalformed
	}
	if n := binary.BigEndian.Uint16(data[4:6]); n != 0 && n < udpHeader {
		return errMalformed
	}
	return l.UDP.DecodeFromBytes(data, df)
}

func (l *udpLayer) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

// icmp4Layer is layers.ICMPv4 behind a length check (RFC 792: 8 bytes).
type icmp4Layer struct {
	layers.ICMPv4
}

func (l *icmp4Layer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < icmpHeader {
		return errMalformed
	}
	return l.ICMPv4.DecodeFromBytes(data, df)
}

func (l *icmp4Layer) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

// icmp6Layer is layers.ICMPv6 behind a length check. RFC 4443 section 2.1 fixes only 4
// bytes, but every message type has at least 4 more, and Linux conntrack drops an ICMPv6
// message shorter than 8 bytes; requiring 8 also guarantees the echo layer after it its
// 4 bytes.
type icmp6Layer struct {
	layers.ICMPv6
}

func (l *icmp6Layer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < icmpHeader {
		return errMalformed
	}
	return l.ICMPv6.DecodeFromBytes(data, df)
}

// NextLayerType is the echo layer for an echo request or reply, else the end.
func (l *icmp6Layer) NextLayerType() gopacket.LayerType {
	if t := l.TypeCode.Type(); t == layers.ICMPv6TypeEchoRequest || t == layers.ICMPv6TypeEchoReply {
		return layers.LayerTypeICMPv6Echo
	}
	return gopacket.LayerTypeZero
}
