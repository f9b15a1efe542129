package filter

// The reference model of SPEC Part 1 (rules, evaluation, defaults, connection tracking)
// and 4.2 (tracking per interface) that TestModelDifferential holds the whole decision
// path to. It is written from the SPEC, slow and plain on purpose: rules are a list
// scanned in full, flows a map. It knows nothing of the engine's code.
//
// Where the SPEC leaves a detail open the model either says what it reads there (marked
// "reading:") or does not know, and says so: a flow whose deadline the SPEC does not pin
// down to the nanosecond carries a band [lo, hi) within which it may or may not have
// idled out, and a TCP SYN on a flow whose state it cannot tell (TIME_WAIT and CLOSE
// treat a SYN as a new connection) is "unknown". The generator (modelgen_test.go) never
// steps the clock into a band and never sends such a SYN, so that every answer the
// model gives is the SPEC's.

import (
	"net/netip"
	"time"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// mRule is one allow rule (SPEC 1.1). Proto is -1 for all protocols. From and To are the
// port range for tcp/udp and the ICMP type and code (-1 = all) for icmp/icmpv6; other
// protocols have no ports. A Peer that is not valid is a reference to the interface's
// own group: the host's own addresses (only AWS's default group uses it here).
type mRule struct {
	Proto    int
	From, To int
	Peer     netip.Prefix
}

// mGroup is a security group. DefaultEgress: egress omitted, AWS's allow-all (SPEC 1.3).
type mGroup struct {
	ID            string
	Ingress       []mRule
	Egress        []mRule
	DefaultEgress bool
}

// mIface is an interface, its groups (none: the default group) and its connection
// tracking timeouts in seconds.
type mIface struct {
	Name                string
	Groups              []string
	Est, UDP, UDPStream int
}

type mPolicy struct {
	Groups []mGroup
	Ifaces []mIface
}

var (
	any4 = netip.MustParsePrefix("0.0.0.0/0")
	any6 = netip.MustParsePrefix("::/0")
)

// rulesOf returns the interface's merged allow set for one direction (SPEC 1.2, 1.3).
func (p *mPolicy) rulesOf(iface string, d Dir) []mRule {
	allAnywhere := []mRule{{Proto: -1, Peer: any4}, {Proto: -1, Peer: any6}}
	for _, itf := range p.Ifaces {
		if itf.Name != iface {
			continue
		}
		if len(itf.Groups) == 0 { // AWS's default group: all from itself, all out
			if d == DirIngress {
				return []mRule{{Proto: -1}}
			}
			return allAnywhere
		}
		var out []mRule
		for _, id := range itf.Groups {
			for _, g := range p.Groups {
				switch {
				case g.ID != id:
				case d == DirIngress:
					out = append(out, g.Ingress...)
				case g.DefaultEgress:
					out = append(out, allAnywhere...)
				default:
					out = append(out, g.Egress...)
				}
			}
		}
		return out
	}
	return nil
}

func (p *mPolicy) iface(name string) *mIface {
	for i := range p.Ifaces {
		if p.Ifaces[i].Name == name {
			return &p.Ifaces[i]
		}
	}
	return nil
}

// mPacket is a packet as the model sees it: where it was judged, and its headers.
type mPacket struct {
	Iface            string
	Dir              Dir
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16   // tcp, udp
	Flags            uint8    // tcp
	Type, Code       uint8    // icmp, icmpv6
	ID               uint16   // icmp echo identifier
	Quote            *mPacket // an ICMP error's quoted packet (its Iface and Dir unused)
}

// remote is the peer a rule is matched against: the source in, the destination out.
func (p *mPacket) remote() netip.Addr {
	if p.Dir == DirEgress {
		return p.Dst
	}
	return p.Src
}

// ICMP message classes by type (RFC 792, RFC 4443, RFC 4861).
func isEchoMsg(proto, typ uint8) bool {
	return (proto == ipproto.ICMP && (typ == 8 || typ == 0)) || (proto == ipproto.ICMPv6 && (typ == 128 || typ == 129))
}

func isEchoRequestMsg(proto, typ uint8) bool {
	return (proto == ipproto.ICMP && typ == 8) || (proto == ipproto.ICMPv6 && typ == 128)
}

// isNDPMsg: router/neighbour solicitation and advertisement, redirect (133–137).
func isNDPMsg(proto, typ uint8) bool { return proto == ipproto.ICMPv6 && typ >= 133 && typ <= 137 }

// isNamedError: the errors SPEC 1.4 names for allow_related_icmp — destination
// unreachable (4: 3, 6: 1), packet too big (6: 2), time exceeded (4: 11, 6: 3).
func isNamedError(proto, typ uint8) bool {
	return (proto == ipproto.ICMP && (typ == 3 || typ == 11)) || (proto == ipproto.ICMPv6 && typ >= 1 && typ <= 3)
}

// allows reports whether r allows p (SPEC 1.1). local are the host's own addresses.
func (r mRule) allows(p *mPacket, local []netip.Addr) bool {
	if r.Proto != -1 && r.Proto != int(p.Proto) {
		return false
	}
	if r.Proto != -1 {
		switch p.Proto {
		case ipproto.TCP, ipproto.UDP:
			if int(p.DstPort) < r.From || int(p.DstPort) > r.To {
				return false
			}
		case ipproto.ICMP, ipproto.ICMPv6:
			if r.From != -1 && (int(p.Type) != r.From || (r.To != -1 && int(p.Code) != r.To)) {
				return false
			}
		}
	}
	a := p.remote()
	if !r.Peer.IsValid() {
		for _, l := range local {
			if l == a {
				return true
			}
		}
		return false
	}
	return r.Peer.Addr().Is4() == a.Is4() && r.Peer.Contains(a)
}

// openToAll reports whether r allows proto on all ports to/from everywhere of a's family:
// the other half of SPEC 1.4's untracked condition.
func (r mRule) openToAll(proto uint8, a netip.Addr) bool {
	if (r.Peer != any4 && r.Peer != any6) || r.Peer.Addr().Is4() != a.Is4() {
		return false
	}
	return r.Proto == -1 || (r.Proto == int(proto) && r.From == 0 && r.To == 65535)
}

// mEnd is one end of a flow: an address and a port (the echo identifier for ICMP echo,
// 0 for protocols without ports).
type mEnd struct {
	Addr netip.Addr
	Port uint16
}

func (e mEnd) less(f mEnd) bool {
	if c := e.Addr.Compare(f.Addr); c != 0 {
		return c < 0
	}
	return e.Port < f.Port
}

// mKey names a flow: the interface (SPEC 4.2), the protocol and its two ends in either
// order (A sorts first).
type mKey struct {
	Iface string
	Proto uint8
	A, B  mEnd
}

// flowKeyOf returns p's flow key; ok is false for ICMP other than echo, which has no flow.
func flowKeyOf(p *mPacket, iface string) (k mKey, src mEnd, ok bool) {
	s, d := mEnd{Addr: p.Src}, mEnd{Addr: p.Dst}
	switch p.Proto {
	case ipproto.TCP, ipproto.UDP:
		s.Port, d.Port = p.SrcPort, p.DstPort
	case ipproto.ICMP, ipproto.ICMPv6:
		if !isEchoMsg(p.Proto, p.Type) {
			return mKey{}, mEnd{}, false
		}
		s.Port, d.Port = p.ID, p.ID
	}
	if d.less(s) {
		return mKey{iface, p.Proto, d, s}, s, true
	}
	return mKey{iface, p.Proto, s, d}, s, true
}

// phase is what the model knows of a flow's state.
type phase uint8

const (
	// TCP (SPEC 1.4's state machine, as far as the model follows it): the three steps of
	// an opening handshake, each packet the expected one; unsure is any other history
	// (a FIN, an RST, a packet out of order), whose state and timeout the model does not
	// follow: Linux's TCP timeouts other than ESTABLISHED lie within 10–120 s.
	tcpSynSent     phase = iota // the originator's SYN: SYN_SENT, 120 s
	tcpSynRecv                  // the reply side's SYN-ACK: SYN_RECV, 60 s
	tcpEstablished              // the originator's ACK: ESTABLISHED, tcp_established_timeout
	tcpUnsure
	udpOneWay    // udp_timeout: seen one way...
	udpAnswered  // ... or one request/response
	udpMore      // anything more: udp_timeout or udp_stream_timeout (reading: the SPEC does not say when "more than one" begins)
	icmpEchoFlow // 30 s
	otherFlow    // 600 s
)

type mFlow struct {
	Orig  mEnd // the end that sent the first packet
	Phase phase
	// Lo and Hi bound the flow's idle deadline (its band): it is surely live before Lo
	// and surely gone from Hi on. A packet that surely restarts the idle timer sets both
	// from the timeout of the flow's phase; one out of state may or may not, and widens
	// them.
	Lo, Hi      int64
	Est, UDP, S int64 // the interface's timeouts when the flow began (ns)
}

// timeouts returns the least and the most idle timeout the flow's phase may have.
func (f *mFlow) timeouts() (lo, hi int64) {
	sec := int64(time.Second)
	switch f.Phase {
	case tcpSynSent:
		return 120 * sec, 120 * sec
	case tcpSynRecv:
		return 60 * sec, 60 * sec
	case tcpEstablished:
		return f.Est, f.Est
	case tcpUnsure:
		return 10 * sec, max(f.Est, 120*sec)
	case udpOneWay, udpAnswered:
		return f.UDP, f.UDP
	case udpMore:
		return min(f.UDP, f.S), max(f.UDP, f.S)
	case icmpEchoFlow:
		return 30 * sec, 30 * sec
	}
	return 600 * sec, 600 * sec
}

// touch records a packet of the flow at now: sure says whether it surely restarted the
// idle timer.
func (f *mFlow) touch(now int64, sure bool) {
	lo, hi := f.timeouts()
	if sure {
		f.Lo, f.Hi = now+lo, now+hi
		return
	}
	f.Lo, f.Hi = min(f.Lo, now+lo), max(f.Hi, now+hi)
}

// outcome is what the model decides for a packet: a verdict and why.
type outcome uint8

const (
	outDenied  outcome = iota // drop: no rule allows it (SPEC 1.1)
	outFull                   // drop: it would start a tracked flow and the table is full
	outExempt                 // accept: never filtered (NDP, SPEC 1.2)
	outTracked                // accept: a packet of a tracked flow, either way (SPEC 1.4)
	outRelated                // accept: an ICMP error about a tracked flow (allow_related_icmp)
	outNewFlow                // accept: a rule allows it and it starts (or joins) a tracked flow
	outNoFlow                 // accept: a rule allows it and it starts nothing: untracked, or not a first packet
	outOther                  // anything else (the model never answers this)
)

var outcomeNames = [...]string{"denied", "table full", "exempt", "tracked", "related", "new flow", "no flow", "other"}

func (o outcome) String() string { return outcomeNames[o] }

func (o outcome) accept() bool { return o >= outExempt && o <= outNoFlow }

// model is the reference: a policy, the tracked flows and the clock.
type model struct {
	pol         *mPolicy
	relatedICMP bool
	capacity    int
	local       []netip.Addr
	flows       map[mKey]*mFlow
	now         int64
}

// step moves the clock by d. It returns false, changing nothing, when the new time falls
// within a flow's band (the generator never asks that); otherwise flows past their
// timeout are forgotten.
func (m *model) step(d int64) bool {
	t := m.now + d
	for _, f := range m.flows {
		if f.Lo <= t && t < f.Hi {
			return false
		}
	}
	m.now = t
	for k, f := range m.flows {
		if t >= f.Hi {
			delete(m.flows, k)
		}
	}
	return true
}

// clear returns the earliest time at or after t that lies in no flow's band.
func (m *model) clear(t int64) int64 {
	for moved := true; moved; {
		moved = false
		for _, f := range m.flows {
			if f.Lo <= t && t < f.Hi {
				t, moved = f.Hi, true
			}
		}
	}
	return t
}

// allowed reports whether a rule of the packet's direction allows it, and whether the
// flow is untracked (SPEC 1.4: a tcp or udp packet one of whose allowing rules has peer
// 0.0.0.0/0 or ::/0, while the opposite direction allows the protocol on all ports
// to/from everywhere). Reading: one such rule among the allowing ones is enough.
func (m *model) allowed(p *mPacket) (ok, untracked bool) {
	wild := false
	for _, r := range m.pol.rulesOf(p.Iface, p.Dir) {
		if r.allows(p, m.local) {
			ok = true
			wild = wild || r.Peer == any4 || r.Peer == any6
		}
	}
	if !ok || !wild || (p.Proto != ipproto.TCP && p.Proto != ipproto.UDP) {
		return ok, false
	}
	for _, r := range m.pol.rulesOf(p.Iface, p.Dir^1) {
		if r.openToAll(p.Proto, p.remote()) {
			return true, true
		}
	}
	return true, false
}

// judge decides p and updates the flows. known is false, and nothing changes, when the
// model cannot tell the SPEC's answer (a SYN on a TCP flow of unknown state).
func (m *model) judge(p *mPacket) (o outcome, known bool) {
	if isNDPMsg(p.Proto, p.Type) {
		return outExempt, true
	}
	k, src, hasKey := flowKeyOf(p, p.Iface)
	f := m.flows[k]
	if hasKey && f != nil {
		switch p.Proto {
		case ipproto.TCP:
			if p.Flags == syn && f.Phase == tcpUnsure {
				return outOther, false
			}
			f.advanceTCP(src == f.Orig, p.Flags, m.now)
			return outTracked, true
		case ipproto.ICMP, ipproto.ICMPv6:
			// An echo flow carries requests from its originator and replies from the
			// other end; another echo message with the flow's identifier is judged by
			// the rules, and is not the flow's activity.
			if isEchoRequestMsg(p.Proto, p.Type) == (src == f.Orig) {
				f.touch(m.now, true)
				return outTracked, true
			}
		default:
			if p.Proto == ipproto.UDP {
				f.advanceUDP(src == f.Orig)
			}
			f.touch(m.now, true)
			return outTracked, true
		}
	}
	if m.relatedICMP && p.Quote != nil && isNamedError(p.Proto, p.Type) && m.related(p) {
		return outRelated, true
	}
	ok, untracked := m.allowed(p)
	switch {
	case !ok:
		return outDenied, true
	case untracked || !hasKey:
		return outNoFlow, true
	case p.Proto == ipproto.TCP && p.Flags != syn:
		return outNoFlow, true // only a SYN opens a TCP flow
	case (p.Proto == ipproto.ICMP || p.Proto == ipproto.ICMPv6) && !isEchoRequestMsg(p.Proto, p.Type):
		return outNoFlow, true // an echo reply opens nothing
	case (p.Proto == ipproto.TCP || p.Proto == ipproto.UDP) && m.replyOfUntracked(p):
		return outNoFlow, true
	case f != nil:
		return outNewFlow, true // an echo request from the other end: joins the flow
	case len(m.flows) >= m.capacity:
		return outFull, true
	}
	itf := m.pol.iface(p.Iface)
	f = &mFlow{Orig: src, Est: int64(itf.Est) * int64(time.Second),
		UDP: int64(itf.UDP) * int64(time.Second), S: int64(itf.UDPStream) * int64(time.Second)}
	switch p.Proto {
	case ipproto.TCP:
		f.Phase = tcpSynSent
	case ipproto.UDP:
		f.Phase = udpOneWay
	case ipproto.ICMP, ipproto.ICMPv6:
		f.Phase = icmpEchoFlow
	default:
		f.Phase = otherFlow
	}
	f.touch(m.now, true)
	m.flows[k] = f
	return outNewFlow, true
}

// replyOfUntracked: p answers a flow the opposite direction allows untracked (the packet
// the other way, from p's remote to p's source port, would be allowed untracked). Such a
// reply must start no tracked flow of its own, or the untracked flow would outlive its
// rule through it (SPEC 1.4: "An untracked flow stops at once").
func (m *model) replyOfUntracked(p *mPacket) bool {
	back := mPacket{Iface: p.Iface, Dir: p.Dir ^ 1, Proto: p.Proto, Src: p.Dst, Dst: p.Src, SrcPort: p.DstPort, DstPort: p.SrcPort}
	ok, untracked := m.allowed(&back)
	return ok && untracked
}

// related reports whether the ICMP error p quotes a packet of a flow tracked on p's
// interface that the error's recipient sent (an error goes back to the sender of the
// packet it quotes, RFC 792 and RFC 4443). Reading: it does not count as the flow's
// activity.
func (m *model) related(p *mPacket) bool {
	q := p.Quote
	if (p.Dir == DirIngress && q.Src != p.Dst) || (p.Dir == DirEgress && q.Dst != p.Src) {
		return false
	}
	k, _, ok := flowKeyOf(q, p.Iface)
	return ok && m.flows[k] != nil
}

// advanceTCP follows the opening handshake while each packet is the expected one.
func (f *mFlow) advanceTCP(orig bool, flags uint8, now int64) {
	data := flags == ack || flags == pshAck
	next := tcpUnsure
	switch {
	case f.Phase == tcpSynSent && orig && flags == syn:
		next = tcpSynSent // a retransmitted SYN
	case f.Phase == tcpSynSent && !orig && flags == synAck, f.Phase == tcpSynRecv && !orig && flags == synAck:
		next = tcpSynRecv
	case f.Phase == tcpSynRecv && orig && data, f.Phase == tcpEstablished && data:
		next = tcpEstablished
	}
	f.Phase = next
	f.touch(now, next != tcpUnsure)
}

func (f *mFlow) advanceUDP(orig bool) {
	switch {
	case f.Phase == udpOneWay && !orig:
		f.Phase = udpAnswered
	case f.Phase == udpAnswered:
		f.Phase = udpMore
	}
}
