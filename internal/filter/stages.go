package filter

import (
	"net/netip"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/packet"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// The judge's stages, in the order Worker.judge runs them: screen (what the packet alone
// decides), track (the connection table), decide (the rules). Each either decides the
// packet or passes it on.

// screening is the screen stage's decision.
type screening uint8

const (
	screenPass        screening = iota // on to tracking and the rules
	screenFragment                     // a later fragment: no ports to judge
	screenNDP                          // IPv6 neighbour discovery
	screenSpoofed                      // arrived from one of the host's own addresses
	screenDHCP                         // DHCP client traffic of the link
	screenSourceCheck                  // a port's instance sent from an address not its own
)

// screenings holds each screening's reason, and the sentence `sgd explain` prints for it.
var screenings = [...]struct {
	reason Reason
	why    string
}{
	screenPass:     {ReasonNoRule, ""},
	screenFragment: {ReasonFragment, "a fragment other than the first carries no ports to judge"},
	screenNDP:      {ReasonExempt, "IPv6 neighbour discovery (ICMPv6 133–137) is never filtered"},
	screenSpoofed: {ReasonSpoofedLocal, "its source is an address of this host: only a forged packet arrives from it " +
		"(the host's own traffic to itself runs on loopback), so it is dropped before any rule"},
	screenDHCP: {ReasonExempt, "DHCP client traffic on the link is never filtered (exempt_dhcp)"},
	screenSourceCheck: {ReasonSpoofed, "its source is not one of the port's addresses: the instance may send only from its own " +
		"(source_dest_check; set it to false for an instance that routes or translates)"},
}

// portScreen is what the screen knows of a port (SPEC 4.3); nil for this host's
// interfaces.
type portScreen struct {
	sourceDestCheck bool
	addrs           addrSet // the instance's addresses
}

func newPortScreen(pi *rules.PortInfo) *portScreen {
	if pi == nil {
		return nil
	}
	return &portScreen{sourceDestCheck: pi.SourceDestCheck, addrs: newAddrSet(pi.Addrs)}
}

// mayNotSend reports whether the instance behind the port may not send from p's source
// (AWS's source/dest check): an address of its own may, and so may an IPv6 link-local one
// (every IPv6 interface has one and needs it for the link: router and neighbour discovery,
// MLD, DHCPv6) and the unspecified address in ICMPv6 (MLD reports during duplicate address
// detection, RFC 3810 5.2.13). The rules still judge those. ARP is not IP and never
// reaches sgd; DHCPv4 from 0.0.0.0 is screened as DHCP before this.
func (ps *portScreen) mayNotSend(p *packet.Parsed) bool {
	switch {
	case !ps.sourceDestCheck || ps.addrs.has(p.Src):
		return false
	case p.Family == 6 && (linkLocal6.Contains(p.Src) || p.Src.IsUnspecified() && p.Proto == ipproto.ICMPv6):
		return false
	}
	return true
}

// screen is the first stage: what the packet alone decides, before any flow or rule.
//
//   - A later fragment is dropped: the kernel reassembles what arrives (IPv4 always; IPv6
//     because sgd's rules load conntrack) and fragments what leaves after the hooks, so only
//     a datagram cut up by a raw socket gets here in pieces, and its ports cannot be judged
//     (SPEC 1.4).
//   - Neighbour discovery passes: it is the fabric's, not the groups' (SPEC 1.2).
//   - A packet arriving from one of the host's own addresses is dropped: a VPC never
//     delivers one, and it would match rules that reference the host's own groups (SPEC 1.1).
//   - DHCP client traffic of the link passes, with exemptDHCP (dhcpExempt; SPEC 1.2).
//   - At a port (port non-nil), the host's own addresses are peers like any other (the
//     host is not the instance), and what the instance sends from an address not its own
//     is dropped, unless the port's source_dest_check is off (portScreen.mayNotSend).
//
// nets are the attachment point's on-link prefixes, local the host's own addresses.
func screen(p *packet.Parsed, dir Dir, port *portScreen, nets []netip.Prefix, local *addrSet, exemptDHCP bool) screening {
	switch {
	case p.LaterFragment:
		return screenFragment
	case ipproto.IsNDP(p.Proto, p.ICMPType):
		return screenNDP
	case port == nil && dir == DirIngress && local.has(p.Src):
		return screenSpoofed
	case exemptDHCP && p.Proto == ipproto.UDP && dhcpExempt(p, dir, nets, local):
		return screenDHCP
	case port != nil && dir == DirEgress && port.mayNotSend(p):
		return screenSourceCheck
	}
	return screenPass
}

// flowRef is the packet's flow as the connection table knows it, and whether the packet
// may start one.
type flowRef struct {
	t      conntrack.Tuple
	starts bool
}

// of sets f to the flow of p tracked in zone: TCP and UDP by ports, ICMP echo by its
// identifier (in both ports), anything else by the address pair. A TCP packet starts a
// flow only as a bare SYN, an echo only as a request, another ICMP message never.
func (f *flowRef) of(p *packet.Parsed, zone uint16) {
	f.t = conntrack.Tuple{Proto: p.Proto, Src: p.Src, Dst: p.Dst, Zone: zone}
	f.starts = true
	switch {
	case p.Proto == ipproto.TCP:
		f.t.SrcPort, f.t.DstPort = p.SrcPort, p.DstPort
		f.starts = p.TCPFlags&(packet.FlagSYN|packet.FlagACK|packet.FlagRST) == packet.FlagSYN
	case p.Proto == ipproto.UDP:
		f.t.SrcPort, f.t.DstPort = p.SrcPort, p.DstPort
	case ipproto.IsICMP(p.Proto):
		if ipproto.IsEcho(p.Proto, p.ICMPType) {
			f.t.SrcPort, f.t.DstPort = p.ICMPID, p.ICMPID
			f.starts = ipproto.IsEchoRequest(p.Proto, p.ICMPType)
		} else {
			f.starts = false
		}
	}
}

// track is the second stage: a packet of a flow tracked at this point passes
// (ReasonTracked), and so does an ICMP error quoting one, with allow_related_icmp
// (ReasonRelatedICMP). ok is false when the packet is left to the rules.
func (w *Worker) track(p *packet.Parsed, dir Dir, f *flowRef, now int64) (r Reason, ok bool) {
	table := w.e.table
	switch {
	case !ipproto.IsICMP(p.Proto):
		m, info := table.Lookup(&f.t, p.TCPFlags, now)
		switch {
		case m == conntrack.MatchNone:
		case !info.Offloaded:
			return ReasonTracked, true
		case p.Proto == ipproto.TCP && f.starts:
			// A bare SYN of an offloaded flow reaches the queue only when the kernel sees
			// no part of the flow in it: a new connection on the old port pair, or an
			// unsolicited one from the reply side (the kernel marks that INVALID). The
			// table's state of an offloaded flow is the one it had when it was offloaded,
			// too old to tell (step's TIME_WAIT and CLOSE rules): the rules judge it.
			w.forgetOffloaded(f.t)
		case w.alive(f.t):
			return ReasonTracked, true
		}
	case ipproto.IsEcho(p.Proto, p.ICMPType):
		// The flow is keyed by identifier only: a request rides it only from the side that
		// sent the first request, a reply only from the other side (as Linux does). One
		// the other way is not the flow's, and must not keep it alive.
		side := conntrack.MatchReply
		if f.starts {
			side = conntrack.MatchOriginal
		}
		if table.LookupFrom(&f.t, side, now) {
			return ReasonTracked, true
		}
	case w.e.opt.AllowRelatedICMP && p.Inner.Valid && ipproto.IsRelatedError(p.Proto, p.ICMPType) && w.related(p, dir, f.t.Zone, now):
		return ReasonRelatedICMP, true
	}
	return 0, false
}

// related reports whether the ICMP error in p, seen in direction dir, quotes a packet of
// a flow tracked in zone that went the other way: an error arriving quotes a packet this
// host sent (from the error's destination), one leaving quotes a packet it received.
func (w *Worker) related(p *packet.Parsed, dir Dir, zone uint16, now int64) bool {
	in := &p.Inner
	if (dir == DirIngress && in.Src != p.Dst) || (dir == DirEgress && in.Dst != p.Src) {
		return false
	}
	t := conntrack.Tuple{Proto: in.Proto, Src: in.Src, Dst: in.Dst, Zone: zone}
	switch {
	case ipproto.HasPorts(in.Proto):
		t.SrcPort, t.DstPort = in.SrcPort, in.DstPort
	case ipproto.IsICMP(in.Proto):
		if !ipproto.IsEcho(in.Proto, in.ICMPType) {
			return false
		}
		t.SrcPort, t.DstPort = in.ICMPID, in.ICMPID
	}
	info, ok := w.e.table.Find(&t, now)
	return ok && (!info.Offloaded || w.alive(t))
}

// decide is the last stage: the rules of the point's groups allow the packet or it is
// dropped; an allowed packet that may start a flow starts one, unless its rule is
// untracked.
func (w *Worker) decide(st *state, is *ifaceState, dir Dir, f *flowRef, res *Result, now int64) {
	p := &w.p
	remote := p.Src
	if dir == DirEgress {
		remote = p.Dst
	}
	rid, untracked := is.itf.Decide(dir, p.Proto, remote, p.DstPort, p.ICMPType, p.ICMPCode)
	if rid == 0 {
		res.Reason = ReasonNoRule
		return
	}
	res.Rule = &st.pol.Rules[rid]
	if h := st.hits; w.id < len(h) && int(rid) < len(h[w.id]) {
		h[w.id][rid].Add(1)
	}
	switch {
	case untracked:
		res.Reason = ReasonUntracked
		return
	case !f.starts:
		res.Reason = ReasonRuleNoFlow
		return
	case ipproto.HasPorts(p.Proto) && replyOfUntracked(is.itf, dir, p.Proto, remote, p.SrcPort):
		// The packet answers a flow the other direction allows untracked (AWS's DNS
		// server: udp/53 in from 0.0.0.0/0, all out). It must not start a tracked flow of
		// its own, or the untracked flow would live on through it after its rule is gone.
		res.Reason = ReasonUntracked
		return
	}
	meta := conntrack.Meta{Timeouts: is.timeouts, Ingress: dir == DirIngress, Rule: st.refs[rid]}
	switch w.e.table.Insert(&f.t, p.TCPFlags, meta, now) {
	case conntrack.Full:
		res.Reason = ReasonTableFull
	case conntrack.NoFlow:
		res.Reason = ReasonRuleNoFlow // e.g. SYN+FIN: allowed by the rules, starts nothing
	case conntrack.Inserted:
		res.Reason = ReasonRule
		w.started(is, dir, &f.t)
	default:
		res.Reason = ReasonRule
	}
}

// replyOfUntracked reports whether a packet (direction dir, to or from remote, with source
// port sport) is the reply of a flow the opposite direction allows untracked: the packet
// the other way, remote → our sport, would be allowed by an untracked rule.
func replyOfUntracked(itf *rules.Iface, dir Dir, proto uint8, remote netip.Addr, sport uint16) bool {
	r, untracked := itf.Decide(dir^1, proto, remote, sport, 0, 0)
	return r != 0 && untracked
}
