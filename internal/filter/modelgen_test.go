package filter

// TestModelDifferential: the whole decision path (decode → exemptions → connection table
// → compiled rules) against the reference model of model_test.go, on seeded random
// sequences of packets on two interfaces, reloads and clock steps.
//
// What the generator produces:
//   - Conversations in both directions, opened by the host or by a peer, over IPv4 and
//     IPv6: TCP mostly along its script (SYN, SYN-ACK, ACK, data, a FIN exchange or an
//     RST), a quarter of its packets with random flags from a random side (out of state:
//     a bare ACK or SYN-ACK with no flow, data after an RST, a SYN in the middle); UDP
//     from either side; ICMP and ICMPv6 echo (requests and replies, a few from the wrong
//     side); GRE (a protocol tracked by address pair). A packet goes out on its
//     conversation's interface, or now and then on the other one (SPEC 4.2).
//   - ICMP errors (named ones and others) quoting a packet of a conversation, mostly
//     sent back to the quoted packet's sender, sometimes not; NDP; ICMP timestamps.
//   - Reloads that add and remove rules and change the groups of an interface, over a
//     small pool of ports and peers (0.0.0.0/0 and ::/0 among them, so that flows are
//     untracked now and then), groups with omitted, empty and explicit egress,
//     interfaces with no group (AWS's default group).
//   - Clock steps from a millisecond to well past every timeout, and table sweeps.
//
// Constraints, so that the SPEC's answer is unambiguous (see model_test.go):
//   - A clock step never lands within a flow's band: a step that would is lengthened to
//     the band's end, where the flow has surely idled out. In effect, while a TCP flow of
//     unknown state lives, steps are shorter than 10 s or longer than all its timeouts.
//   - A lone SYN is never sent on a TCP flow of unknown state (TIME_WAIT and CLOSE take a
//     SYN as a new connection, other states as part of the flow): it becomes an ACK.
//   - Each interface's connection_tracking timeouts are fixed for a sequence (reloads
//     change rules, not timeouts: the SPEC does not say whether a flow takes an
//     interface's new timeouts).
//   - The table has room for every flow, or is small (2–7 flows) and swept after every
//     clock step: the engine counts an idled-out flow against the capacity until a sweep
//     or its next packet removes it, which the SPEC does not speak of.
//   - Left out (the subject of other tests): peers other than CIDRs (prefix lists,
//     references to other groups and members; rules' own differential test covers the
//     matcher), DHCP (ExemptDHCP off), loopback, packets arriving from the host's own
//     addresses, fragments and malformed packets, interfaces added or removed by a
//     reload, several workers.
//
// A failure prints the seed, the shortest failing prefix the shrinker finds (every op
// with both answers) and the command that runs that sequence again.

import (
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/rules"
)

var (
	modelSeqs = flag.Int("sgd.seqs", 2000, "TestModelDifferential: how many random sequences to run")
	modelSeed = flag.Uint64("sgd.seed", 1, "TestModelDifferential: the first sequence's seed (sequence i has seed+i)")
)

// judgeAt is the differential test's only call of Judge: the packet b at the attachment
// point (device dev, direction dir).
func judgeAt(w *Worker, b []byte, dev uint32, dir Dir) Result {
	return w.Judge(b, Point{Dev: dev, Dir: dir})
}

// More TCP flag bytes (helpers_test.go has the others).
const (
	pshAck = 0x18
	rstAck = 0x14
)

