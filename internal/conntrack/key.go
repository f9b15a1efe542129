package conntrack

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
)

// Tuple is a packet's flow identity in the packet's own direction.
//
// Zone is the attachment point (a host interface; later a port) the packet was judged
// at: flows are tracked per network interface, as AWS tracks them per ENI (SPEC 4.2), so a
// packet with the tuple of a flow tracked in one zone never matches it in another.
//
// For TCP and UDP, SrcPort and DstPort are the ports. For ICMP echo (IPv4 types 8/0,
// ICMPv6 128/129) the caller puts the echo identifier in BOTH ports, so a request and its
// reply share a flow and a different identifier is a different flow. For every other
// protocol both ports are 0 and the flow is the address pair.
type Tuple struct {
	Proto    uint8
	Src, Dst netip.Addr
	SrcPort  uint16
	DstPort  uint16
	Zone     uint16
}

func (tp Tuple) String() string {
	return fmt.Sprintf("%d %v:%d->%v:%d zone %d", tp.Proto, tp.Src, tp.SrcPort, tp.Dst, tp.DstPort, tp.Zone)
}

// key is a flow's map key: both endpoints in a canonical order (a ≤ b, comparing address
// bytes then port), so that a packet of either direction finds its flow with one map
// lookup. It holds no pointer (netip.Addr does), so maps of keys are never scanned by the
// garbage collector, and it has no padding, so the runtime hashes it as plain memory.
type key struct {
	a, b   [16]byte // addresses as netip.Addr.As16 (IPv4 as ::ffff:a.b.c.d)
	ap, bp uint16   // ports (or echo identifier) of a and b
	proto  uint8
	fam    uint8  // 4 or 6: keeps IPv4 apart from IPv4-mapped IPv6
	zone   uint16 // Tuple.Zone: the same tuple in two zones is two flows
}

// makeKey returns tp's canonical key and whether tp's source is endpoint a.
func makeKey(tp *Tuple) (k key, srcIsA bool) {
	src, dst := tp.Src.As16(), tp.Dst.As16()
	k.proto = tp.Proto
	k.zone = tp.Zone
	k.fam = 6
	if tp.Src.Is4() {
		k.fam = 4
	}
	if endpointLE(&src, tp.SrcPort, &dst, tp.DstPort) {
		k.a, k.ap, k.b, k.bp = src, tp.SrcPort, dst, tp.DstPort
		return k, true
	}
	k.a, k.ap, k.b, k.bp = dst, tp.DstPort, src, tp.SrcPort
	return k, false
}

// endpointLE reports whether endpoint (x, xp) sorts before or equal to (y, yp).
func endpointLE(x *[16]byte, xp uint16, y *[16]byte, yp uint16) bool {
	x0, y0 := binary.BigEndian.Uint64(x[:8]), binary.BigEndian.Uint64(y[:8])
	if x0 != y0 {
		return x0 < y0
	}
	x1, y1 := binary.BigEndian.Uint64(x[8:]), binary.BigEndian.Uint64(y[8:])
	if x1 != y1 {
		return x1 < y1
	}
	return xp <= yp
}

// tuple rebuilds the tuple in the originator's direction.
func (k *key) tuple(origIsA bool) Tuple {
	a, b := netip.AddrFrom16(k.a), netip.AddrFrom16(k.b)
	if k.fam == 4 {
		a, b = a.Unmap(), b.Unmap()
	}
	if origIsA {
		return Tuple{Proto: k.proto, Src: a, Dst: b, SrcPort: k.ap, DstPort: k.bp, Zone: k.zone}
	}
	return Tuple{Proto: k.proto, Src: b, Dst: a, SrcPort: k.bp, DstPort: k.ap, Zone: k.zone}
}

const (
	mix1 = 0x9e3779b97f4a7c15
	mix2 = 0xbf58476d1ce4e5b9
)

// hash picks a shard for k. It needs to spread flows evenly, not resist collisions: each
// shard's map is seeded by the runtime, so an adversary who piles flows on one shard only
// costs lock contention on it.
func (k *key) hash(seed uint64) uint64 {
	h := seed
	h = bits.RotateLeft64((h^binary.LittleEndian.Uint64(k.a[:8]))*mix1, 31)
	h = bits.RotateLeft64((h^binary.LittleEndian.Uint64(k.a[8:]))*mix1, 31)
	h = bits.RotateLeft64((h^binary.LittleEndian.Uint64(k.b[:8]))*mix1, 31)
	h = bits.RotateLeft64((h^binary.LittleEndian.Uint64(k.b[8:]))*mix1, 31)
	h = (h ^ (uint64(k.ap) | uint64(k.bp)<<16 | uint64(k.proto)<<32 | uint64(k.fam)<<40 | uint64(k.zone)<<48)) * mix1
	h ^= h >> 31
	h *= mix2
	h ^= h >> 29
	return h
}
