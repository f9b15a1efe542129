package rules

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// This file is the slow, obviously correct evaluator of SPEC 1.1, 1.2 and 1.4 that the
// compiled matcher (tries, pushed-down supernets, port tables) is held to. It reads only
// the validated Model and the host's local addresses, never the compiled Policy, and
// judges a packet by scanning every rule of every group on the interface, literally.

// refRule names a rule the way Compile numbers it: rules are counted in config order
// (groups in Model.Groups order, a group's ingress then its egress, rule order), from 1.
type refRule struct {
	id    RuleID // 0: no rule allowed the packet
	label string // "sg-web/ingress/2", as RuleInfo.Label
}

// refVerdict is the reference's judgement of one packet.
type refVerdict struct {
	rule      refRule
	untracked bool
}

func (v refVerdict) String() string {
	if v.rule.id == 0 {
		return "DENY"
	}
	s := fmt.Sprintf("ALLOW #%d %s", v.rule.id, v.rule.label)
	if v.untracked {
		s += " untracked"
	}
	return s
}

// reference judges packets against a Model.
type reference struct {
	m      *Model
	locals func(iface string) []netip.Addr // nil: no local addresses
	cache  map[Peer][]netip.Prefix         // peerPrefixes, memoised (the model is immutable)
}

// peerPrefixes expands a peer into the prefixes it stands for (SPEC 1.1): a CIDR is
// itself; a prefix list is its entries; a referenced group is one host prefix for every
// member carrying it and for every local address of every interface carrying it.
func (ref *reference) peerPrefixes(peer Peer) []netip.Prefix {
	if ps, ok := ref.cache[peer]; ok {
		return ps
	}
	if ref.cache == nil {
		ref.cache = map[Peer][]netip.Prefix{}
	}
	ps := ref.expand(peer)
	ref.cache[peer] = ps
	return ps
}

func (ref *reference) expand(peer Peer) []netip.Prefix {
	switch peer.Kind {
	case PeerCIDR:
		return []netip.Prefix{peer.Prefix}
	case PeerPrefixList:
		return ref.m.PrefixLists[peer.ID]
	case PeerGroup:
		var out []netip.Prefix
		host := func(a netip.Addr) netip.Prefix {
			a = a.Unmap().WithZone("")
			return netip.PrefixFrom(a, a.BitLen())
		}
		for _, mb := range ref.m.Members {
			for _, g := range mb.Groups {
				if g == peer.ID {
					out = append(out, host(mb.Addr))
				}
			}
		}
		if ref.locals != nil {
			for _, itf := range ref.m.Interfaces {
				for _, g := range itf.Groups {
					if g == peer.ID {
						for _, a := range ref.locals(itf.Name) {
							out = append(out, host(a))
						}
					}
				}
			}
		}
		return out
	}
	panic(fmt.Sprintf("unknown peer kind %d", peer.Kind))
}

// peerContains: the remote address lies in one of the peer's prefixes. netip's Contains
// is false across families, so an IPv4 rule never matches IPv6 traffic and vice versa.
func (ref *reference) peerContains(peer Peer, remote netip.Addr) bool {
	for _, p := range ref.peerPrefixes(peer) {
		if p.Contains(remote) {
			return true
		}
	}
	return false
}

// protoMatches applies SPEC 1.1's protocol and port forms to one packet.
func protoMatches(r *NRule, proto uint8, port uint16, typ, code uint8) bool {
	if r.Proto == ipproto.All {
		return true // -1: every protocol, ports ignored
	}
	if r.Proto != int(proto) {
		return false
	}
	switch r.Proto {
	case ipproto.TCP, ipproto.UDP:
		return r.From <= int(port) && int(port) <= r.To
	case ipproto.ICMP, ipproto.ICMPv6:
		return (r.From == -1 || r.From == int(typ)) && (r.To == -1 || r.To == int(code))
	}
	return true // any other protocol: ports ignored
}