// The host: two interfaces, each with both of the host's addresses reachable through it.
var (
	modelIfaces = []struct {
		name  string
		index uint32
	}{{"eth0", ifEth0}, {"eth1", ifEth1}}
	local4, local6 = netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	modelLocal     = []netip.Addr{local4, local6}
	remotes4       = addrs("203.0.113.9", "203.0.113.77", "198.51.100.7")
	remotes6       = addrs("2001:db8:9::9", "2001:db8:77::7")
	routers        = addrs("203.0.113.1", "2001:db8:9::1") // senders of ICMP errors
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// The pools rules are drawn from: peers that hold some of the remotes and not others,
// port ranges around the conversations' ports.
var (
	peers4     = prefixes("0.0.0.0/0", "203.0.113.0/24", "203.0.113.9/32", "198.51.100.0/24")
	peers6     = prefixes("::/0", "2001:db8:9::/48", "2001:db8:77::7/128")
	portRanges = [][2]int{{22, 22}, {80, 80}, {5000, 5000}, {53, 53}, {443, 443}, {0, 65535}, {1, 1024}, {40000, 40001}, {50000, 65535}}
	icmp4Kinds = [][2]int{{-1, -1}, {8, -1}, {0, -1}, {3, -1}, {11, 0}, {8, 0}, {13, -1}}
	icmp6Kinds = [][2]int{{-1, -1}, {128, -1}, {129, -1}, {1, -1}, {2, 0}, {3, -1}, {4, -1}}
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func randRule(r *rand.Rand) mRule {
	v6 := r.IntN(3) == 0
	rl := mRule{Peer: pick(r, peers4)}
	if v6 {
		rl.Peer = pick(r, peers6)
	}
	switch x := r.IntN(10); {
	case x < 7:
		rl.Proto = ipproto.TCP
		if x >= 4 {
			rl.Proto = ipproto.UDP
		}
		pr := pick(r, portRanges)
		rl.From, rl.To = pr[0], pr[1]
	case x == 7:
		rl.Proto, rl.From, rl.To = ipproto.ICMP, 0, 0
		k := pick(r, icmp4Kinds)
		if v6 {
			rl.Proto, k = ipproto.ICMPv6, pick(r, icmp6Kinds)
		}
		rl.From, rl.To = k[0], k[1]
	case x == 8:
		rl.Proto = -1
	default:
		rl.Proto = 47 // GRE
	}
	return rl
}

// addRule adds rl unless the list has it (the validator rejects a duplicate).
func addRule(list []mRule, rl mRule) []mRule {
	if slices.Contains(list, rl) {
		return list
	}
	return append(list, rl)
}

func randGroups(r *rand.Rand) []string {
	if r.IntN(10) == 0 {
		return nil // AWS's default group
	}
	ids := []string{"sg-a", "sg-b", "sg-c"}
	r.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	return ids[:1+r.IntN(len(ids))]
}

func randPolicy(r *rand.Rand) *mPolicy {
	p := &mPolicy{}
	for _, id := range []string{"sg-a", "sg-b", "sg-c"} {
		g := mGroup{ID: id}
		for range r.IntN(6) {
			g.Ingress = addRule(g.Ingress, randRule(r))
		}
		switch r.IntN(4) {
		case 0:
			g.DefaultEgress = true
		case 1: // egress: []
		default:
			for range 1 + r.IntN(3) {
				g.Egress = addRule(g.Egress, randRule(r))
			}
		}
		p.Groups = append(p.Groups, g)
	}
	for _, itf := range modelIfaces {
		p.Ifaces = append(p.Ifaces, mIface{Name: itf.name, Groups: randGroups(r),
			Est: pick(r, []int{60, 300, 3600}), UDP: pick(r, []int{30, 45, 60}), UDPStream: pick(r, []int{60, 120, 180})})
	}
	return p
}

// mutate returns a copy of p with one to three changes: a rule added or removed, egress
// switched between omitted and explicit, an interface's groups changed.
func mutate(r *rand.Rand, p *mPolicy) *mPolicy {
	n := &mPolicy{}
	for _, g := range p.Groups {
		g.Ingress, g.Egress = slices.Clone(g.Ingress), slices.Clone(g.Egress)
		n.Groups = append(n.Groups, g)
	}
	for _, itf := range p.Ifaces {
		itf.Groups = slices.Clone(itf.Groups)
		n.Ifaces = append(n.Ifaces, itf)
	}
	for range 1 + r.IntN(3) {
		g := &n.Groups[r.IntN(len(n.Groups))]
		switch r.IntN(7) {
		case 0, 1:
			g.Ingress = addRule(g.Ingress, randRule(r))
		case 2:
			g.DefaultEgress = false
			g.Egress = addRule(g.Egress, randRule(r))
		case 3, 4:
			if len(g.Ingress) > 0 {
				i := r.IntN(len(g.Ingress))
				g.Ingress = slices.Delete(g.Ingress, i, i+1)
			}
		case 5:
			if len(g.Egress) > 0 {
				i := r.IntN(len(g.Egress))
				g.Egress = slices.Delete(g.Egress, i, i+1)
			} else {
				g.DefaultEgress = !g.DefaultEgress
			}
		default:
			itf := &n.Ifaces[r.IntN(len(n.Ifaces))]
			itf.Groups = randGroups(r)
		}
	}
	return n
}

func (rl mRule) yaml() string {
	var b strings.Builder
	switch rl.Proto {
	case -1:
		b.WriteString(`{ip_protocol: "-1"`)
	case ipproto.TCP, ipproto.UDP, ipproto.ICMP, ipproto.ICMPv6:
		name := map[int]string{ipproto.TCP: "tcp", ipproto.UDP: "udp", ipproto.ICMP: "icmp", ipproto.ICMPv6: "icmpv6"}[rl.Proto]
		fmt.Fprintf(&b, "{ip_protocol: %s, from_port: %d, to_port: %d", name, rl.From, rl.To)
	default:
		fmt.Fprintf(&b, "{ip_protocol: %d", rl.Proto)
	}
	if rl.Peer.Addr().Is4() {
		fmt.Fprintf(&b, ", cidr_ipv4: %s}", rl.Peer)
	} else {
		fmt.Fprintf(&b, `, cidr_ipv6: "%s"}`, rl.Peer)
	}
	return b.String()
}

// yaml renders p as an sgd config (SPEC 2.1).
func (p *mPolicy) yaml() string {
	var b strings.Builder
	b.WriteString("security_groups:\n")
	list := func(key string, rs []mRule) {
		if len(rs) == 0 {
			fmt.Fprintf(&b, "    %s: []\n", key)
			return
		}
		fmt.Fprintf(&b, "    %s:\n", key)
		for _, rl := range rs {
			fmt.Fprintf(&b, "      - %s\n", rl.yaml())
		}
	}
	for _, g := range p.Groups {
		fmt.Fprintf(&b, "  - group_id: %s\n", g.ID)
		list("ingress", g.Ingress)
		if !g.DefaultEgress {
			list("egress", g.Egress)
		}
	}
	b.WriteString("interfaces:\n")
	for _, itf := range p.Ifaces {
		fmt.Fprintf(&b, "  - name: %s\n    security_groups: [%s]\n", itf.Name, strings.Join(itf.Groups, ", "))
		fmt.Fprintf(&b, "    connection_tracking: {tcp_established_timeout: %d, udp_timeout: %d, udp_stream_timeout: %d}\n", itf.Est, itf.UDP, itf.UDPStream)
	}
	return b.String()
}

// config is p as the config model rules.Validate takes (a parsed file, without the
// YAML: parsing costs more than the rest of a reload, and rules' tests cover it).
func (p *mPolicy) config() rules.Config {
	var c rules.Config
	ports := func(v int) *int { return &v }
	list := func(rs []mRule) []rules.Rule {
		out := []rules.Rule{}
		for _, rl := range rs {
			r := rules.Rule{IPProtocol: rules.Protocol(strconv.Itoa(rl.Proto))}
			if rl.Proto == ipproto.TCP || rl.Proto == ipproto.UDP || ipproto.IsICMP(uint8(rl.Proto)) {
				r.FromPort, r.ToPort = ports(rl.From), ports(rl.To)
			}
			if rl.Peer.Addr().Is4() {
				r.CidrIPv4 = rl.Peer.String()
			} else {
				r.CidrIPv6 = rl.Peer.String()
			}
			out = append(out, r)
		}
		return out
	}
	for _, g := range p.Groups {
		cg := rules.Group{GroupID: g.ID, Ingress: list(g.Ingress)}
		if !g.DefaultEgress {
			eg := list(g.Egress)
			cg.Egress = &eg
		}
		c.SecurityGroups = append(c.SecurityGroups, cg)
	}
	for _, itf := range p.Ifaces {
		c.Interfaces = append(c.Interfaces, rules.Interface{Name: itf.Name, SecurityGroups: itf.Groups,
			ConnectionTracking: &rules.ConnectionTracking{TCPEstablishedTimeout: ports(itf.Est), UDPTimeout: ports(itf.UDP), UDPStreamTimeout: ports(itf.UDPStream)}})
	}
	return c
}

func (p *mPolicy) compile() (*rules.Policy, error) {
	m, err := rules.Validate(&rules.Document{File: "model", Config: p.config()}, rules.Options{})
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, p.yaml())
	}
	return rules.Compile(m, rules.Env{LocalAddrs: func(string) []netip.Addr { return modelLocal }})
}

