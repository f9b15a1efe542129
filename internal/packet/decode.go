package packet

import (
	"encoding/binary"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// ipLayers are the IP-level layers of one walk: the IP header and the IPv6 extension
// headers after it.
type ipLayers struct {
	ip4    ip4Layer
	ip6    ip6Layer
	ext    ip6ExtLayer
	frag   ip6FragLayer
	budget int // extension headers left; reset before each walk
}

func (l *ipLayers) init() {
	l.ip4.Options = make([]layers.IPv4Option, 0, maxIPv4Options)
	l.ext.budget = &l.budget
	l.ext.class = gopacket.NewLayerClass([]gopacket.LayerType{
		layers.LayerTypeIPv6HopByHop,
		layers.LayerTypeIPv6Routing,
		layers.LayerTypeIPv6Destination,
	})
	l.frag.budget = &l.budget
}

// last describes where the IP-level walk ended, given the last IP-level layer t: the
// protocol after it, whether it is a fragment other than the first (no transport header
// follows), and the bytes after it.
func (l *ipLayers) last(t gopacket.LayerType) (proto uint8, laterFragment bool, payload []byte) {
	switch t {
	case layers.LayerTypeIPv4:
		return uint8(l.ip4.Protocol), l.ip4.FragOffset != 0, l.ip4.Payload
	case layers.LayerTypeIPv6:
		return uint8(l.ip6.next), false, l.ip6.Payload
	case layers.LayerTypeIPv6Fragment:
		return uint8(l.frag.NextHeader), l.frag.FragmentOffset != 0, l.frag.Payload
	default: // hop-by-hop, routing, destination options
		return uint8(l.ext.NextHeader), false, l.ext.Payload
	}
}

// addrs returns the source and destination of the walk's IP header.
func (l *ipLayers) addrs(family uint8) (src, dst netip.Addr) {
	if family == 4 {
		// layers.IPv4 slices them out of the 20-byte header it checked: 4 bytes each.
		return netip.AddrFrom4([4]byte(l.ip4.SrcIP)), netip.AddrFrom4([4]byte(l.ip4.DstIP))
	}
	return l.ip6.src, l.ip6.dst
}

// A Decoder decodes packets into Parsed without allocating: one
// gopacket.DecodingLayerParser per IP version walks preallocated layers, and two more
// walk the packet an ICMP error quotes.
//
// A Decoder is NOT safe for concurrent use; each queue reader owns one. The zero value is
// not usable (make one with NewDecoder), and a Decoder must not be copied: its parsers
// point at its own layers.
type Decoder struct {
	outer ipLayers
	tcp   tcpLayer
	udp   udpLayer
	icmp4 icmp4Layer
	icmp6 icmp6Layer
	echo6 layers.ICMPv6Echo // gets at least 4 bytes: icmp6Layer requires 8

	inner ipLayers // the packet quoted in an ICMP error, up to its transport header

	outerLayers, innerLayers gopacket.DecodingLayerSparse
	outer4, outer6           *gopacket.DecodingLayerParser
	inner4, inner6           *gopacket.DecodingLayerParser
	decoded, innerDecoded    []gopacket.LayerType
}

// NewDecoder returns a Decoder with all its layers and parsers allocated.
func NewDecoder() *Decoder {
	d := &Decoder{
		decoded:      make([]gopacket.LayerType, 0, maxLayers),
		innerDecoded: make([]gopacket.LayerType, 0, maxLayers),
	}
	d.outer.init()
	d.inner.init()
	d.outerLayers = container(&d.outer.ip4, &d.outer.ip6, &d.outer.ext, &d.outer.frag,
		&d.tcp, &d.udp, &d.icmp4, &d.icmp6, &d.echo6)
	// No transport layers: the walk stops at the quoted transport header, of which an
	// ICMP error carries only 8 bytes (RFC 792), fewer than a TCP header; decodeInner
	// reads the ports by hand.
	d.innerLayers = container(&d.inner.ip4, &d.inner.ip6, &d.inner.ext, &d.inner.frag)
	d.outer4 = parser(layers.LayerTypeIPv4, d.outerLayers)
	d.outer6 = parser(layers.LayerTypeIPv6, d.outerLayers)
	d.inner4 = parser(layers.LayerTypeIPv4, d.innerLayers)
	d.inner6 = parser(layers.LayerTypeIPv6, d.innerLayers)
	return d
}

// container indexes the layers by layer type in a slice, the fastest container gopacket
// has (lookups are one bounds-checked index).
func container(ls ...gopacket.DecodingLayer) gopacket.DecodingLayerSparse {
	var c gopacket.DecodingLayerContainer = gopacket.DecodingLayerSparse(nil)
	for _, l := range ls {
		c = c.Put(l)
	}
	return c.(gopacket.DecodingLayerSparse)
}

// parser returns a parser that starts at first and stops quietly at a layer it has no
// decoder for. Panics in a layer are still recovered into an error (IgnorePanic false):
// none is known, but a packet must never take the daemon down.
func parser(first gopacket.LayerType, c gopacket.DecodingLayerSparse) *gopacket.DecodingLayerParser {
	p := gopacket.NewDecodingLayerParser(first)
	p.SetDecodingLayerContainer(c)
	p.IgnoreUnsupported = true
	return p
}

// Decode fills p from the packet bytes b, which start at the IP header (NFQUEUE has no
// link-layer header) and may be a truncated copy: an IP length larger than len(b) is
// normal. It returns false when b is malformed: truncated IP/TCP/UDP/ICMP header, bad
// IHL, header lengths that do not fit, more than 8 IPv6 extension headers, unknown IP
// version; such packets are dropped and counted by the caller (SPEC 1.4), and p is then
// zero. An IP fragment other than the first decodes with Proto set and no ports.
// Protocols other than TCP, UDP and the family's ICMP decode to the IP level.
//
// Decode never panics and never allocates. p is fully overwritten (no stale fields from
// a previous packet).
func (d *Decoder) Decode(b []byte, p *Parsed) bool {
	*p = Parsed{}
	if !d.decode(b, p) {
		*p = Parsed{}
		return false
	}
	return true
}

func (d *Decoder) decode(b []byte, p *Parsed) bool {
	if len(b) == 0 {
		return false
	}
	var dlp *gopacket.DecodingLayerParser
	switch b[0] >> 4 {
	case 4:
		dlp, p.Family = d.outer4, 4
		if len(b) >= 4 {
			p.Length = int(binary.BigEndian.Uint16(b[2:4]))
		}
	case 6:
		dlp, p.Family = d.outer6, 6
		if len(b) >= 6 {
			if n := int(binary.BigEndian.Uint16(b[4:6])); n != 0 {
				p.Length = ipv6Header + n
			}
		}
	default:
		return false
	}
	if p.Length == 0 {
		p.Length = len(b)
	}
	d.outer.budget = maxExtHeaders
	if dlp.DecodeLayers(b, &d.decoded) != nil || stoppedShort(d.outerLayers, d.decoded) {
		return false
	}
	p.Src, p.Dst = d.outer.addrs(p.Family)
	var lastIP gopacket.LayerType
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeTCP:
			// A data offset past the end of the bytes is a truncated copy if the IP
			// header says the packet goes on, and a malformed header if not.
			if d.tcp.hdrLen > len(d.tcp.Contents) && !dlp.Truncated {
				return false
			}
			p.SrcPort, p.DstPort, p.TCPFlags = d.tcp.srcPort, d.tcp.dstPort, d.tcp.flags
		case layers.LayerTypeUDP:
			if !udpLengthFits(b, d.udp.Contents, p.Length, p.Family) {
				return false
			}
			p.SrcPort, p.DstPort = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
		case layers.LayerTypeICMPv4:
			p.ICMPType, p.ICMPCode = d.icmp4.TypeCode.Type(), d.icmp4.TypeCode.Code()
			if ipproto.IsEcho(ipproto.ICMP, p.ICMPType) {
				p.ICMPID = d.icmp4.Id
			} else if ipproto.QuotesPacket(ipproto.ICMP, p.ICMPType) {
				d.decodeInner(d.icmp4.Payload, 4, &p.Inner)
			}
		case layers.LayerTypeICMPv6:
			p.ICMPType, p.ICMPCode = d.icmp6.TypeCode.Type(), d.icmp6.TypeCode.Code()
			if ipproto.QuotesPacket(ipproto.ICMPv6, p.ICMPType) {
				// The error's 4 bytes of unused/MTU/pointer come before the quoted
				// packet (RFC 4443 section 3); icmp6Layer made sure they are there.
				d.decodeInner(d.icmp6.Payload[4:], 6, &p.Inner)
			}
		case layers.LayerTypeICMPv6Echo:
			p.ICMPID = d.echo6.Identifier
		default:
			lastIP = t
		}
	}
	p.Proto, p.LaterFragment, _ = d.outer.last(lastIP)
	return true
}