// each calls f for every rule of every group on iface in direction d, with its RuleID.
func (ref *reference) each(iface string, d Direction, f func(id RuleID, g *GroupModel, r *NRule)) {
	var itf *IfaceModel
	for i := range ref.m.Interfaces {
		if ref.m.Interfaces[i].Name == iface {
			itf = &ref.m.Interfaces[i]
		}
	}
	if itf == nil {
		panic("no interface " + iface)
	}
	on := map[string]bool{}
	for _, g := range itf.Groups {
		on[g] = true
	}
	id := RuleID(0)
	for _, g := range ref.m.Groups {
		for _, dd := range []Direction{Ingress, Egress} {
			list := g.Ingress
			if dd == Egress {
				list = g.Egress
			}
			for i := range list {
				id++
				if on[g.ID] && dd == d {
					f(id, g, &list[i])
				}
			}
		}
	}
}

// decide judges one packet: the lowest-numbered rule that allows it, and whether the
// flow is untracked. SPEC 1.4: a tcp or udp flow is untracked when a rule allowing it has
// peer 0.0.0.0/0 (or ::/0, the packet's family) and the opposite direction has a rule
// allowing that protocol, or -1, on all ports to/from 0.0.0.0/0 (or ::/0). A peer "is"
// 0.0.0.0/0 when it expands to that prefix (a CIDR or a prefix-list entry). Because a
// packet passes if ANY rule allows it, it is enough that SOME allowing rule has the /0
// peer — never only the lowest — so the answer does not depend on rule order.
func (ref *reference) decide(iface string, k pkt) refVerdict {
	var v refVerdict
	allowedByAll := false // some rule with a /0 peer allows the packet
	ref.each(iface, k.dir, func(id RuleID, g *GroupModel, r *NRule) {
		if !protoMatches(r, k.proto, k.port, k.typ, k.code) {
			return
		}
		for _, p := range ref.peerPrefixes(r.Peer) {
			if !p.Contains(k.remote) {
				continue
			}
			if v.rule.id == 0 || id < v.rule.id {
				v.rule = refRule{id: id, label: fmt.Sprintf("%s/%s/%d", g.ID, k.dir, r.Index)}
			}
			if p.Bits() == 0 {
				allowedByAll = true
			}
		}
	})
	if v.rule.id == 0 || !allowedByAll || (k.proto != ipproto.TCP && k.proto != ipproto.UDP) {
		return v
	}
	reverseOpen := false
	ref.each(iface, k.dir^1, func(_ RuleID, _ *GroupModel, r *NRule) {
		allPorts := r.Proto == ipproto.All || (r.Proto == int(k.proto) && r.From == 0 && r.To == 65535)
		if !allPorts {
			return
		}
		for _, p := range ref.peerPrefixes(r.Peer) {
			if p.Bits() == 0 && p.Addr().Is4() == k.remote.Is4() {
				reverseOpen = true
			}
		}
	})
	v.untracked = reverseOpen
	return v
}

// checkAgainstReference judges k with the compiled policy and the reference and reports
// any difference in allow/deny, in which rule, or in tracking.
func checkAgainstReference(t testing.TB, p *Policy, ref *reference, iface string, k pkt, context string) bool {
	t.Helper()
	want := ref.decide(iface, k)
	id, untracked := p.Interface(iface).Decide(k.dir, k.proto, k.remote, k.port, k.typ, k.code)
	got := refVerdict{rule: refRule{id: id}, untracked: untracked}
	if id != 0 && int(id) < len(p.Rules) {
		got.rule.label = p.Rules[id].Label
	}
	if got != want {
		t.Errorf("%s: Decide(%v on %s) = %v; want %v", context, k, iface, got, want)
		return false
	}
	return true
}

// The reference's own numbering must be Compile's, or the differential test would compare
// different rules: every RuleID names the same group, direction and index in both.
func TestReferenceNumbering(t *testing.T) {
	p := policy(t, specExample(t), locals("eth0=192.0.2.10"))
	ref := &reference{m: p.Model}
	for _, d := range []Direction{Ingress, Egress} {
		for _, name := range p.InterfaceNames() {
			var ids []RuleID
			ref.each(name, d, func(id RuleID, g *GroupModel, r *NRule) {
				ids = append(ids, id)
				ri := p.Rules[id]
				if ri.GroupID != g.ID || ri.Rule.Direction != d || ri.Rule.Index != r.Index {
					t.Errorf("rule %d: policy has %s, reference %s/%s/%d", id, ri.Label, g.ID, d, r.Index)
				}
			})
			if got := p.Interface(name).RuleIDs(d); fmt.Sprint(got) != fmt.Sprint(ids) {
				t.Errorf("RuleIDs(%v) = %v; want %v", d, got, ids)
			}
		}
	}
}