// conv is a conversation between the host and a remote peer that the generator carries on.
type conv struct {
	proto         uint8
	iface         int // its interface, an index into modelIfaces
	local, remote netip.Addr
	lport, rport  uint16 // ports; for ICMP echo, lport is the identifier
	outbound      bool   // the host opened it
	step          int    // TCP: the next step of the script
	finByInit     bool   // TCP: the initiator sent the first FIN
}

// newConv starts a conversation on random terms or, half the time, on terms one of the
// policy's rules allows (so that fewer of its packets are merely denied).
func newConv(r *rand.Rand, pol *mPolicy) *conv {
	c := &conv{iface: r.IntN(len(modelIfaces)), outbound: r.IntN(5) < 2, local: local4, remote: pick(r, remotes4)}
	if r.IntN(3) == 0 {
		c.local, c.remote = local6, pick(r, remotes6)
	}
	c.proto = pick(r, []uint8{ipproto.TCP, ipproto.TCP, ipproto.TCP, ipproto.TCP, ipproto.UDP, ipproto.UDP, ipproto.UDP, ipproto.ICMP, ipproto.ICMP, 47})
	service := pick(r, []uint16{22, 80, 5000, 53})
	if c.outbound {
		service = pick(r, []uint16{443, 53, 80})
	}
	dir := map[bool]Dir{false: DirIngress, true: DirEgress}[c.outbound]
	if rs := pol.rulesOf(modelIfaces[c.iface].name, dir); len(rs) > 0 && r.IntN(2) == 0 {
		rl := pick(r, rs)
		var in []netip.Addr
		for _, a := range slices.Concat(remotes4, remotes6) {
			if rl.Peer.IsValid() && rl.Peer.Contains(a) {
				in = append(in, a)
			}
		}
		if len(in) > 0 {
			c.local, c.remote = local4, pick(r, in)
			if c.remote.Is6() {
				c.local = local6
			}
		}
		if rl.Proto != -1 {
			c.proto = uint8(rl.Proto)
		}
		if rl.Proto == ipproto.TCP || rl.Proto == ipproto.UDP {
			var ok []uint16
			for _, p := range []uint16{22, 80, 5000, 53, 443, uint16(rl.From)} {
				if int(p) >= rl.From && int(p) <= rl.To {
					ok = append(ok, p)
				}
			}
			service = pick(r, ok)
		}
	}
	switch {
	case ipproto.IsICMP(c.proto):
		c.proto = map[bool]uint8{true: ipproto.ICMP, false: ipproto.ICMPv6}[c.local.Is4()]
		c.lport = uint16(7 + r.IntN(2)) // the echo identifier
	case c.proto != ipproto.TCP && c.proto != ipproto.UDP:
	case c.outbound:
		c.lport, c.rport = uint16(50000+r.IntN(2)), service
	default:
		c.lport, c.rport = service, uint16(40000+r.IntN(2))
	}
	return c
}