// udpLengthFits reports whether the length field of the UDP header hdr, which starts
// inside b, fits the IP packet of ipLength bytes (its declared length, which the copy in
// b may cut short). A UDP length past the end of the IP payload is malformed (RFC 768: it
// counts the header and the data); Linux drops such a datagram, so sgd must not judge it
// as allowed. Length 0 is valid for IPv6 only (RFC 2675 jumbograms; Linux then takes the
// IP payload's length); IPv4 has no such case. Lengths below 8 were refused by udpLayer.
func udpLengthFits(b, hdr []byte, ipLength int, family uint8) bool {
	n := int(binary.BigEndian.Uint16(hdr[4:6]))
	if n == 0 {
		return family == 6
	}
	// hdr is a slice of b's array: their capacities differ by the header's offset.
	off := cap(b) - cap(hdr)
	return off >= 0 && n <= ipLength-off
}

// stoppedShort reports whether a walk that ended without error stopped because the bytes
// ran out where the last layer decoded still names a header the container decodes: that
// header is missing (e.g. protocol TCP with no TCP header, or a hop-by-hop header naming
// a routing header that is not there). A walk that stopped at a header it does not
// decode is complete.
func stoppedShort(c gopacket.DecodingLayerSparse, decoded []gopacket.LayerType) bool {
	if len(decoded) == 0 {
		return true
	}
	l, ok := c.Decoder(decoded[len(decoded)-1])
	if !ok {
		return true
	}
	_, ok = c.Decoder(l.NextLayerType())
	return ok
}

