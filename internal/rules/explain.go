package rules

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// Query is one packet for Explain: the first packet of a flow.
type Query struct {
	Iface              string
	Direction          Direction
	Proto              uint8
	Src, Dst           netip.Addr
	SrcPort            uint16 // source port (tcp/udp; 0 when not given)
	Port               uint16 // destination port (tcp/udp)
	ICMPType, ICMPCode uint8
}

// Remote is the peer address rules are matched against: the source of an ingress packet,
// the destination of an egress one.
func (q *Query) Remote() netip.Addr {
	if q.Direction == Egress {
		return q.Dst
	}
	return q.Src
}

// Explanation says why Explain allowed or denied a packet.
type Explanation struct {
	Allowed   bool
	Rule      *RuleInfo // the rule that allowed it (first in config order), nil otherwise
	Untracked bool
	Exempt    string   // non-empty when the packet is never filtered (loopback, NDP, an interface not configured)
	Why       string   // for a denial: the one-line reason
	Near      []string // rules that matched all but one part, for a denial
}

// Explain judges q by the rules as the packet path's last stage does (Iface.Decide) and
// adds the reasons a person needs. What the packet path decides before the rules (never
// filtered, forged) is filter.Explain's, which calls this. It is slow by design (it scans
// the rules for near misses) and is not for packets.
func (p *Policy) Explain(q Query) Explanation {
	itf := p.Interface(q.Iface)
	if itf == nil {
		return Explanation{Allowed: true, Exempt: fmt.Sprintf("interface %s is not in the config, so sgd does not filter it", q.Iface)}
	}
	remote := q.Remote().Unmap()
	id, untracked := itf.Decide(q.Direction, q.Proto, remote, q.Port, q.ICMPType, q.ICMPCode)
	if id != 0 {
		return Explanation{Allowed: true, Rule: &p.Rules[id], Untracked: untracked}
	}
	ex := Explanation{}
	ids := itf.RuleIDs(q.Direction)
	peerWord := "source"
	if q.Direction == Egress {
		peerWord = "destination"
	}
	switch {
	case len(ids) == 0:
		ex.Why = fmt.Sprintf("the groups on %s (%s) have no %s rules", q.Iface, strings.Join(itf.Groups, ", "), q.Direction)
	default:
		ex.Why = fmt.Sprintf("no %s rule of %s allows it; the packet is dropped silently (the sender times out)", q.Direction, strings.Join(itf.Groups, ", "))
	}
	for _, rid := range ids {
		ri := &p.Rules[rid]
		peerOK := false
		for _, pfx := range ri.Prefixes {
			if pfx.Contains(remote) {
				peerOK = true
				break
			}
		}
		protoOK, portOK := protoPortMatch(&ri.Rule, q)
		switch {
		case peerOK && protoOK && !portOK:
			ex.Near = append(ex.Near, fmt.Sprintf("%s %s allows %s from %s: not %s", ri.Label, ri.Rule.ID, ri.Rule.PortText(), ri.Rule.Peer, queryPort(q)))
		case !peerOK && protoOK && portOK:
			why := fmt.Sprintf("%s %s is not in %s", peerWord, remote, ri.Rule.Peer)
			if ri.Rule.Peer.Kind == PeerGroup && len(ri.Prefixes) == 0 {
				why = fmt.Sprintf("group %s has no known addresses (no members, no local interface carrying it)", ri.Rule.Peer.ID)
			}
			ex.Near = append(ex.Near, fmt.Sprintf("%s %s allows %s from %s: %s", ri.Label, ri.Rule.ID, ri.Rule.PortText(), ri.Rule.Peer, why))
		}
		if len(ex.Near) == 5 {
			break
		}
	}
	return ex
}

func protoPortMatch(r *NRule, q Query) (protoOK, portOK bool) {
	if r.Proto == ipproto.All {
		return true, true
	}
	if r.Proto != int(q.Proto) {
		return false, false
	}
	switch r.Proto {
	case ipproto.TCP, ipproto.UDP:
		return true, int(q.Port) >= r.From && int(q.Port) <= r.To
	case ipproto.ICMP, ipproto.ICMPv6:
		return true, (r.From < 0 || r.From == int(q.ICMPType)) && (r.To < 0 || r.To == int(q.ICMPCode))
	}
	return true, true
}

func queryPort(q Query) string {
	switch q.Proto {
	case ipproto.TCP, ipproto.UDP:
		return fmt.Sprintf("%s/%d", ipproto.Name(int(q.Proto)), q.Port)
	case ipproto.ICMP, ipproto.ICMPv6:
		return fmt.Sprintf("%s type %d code %d", ipproto.Name(int(q.Proto)), q.ICMPType, q.ICMPCode)
	}
	return "protocol " + ipproto.Name(int(q.Proto))
}

// Warnings lists things in a valid model that are probably not what the user meant.
func (m *Model) Warnings() []string {
	var w []string
	for _, g := range m.Groups {
		for _, list := range [][]NRule{g.Ingress, g.Egress} {
			for _, r := range list {
				where := fmt.Sprintf("group %s %s[%d]", g.ID, r.Direction, r.Index)
				if r.Proto == ipproto.ICMP && r.From == 8 && r.To == 8 {
					w = append(w, where+": icmp from_port 8 to_port 8 allows type 8 code 8, which is not ping (echo request is type 8 code 0); use to_port 0 or -1")
				}
				if r.Proto == ipproto.ICMPv6 && r.Peer.Kind == PeerCIDR && r.Peer.Prefix.Addr().Is4() {
					w = append(w, where+": icmpv6 with an IPv4 peer never matches (ICMPv6 travels over IPv6)")
				}
				if r.Proto == ipproto.ICMP && r.Peer.Kind == PeerCIDR && r.Peer.Prefix.Addr().Is6() {
					w = append(w, where+": icmp with an IPv6 peer never matches ping over IPv6 (use icmpv6)")
				}
			}
		}
	}
	return w
}