// from returns a packet of c sent by the host (fromLocal) or by the peer, without the
// protocol's own fields.
func (c *conv) from(fromLocal bool) mPacket {
	p := mPacket{Iface: modelIfaces[c.iface].name, Proto: c.proto, Dir: DirIngress, Src: c.remote, Dst: c.local, SrcPort: c.rport, DstPort: c.lport}
	if fromLocal {
		p.Dir, p.Src, p.Dst, p.SrcPort, p.DstPort = DirEgress, c.local, c.remote, c.lport, c.rport
	}
	if ipproto.IsICMP(c.proto) {
		p.SrcPort, p.DstPort, p.ID = 0, 0, c.lport
	}
	if c.proto == 47 {
		p.SrcPort, p.DstPort = 0, 0
	}
	return p
}

// next returns c's next packet.
func (c *conv) next(r *rand.Rand) mPacket {
	var fromInit bool
	var flags uint8
	switch c.proto {
	case ipproto.TCP:
		fromInit, flags = c.tcpNext(r)
	case ipproto.ICMP, ipproto.ICMPv6:
		// Requests from the initiator and replies from the other end, mostly; now and
		// then a request from the other end or a reply from the initiator.
		x := r.IntN(100)
		fromInit = x < 50 || x >= 93
		request := x < 50 || (x >= 85 && x < 93)
		p := c.from(fromInit == c.outbound)
		switch {
		case c.proto == ipproto.ICMP && request:
			p.Type = 8
		case c.proto == ipproto.ICMPv6 && request:
			p.Type = 128
		case c.proto == ipproto.ICMPv6:
			p.Type = 129
		}
		return p
	default:
		fromInit = r.IntN(5) < 3
	}
	p := c.from(fromInit == c.outbound)
	p.Flags = flags
	return p
}

