package rules

import (
	"net/netip"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// RuleID names one rule of a Policy (an index into Policy.Rules). 0 means no rule.
// When several rules allow a packet, the lowest RuleID is reported: the first rule in
// configuration order.
type RuleID uint32

// portMap maps a 16-bit key (a port, or ICMP type<<8|code) to the first rule allowing it,
// in two array loads: hi names, for each run of 256 keys, a block of the policy's blocks
// (block 0 allows nothing). Blocks are shared between maps and immutable after Compile.
type portMap struct {
	hi [256]uint32
}

func (m *portMap) get(blocks [][256]RuleID, k uint16) RuleID {
	if m == nil {
		return 0
	}
	return blocks[m.hi[k>>8]][k&0xff]
}

// entry is what one prefix of the trie maps to: every rule whose peer covers the prefix,
// its own and those of all its supernets (pushed down at compile time so that one
// longest-prefix lookup finds the whole allow set).
type entry struct {
	all   RuleID // a -1 (all protocols) rule
	tcp   *portMap
	udp   *portMap
	icmp  *portMap // key type<<8|code
	icmp6 *portMap
	other *[256]RuleID // protocols without ports, by number
}

// match returns the first rule in e allowing the packet, 0 when none does.
func (e *entry) match(blocks [][256]RuleID, proto uint8, port uint16, icmpType, icmpCode uint8) RuleID {
	if e == nil {
		return 0
	}
	var r RuleID
	switch proto {
	case ipproto.TCP:
		r = e.tcp.get(blocks, port)
	case ipproto.UDP:
		r = e.udp.get(blocks, port)
	case ipproto.ICMP:
		r = e.icmp.get(blocks, uint16(icmpType)<<8|uint16(icmpCode))
	case ipproto.ICMPv6:
		r = e.icmp6.get(blocks, uint16(icmpType)<<8|uint16(icmpCode))
	default:
		if e.other != nil {
			r = e.other[proto]
		}
	}
	if e.all != 0 && (r == 0 || e.all < r) {
		r = e.all
	}
	return r
}

// Decide judges the first packet of a flow on this interface: d is the direction, proto
// the IP protocol, remote the peer's address (the source for ingress, the destination for
// egress), port the destination port (tcp/udp), icmpType/icmpCode for icmp and icmpv6.
// It returns the first rule allowing the packet (0 = denied) and whether the flow is
// untracked (SPEC 1.4: allowed by a rule with peer 0.0.0.0/0 or ::/0 while the opposite
// direction allows the protocol on all ports to and from everywhere; ICMP is always
// tracked). It allocates nothing and takes time independent of the number of rules.
func (i *Iface) Decide(d Direction, proto uint8, remote netip.Addr, port uint16, icmpType, icmpCode uint8) (RuleID, bool) {
	dp := i.dir[d&1]
	e, _ := dp.trie.Lookup(remote)
	r := e.match(dp.blocks, proto, port, icmpType, icmpCode)
	if r == 0 || (proto != ipproto.TCP && proto != ipproto.UDP) {
		return r, false
	}
	fam := 0
	if !remote.Is4() {
		fam = 1
	}
	pi := 0
	if proto == ipproto.UDP {
		pi = 1
	}
	if !i.dir[(d^1)&1].openAll[fam][pi] {
		return r, false
	}
	return r, dp.wild[fam].match(dp.blocks, proto, port, icmpType, icmpCode) != 0
}