// decodeInner decodes the packet an ICMP error of the given family quotes in b: its IP
// header (truncated, since only the start of the packet is quoted) and the first bytes of
// its transport header. h is left zero (Valid false) when the quote is not decodable.
func (d *Decoder) decodeInner(b []byte, family uint8, h *InnerHeader) {
	if len(b) == 0 || b[0]>>4 != family {
		return
	}
	dlp := d.inner4
	if family == 6 {
		dlp = d.inner6
	}
	d.inner.budget = maxExtHeaders
	if dlp.DecodeLayers(b, &d.innerDecoded) != nil || stoppedShort(d.innerLayers, d.innerDecoded) {
		return
	}
	in := InnerHeader{Valid: true}
	in.Src, in.Dst = d.inner.addrs(family)
	proto, laterFragment, rest := d.inner.last(d.innerDecoded[len(d.innerDecoded)-1])
	in.Proto = proto
	switch {
	case laterFragment:
		// No transport header in this fragment.
	case proto == ipproto.TCP || proto == ipproto.UDP:
		// Both start with the source and destination ports.
		if len(rest) < 4 {
			return
		}
		in.SrcPort = binary.BigEndian.Uint16(rest[0:2])
		in.DstPort = binary.BigEndian.Uint16(rest[2:4])
	case isICMP(family, proto):
		// Type, code, checksum, then identifier and sequence for an echo (RFC 792,
		// RFC 4443 section 4.1).
		if len(rest) < icmpHeader {
			return
		}
		in.ICMPType = rest[0]
		if ipproto.IsEcho(proto, in.ICMPType) {
			in.ICMPID = binary.BigEndian.Uint16(rest[4:6])
		}
	}
	*h = in
}