// tcpNext follows the script (three-way handshake, data, then a FIN exchange or an
// RST), or a quarter of the time sends random flags from a random side.
func (c *conv) tcpNext(r *rand.Rand) (fromInit bool, flags uint8) {
	if r.IntN(4) == 0 {
		return r.IntN(2) == 0, pick(r, []uint8{syn, synAck, ack, pshAck, finAck, rst, rstAck})
	}
	switch c.step {
	case 0:
		c.step = 1
		return true, syn
	case 1:
		c.step = 2
		return false, synAck
	case 2:
		c.step = 3
		return true, ack
	case 4:
		c.step = 5
		return !c.finByInit, ack
	case 5:
		c.step = 6
		return !c.finByInit, finAck
	case 6:
		c.step = 0
		return c.finByInit, ack
	}
	switch x := r.IntN(20); {
	case x < 12:
		return r.IntN(2) == 0, pshAck
	case x < 17:
		c.step, c.finByInit = 4, r.IntN(2) == 0
		return c.finByInit, finAck
	default:
		c.step = 0
		return r.IntN(2) == 0, rst
	}
}

// icmpErrorType returns the type of an ICMP error: one SPEC 1.4 names (unreachable,
// packet too big, time exceeded) or another (source quench, redirect, parameter problem).
func icmpErrorType(r *rand.Rand, v6 bool) uint8 {
	if v6 {
		return pick(r, []uint8{1, 2, 3, 4})
	}
	return pick(r, []uint8{3, 11, 4, 5, 12})
}

type opKind uint8

const (
	opReload opKind = iota
	opPacket
	opStep
)

// op is one step of a sequence.
type op struct {
	kind opKind
	// opReload: the whole new policy (so that dropping an earlier reload while shrinking
	// leaves this one as it was) and its compiled form.
	pol      *mPolicy
	compiled *rules.Policy
	p        mPacket // opPacket
	d        int64   // opStep: nanoseconds
	sweep    bool    // opStep: sweep the table afterwards (the daemon does every second)
}

// sequence is one seeded test case. Its first op is the initial policy.
type sequence struct {
	seed        uint64
	relatedICMP bool
	capacity    int
	ops         []op
}

const (
	modelStart = int64(time.Second)
	roomy      = 1 << 20 // a capacity no sequence fills
)

func (seq *sequence) newModel() *model {
	return &model{relatedICMP: seq.relatedICMP, capacity: seq.capacity, local: modelLocal, flows: map[mKey]*mFlow{}, now: modelStart}
}

func reloadOp(p *mPolicy) (op, error) {
	c, err := p.compile()
	return op{kind: opReload, pol: p, compiled: c}, err
}

// generate builds the sequence of seed, asking a model as it goes what the constraints
// (see the top of this file) allow.
func generate(seed uint64) (*sequence, error) {
	r := rand.New(rand.NewPCG(seed, 0x736764))
	seq := &sequence{seed: seed, relatedICMP: r.IntN(2) == 0, capacity: roomy}
	if r.IntN(3) == 0 {
		seq.capacity = 2 + r.IntN(6)
	}
	m := seq.newModel()
	pol := randPolicy(r)
	o, err := reloadOp(pol)
	if err != nil {
		return nil, err
	}
	seq.ops, m.pol = append(seq.ops, o), pol
	var convs []*conv
	for n := 10 + r.IntN(70); len(seq.ops) < n; {
		switch x := r.IntN(100); {
		case x < 6:
			pol = mutate(r, pol)
			if o, err = reloadOp(pol); err != nil {
				return nil, err
			}
			seq.ops, m.pol = append(seq.ops, o), pol
		case x < 17:
			d := m.clear(m.now+randDelta(r)) - m.now
			m.step(d)
			seq.ops = append(seq.ops, op{kind: opStep, d: d, sweep: seq.capacity != roomy || r.IntN(2) == 0})
		default:
			if len(convs) == 0 || (len(convs) < 12 && r.IntN(5) == 0) {
				convs = append(convs, newConv(r, pol))
			}
			p := randPacket(r, convs, x)
			if _, known := m.judge(&p); !known {
				p.Flags = ack // a SYN on a TCP flow of unknown state: see the constraints
				m.judge(&p)
			}
			seq.ops = append(seq.ops, op{kind: opPacket, p: p})
		}
	}
	return seq, nil
}

