// Package offload is the kernel side of sgd's fast path (SPEC 4.7): the conntrack timeout
// policies that give offloaded flows their interface's connection_tracking timeouts, the
// conntrack entries sgd offloaded (dump, look-up, delete, destroy events with their
// packet and byte counters), and the conntrack sysctls the fast path needs.
//
// The vocabulary shared with the netfilter rules (internal/netfilter):
//   - Zone z (1..MaxZone) of a device is connection label bit z. A connection is
//     offloaded at the device with zone z when its label bit z is set: the kernel then
//     passes its packets at that device without queueing them to sgd.
//   - Mark is the one packet-mark bit sgd's verdict sets to mean "offload this packet's
//     connection at every sgd device it crosses"; the rules that set the labels also set
//     Mark in the connection's mark, because the kernel's destroy events carry the
//     connection mark but not its labels (Listen filters on it).
//   - A timeout policy is a pair of nfnetlink_cttimeout objects per protocol, one per
//     address family (the kernel's CT target refuses a policy of the other family), named
//     PolicyName(name, family) from the names Timeouts.Names gives.
//
// Everything here acts on the network namespace of the calling thread (for Open, the one
// it was called in, kept for the Kernel's life): sgd's own, or a test's namespace entered
// on a locked thread.
package offload

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
)

// Mark is the packet-mark bit of sgd's offload verdict, and the connection-mark bit that
// tells sgd's offloaded connections apart in destroy events. It is one bit of the 32, so
// that the marks of others (fwmark routing, SO_MARK, WireGuard) keep the other 31.
const Mark uint32 = 0x00800000

// MaxZone is the highest zone that can be offloaded: the kernel keeps 128 label bits per
// connection (bit 0 is left to others). A device whose zone is 0 or above MaxZone is never
// offloaded.
const MaxZone = 127

// Labels is a connection's label bits: bit z set means offloaded at the device with zone
// z. Word 0 holds bits 0..63, word 1 bits 64..127. The zero value has no bit set.
type Labels [2]uint64

// Has reports whether bit z is set (false for z above 127).
func (l Labels) Has(z uint16) bool {
	return z <= MaxZone && l[z/64]&(1<<(z%64)) != 0
}

// Any reports whether any of sgd's bits (1..MaxZone) is set.
func (l Labels) Any() bool { return l[0]&^1 != 0 || l[1] != 0 }

// Zones appends to zs the zones (1..MaxZone) whose bits l has, lowest first.
func (l Labels) Zones(zs []uint16) []uint16 {
	for w, v := range l {
		if w == 0 {
			v &^= 1 // bit 0 is not sgd's
		}
		for ; v != 0; v &= v - 1 {
			zs = append(zs, uint16(64*w+bits.TrailingZeros64(v)))
		}
	}
	return zs
}

// With returns l with bit z set (z in 1..MaxZone; other values return l unchanged).
func (l Labels) With(z uint16) Labels {
	if z >= 1 && z <= MaxZone {
		l[z/64] |= 1 << (z % 64)
	}
	return l
}

// labelsFrom decodes CTA_LABELS: the kernel's bitmap of unsigned longs, in host order.
// Reading it as two native 64-bit words is right on every 64-bit host and on 32-bit
// little-endian ones.
func labelsFrom(b []byte) Labels {
	var l Labels
	for i := 0; i < 2 && len(b) >= 8*(i+1); i++ {
		l[i] = binary.NativeEndian.Uint64(b[8*i:])
	}
	return l
}

// Conn is one kernel conntrack entry, as sgd needs it. The tuple is the original
// direction's (the first packet's). For ICMP and ICMPv6 echo, SrcPort and DstPort both
// hold the echo identifier, as sgd's own table keys echo flows.
type Conn struct {
	ID       uint32 // the kernel's id of the entry (stable for its life)
	Proto    uint8
	Src, Dst netip.Addr
	SrcPort  uint16
	DstPort  uint16
	// ReplySrc and ReplySrcPort are the reply direction's source: Dst and DstPort unless
	// the kernel rewrote the destination (DNAT, REDIRECT), when they are the new one, which
	// hooks after the NAT (INPUT, FORWARD) see. Zero when the message had no reply tuple.
	ReplySrc     netip.Addr
	ReplySrcPort uint16
	Labels       Labels // zero in destroy events (the kernel does not send them there)
	// Counters of the whole life of the entry, in the original and the reply direction;
	// zero unless nf_conntrack_acct was 1 when the entry was created (Sysctls).
	OrigPackets, OrigBytes, ReplyPackets, ReplyBytes uint64
	// Timeout is the entry's remaining life in seconds (Dump and Lookup; zero in destroy
	// events).
	Timeout uint32
	// Replied: the kernel has seen a packet in the reply direction. Assured: the kernel
	// will not evict the entry early when its table is full (for UDP, traffic both ways
	// over more than 2 s; for TCP, the handshake completed).
	Replied, Assured bool
	// TCPState is the kernel's TCP conntrack state (TCP_CONNTRACK_*: 3 ESTABLISHED, 4
	// FIN_WAIT, ... 7 TIME_WAIT, 8 CLOSE); 0 for other protocols and in destroy events
	// without protocol info.
	TCPState uint8
	// Mark is the entry's connection mark (Mark is set on entries sgd offloaded).
	Mark uint32
}

func (c Conn) String() string {
	return fmt.Sprintf("conn %d proto %d %s:%d -> %s:%d", c.ID, c.Proto, c.Src, c.SrcPort, c.Dst, c.DstPort)
}