func randDelta(r *rand.Rand) int64 {
	sec := int64(time.Second)
	switch r.IntN(10) {
	case 0, 1, 2, 3, 4:
		return int64(time.Millisecond) + r.Int64N(sec)
	case 5, 6:
		return 5*sec + r.Int64N(95*sec)
	case 7, 8:
		return 100*sec + r.Int64N(900*sec)
	}
	return 1000*sec + r.Int64N(4000*sec)
}

// randPacket returns a packet of one of convs, or (by x, 17–99) an ICMP error about one,
// NDP or an ICMP timestamp.
func randPacket(r *rand.Rand, convs []*conv, x int) mPacket {
	c := pick(r, convs)
	switch {
	case x < 20: // neighbour discovery, either way
		p := mPacket{Iface: pick(r, modelIfaces).name, Proto: ipproto.ICMPv6, Type: uint8(133 + r.IntN(5)), Dir: DirIngress, Src: pick(r, remotes6), Dst: local6}
		if r.IntN(2) == 0 {
			p.Dir, p.Src, p.Dst = DirEgress, local6, p.Src
		}
		return p
	case x < 22: // a timestamp request: ICMP that is neither echo nor error
		p := mPacket{Iface: pick(r, modelIfaces).name, Proto: ipproto.ICMP, Type: 13, Dir: DirIngress, Src: pick(r, remotes4), Dst: local4}
		if r.IntN(2) == 0 {
			p.Dir, p.Src, p.Dst = DirEgress, local4, p.Src
		}
		return p
	case x < 34: // an ICMP error quoting a packet of c
		q := c.next(r)
		q.Iface = ""
		e := mPacket{Iface: modelIfaces[c.iface].name, Proto: ipproto.ICMP, Quote: &q, Type: icmpErrorType(r, c.local.Is6()), Code: uint8(r.IntN(2))}
		if c.local.Is6() {
			e.Proto = ipproto.ICMPv6
		}
		if r.IntN(6) == 0 {
			e.Iface = modelIfaces[1-c.iface].name
		}
		// Mostly back to the quoted packet's sender: in from a router or the peer when
		// the host sent it, out to the peer when the peer did.
		toSender := r.IntN(5) != 0
		if (q.Dir == DirEgress) == toSender {
			e.Dir, e.Src, e.Dst = DirIngress, pick(r, []netip.Addr{c.remote, routers[len(routers)-1]}), c.local
			if c.local.Is4() {
				e.Src = pick(r, []netip.Addr{c.remote, routers[0]})
			}
		} else {
			e.Dir, e.Src, e.Dst = DirEgress, c.local, c.remote
		}
		return e
	}
	p := c.next(r)
	if r.IntN(7) == 0 {
		p.Iface = modelIfaces[1-c.iface].name // the same tuple on the other interface
	}
	return p
}

// bytes builds the packet (helpers_test.go's builders).
func (p *mPacket) bytes() []byte {
	ap := func(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }
	switch p.Proto {
	case ipproto.TCP:
		return pkt("tcp", ap(p.Src, p.SrcPort), ap(p.Dst, p.DstPort), int(p.Flags))
	case ipproto.UDP:
		return pkt("udp", ap(p.Src, p.SrcPort), ap(p.Dst, p.DstPort))
	case ipproto.ICMP, ipproto.ICMPv6:
		name := "icmp"
		if p.Proto == ipproto.ICMPv6 {
			name = "icmpv6"
		}
		if p.Quote == nil {
			return pkt(name, p.Src.String(), p.Dst.String(), int(p.Type), int(p.Code), int(p.ID))
		}
		b := icmpError(name, int(p.Type), p.Src.String(), p.Dst.String(), p.Quote.bytes())
		if p.Src.Is4() {
			b[20+1] = p.Code
		} else {
			b[40+1] = p.Code
		}
		return b
	}
	return pkt("gre", p.Src.String(), p.Dst.String())
}

func (p *mPacket) String() string {
	var b strings.Builder
	if p.Iface != "" {
		fmt.Fprintf(&b, "%s %v ", p.Iface, p.Dir)
	}
	switch p.Proto {
	case ipproto.TCP, ipproto.UDP:
		name := map[uint8]string{ipproto.TCP: "tcp", ipproto.UDP: "udp"}[p.Proto]
		fmt.Fprintf(&b, "%s %v > %v", name, netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort))
		if p.Proto == ipproto.TCP {
			fmt.Fprintf(&b, " [%s]", map[uint8]string{syn: "S", synAck: "SA", ack: "A", pshAck: "PA", finAck: "FA", rst: "R", rstAck: "RA"}[p.Flags])
		}
	case ipproto.ICMP, ipproto.ICMPv6:
		fmt.Fprintf(&b, "icmp%s %v > %v type %d code %d", map[bool]string{true: "v6"}[p.Proto == ipproto.ICMPv6], p.Src, p.Dst, p.Type, p.Code)
		if isEchoMsg(p.Proto, p.Type) {
			fmt.Fprintf(&b, " id %d", p.ID)
		}
		if p.Quote != nil {
			fmt.Fprintf(&b, " quoting (%v)", p.Quote)
		}
	default:
		fmt.Fprintf(&b, "proto %d %v > %v", p.Proto, p.Src, p.Dst)
	}
	return b.String()
}

// outcomeOf is the model's name for what the engine decided.
func outcomeOf(r Reason) outcome {
	switch r {
	case ReasonNoRule:
		return outDenied
	case ReasonTableFull:
		return outFull
	case ReasonExempt:
		return outExempt
	case ReasonTracked:
		return outTracked
	case ReasonRelatedICMP:
		return outRelated
	case ReasonRule:
		return outNewFlow
	case ReasonUntracked, ReasonRuleNoFlow:
		return outNoFlow
	}
	return outOther
}

func devOf(name string) uint32 {
	for _, itf := range modelIfaces {
		if itf.name == name {
			return itf.index
		}
	}
	return 0
}

// runResult is what running ops through a fresh engine and a fresh model gave.
type runResult struct {
	fail   int  // the first op the two disagree on; -1 when none
	valid  bool // false: an op the model cannot answer (only a shrinking candidate has one)
	counts [outOther + 1]int
	log    []string // with verbose: one line per op, both answers
}

// run plays ops on a new engine and a new model and compares every packet's answers.
func (seq *sequence) run(ops []op, verbose bool) runResult {
	clk := &fakeClock{t: modelStart}
	e := New(Options{Table: conntrack.New(conntrack.Config{Capacity: seq.capacity, Shards: 4}), Now: clk.now, AllowRelatedICMP: seq.relatedICMP,
		IfName: func(i uint32) (string, bool) {
			for _, itf := range modelIfaces {
				if itf.index == i {
					return itf.name, true
				}
			}
			return "", false
		}})
	w := e.NewWorker()
	host := Host{Index: map[string]uint32{}, Local: modelLocal}
	for _, itf := range modelIfaces {
		host.Index[itf.name] = itf.index
	}
	m := seq.newModel()
	res := runResult{fail: -1, valid: true}
	logf := func(format string, a ...any) {
		if verbose {
			res.log = append(res.log, fmt.Sprintf(format, a...))
		}
	}
	for i := range ops {
		o := &ops[i]
		switch o.kind {
		case opReload:
			e.SetPolicy(o.compiled, host)
			m.pol = o.pol
			if verbose {
				logf("%3d reload:\n%s", i, indent(o.pol.yaml(), "      "))
			}
		case opStep:
			if !m.step(o.d) {
				res.valid = false
				return res
			}
			clk.t = m.now
			if o.sweep {
				e.Table().Sweep(clk.t)
			}
			logf("%3d clock +%v (now %v)%s", i, time.Duration(o.d), time.Duration(m.now-modelStart), map[bool]string{true: ", sweep"}[o.sweep])
		case opPacket:
			got := judgeAt(w, o.p.bytes(), devOf(o.p.Iface), o.p.Dir)
			want, known := m.judge(&o.p)
			if !known {
				res.valid = false
				return res
			}
			res.counts[want]++
			differs := outcomeOf(got.Reason) != want || (got.Verdict == Accept) != want.accept()
			mark := ""
			if differs {
				mark = "   <<< differs"
			}
			logf("%3d %v: engine %v/%v, model %s (%s)%s", i, &o.p, got.Verdict, got.Reason, verdictOf(want), want, mark)
			if differs {
				res.fail = i
				return res
			}
		}
	}
	return res
}

func verdictOf(o outcome) Verdict {
	if o.accept() {
		return Accept
	}
	return Drop
}

func indent(s, pre string) string {
	return pre + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pre)
}

// shrink returns the shortest prefix of a failing run it finds by dropping ops (never the
// first: the initial policy) while the run still fails and the model can answer it.
func (seq *sequence) shrink(fail int) []op {
	ops := slices.Clone(seq.ops[:fail+1])
	for chunk := max(len(ops)/2, 1); ; chunk = max(chunk/2, 1) {
		changed := false
		for i := 1; i+chunk <= len(ops); {
			cand := slices.Concat(ops[:i], ops[i+chunk:])
			if res := seq.run(cand, false); res.valid && res.fail >= 0 {
				ops, changed = cand[:res.fail+1], true
			} else {
				i += chunk
			}
		}
		if chunk == 1 && !changed {
			return ops
		}
	}
}

func (seq *sequence) report(ops []op) string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d (again: go test ./internal/filter -run TestModelDifferential -sgd.seed=%d -sgd.seqs=1)\n", seq.seed, seq.seed)
	fmt.Fprintf(&b, "allow_related_icmp %v, capacity %d; the shortest failing prefix found, %d of %d ops:\n", seq.relatedICMP, seq.capacity, len(ops), len(seq.ops))
	for _, l := range seq.run(ops, true).log {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// TestModelDifferential runs -sgd.seqs sequences (a tenth with -short) from -sgd.seed on.
func TestModelDifferential(t *testing.T) {
	n := *modelSeqs
	if testing.Short() {
		n = max(n/10, 1)
	}
	var (
		next, nops, failed atomic.Int64
		mu                 sync.Mutex
		reports            = map[uint64]string{}
		counts             [outOther + 1]int
		wg                 sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || failed.Load() >= 3 {
					return
				}
				seed := *modelSeed + uint64(i)
				seq, err := generate(seed)
				var res runResult
				if err == nil {
					res = seq.run(seq.ops, false)
				}
				var msg string
				switch {
				case err != nil:
					msg = fmt.Sprintf("seed %d: the generator's policy does not compile: %v", seed, err)
				case !res.valid:
					msg = fmt.Sprintf("seed %d: the generator broke its own constraints:\n%s", seed, strings.Join(seq.run(seq.ops, true).log, "\n"))
				case res.fail >= 0:
					msg = seq.report(seq.shrink(res.fail))
				default:
					mu.Lock()
					for o, c := range res.counts {
						counts[o] += c
					}
					mu.Unlock()
					nops.Add(int64(len(seq.ops)))
					continue
				}
				failed.Add(1)
				mu.Lock()
				reports[seed] = msg
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, seed := range slices.Sorted(maps.Keys(reports)) {
		t.Errorf("engine and model differ:\n%s", reports[seed])
	}
	t.Logf("%d sequences from seed %d, %d ops; packets by the model's answer: %v", n, *modelSeed, nops.Load(), countsText(counts))
	if n >= 200 && len(reports) == 0 {
		for o, c := range counts[:outOther] {
			if c == 0 {
				t.Errorf("no packet got the answer %q: the generator no longer reaches it", outcome(o))
			}
		}
	}
}

func countsText(c [outOther + 1]int) string {
	var parts []string
	for o, n := range c[:outOther] {
		parts = append(parts, outcome(o).String()+" "+strconv.Itoa(n))
	}
	return strings.Join(parts, ", ")
}
