package rules

import (
	"cmp"
	"container/heap"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/gaissmai/bart"
	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// Env is what Compile needs from the host: the addresses of its own interfaces, which a
// rule referencing a group carried by that interface matches (SPEC 1.1). A nil LocalAddrs
// means no local addresses (as for `sgd check` on another machine).
type Env struct {
	LocalAddrs func(iface string) []netip.Addr
}

// RuleInfo describes a compiled rule for reports, metrics and `sgd explain`.
type RuleInfo struct {
	ID        RuleID
	Group     int // index into Policy.Groups
	GroupID   string
	GroupName string
	Label     string // "sg-web/ingress/2": where the rule stands, for people (metrics and logs use Rule.ID)
	Rule      NRule
	Prefixes  []netip.Prefix // what the peer expanded to at compile time
}

// GroupInfo is a compiled group.
type GroupInfo struct {
	ID, Name string
}

// Policy is a compiled configuration: immutable, safe for concurrent use by any number of
// readers without locks. A reload compiles a new Policy and publishes it whole.
type Policy struct {
	Model   *Model
	Rules   []RuleInfo // index = RuleID; Rules[0] is unused
	Groups  []GroupInfo
	ifaces  map[string]*Iface // interfaces and ports
	names   []string
	ports   []string
	devices []string // names, then ports
}

// Iface is the compiled policy of one interface.
type Iface struct {
	Name     string
	Groups   []string
	Timeouts Timeouts
	// Port is what an instance's port has besides its groups (nil for this host's
	// interfaces).
	Port *PortInfo
	dir  [2]*dirPolicy
}

// PortInfo is the instance side of a compiled port (SPEC 4.3).
type PortInfo struct {
	InstanceID, ENI string
	Addrs           []netip.Addr
	SourceDestCheck bool
}

// dirPolicy judges one direction of one interface.
type dirPolicy struct {
	trie    bart.Table[*entry]
	wild    [2]*entry     // the 0.0.0.0/0 and ::/0 entries: only rules whose peer is everything
	openAll [2][2]bool    // [v4,v6][tcp,udp]: allows the protocol on all ports to/from everywhere
	blocks  [][256]RuleID // the policy's port-map blocks (portMap); shared by every dirPolicy
	rules   []RuleID      // the rules merged here, for explain and tests
}

// Interface returns the compiled interface or port, or nil when the config lists neither
// by that name (a device is one or the other, never both).
func (p *Policy) Interface(name string) *Iface { return p.ifaces[name] }

// InterfaceNames lists the configured interfaces (this host's, not ports) in config order.
func (p *Policy) InterfaceNames() []string { return p.names }

// PortNames lists the configured ports in config order.
func (p *Policy) PortNames() []string { return p.ports }

// DeviceNames lists every device the policy filters: the interfaces, then the ports.
func (p *Policy) DeviceNames() []string { return p.devices }

// RuleIDs lists the rules merged into one direction of the interface, in order.
func (i *Iface) RuleIDs(d Direction) []RuleID { return i.dir[d&1].rules }

// Compile builds the immutable Policy for a validated model.
func Compile(m *Model, env Env) (*Policy, error) {
	p := &Policy{Model: m, Rules: make([]RuleInfo, 1), ifaces: map[string]*Iface{}}
	groupIdx := map[string]int{}
	for gi, g := range m.Groups {
		groupIdx[g.ID] = gi
		p.Groups = append(p.Groups, GroupInfo{ID: g.ID, Name: g.Name})
	}

	// Addresses that carry each group: members, local interfaces listing it, and the
	// ports' instances (SPEC 4.3: a port's addresses are members of its groups).
	carriers := map[string][]netip.Prefix{}
	for _, pt := range m.Ports {
		for _, g := range pt.Groups {
			for _, a := range pt.Addrs {
				carriers[g] = append(carriers[g], netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	for _, mb := range m.Members {
		for _, g := range mb.Groups {
			carriers[g] = append(carriers[g], netip.PrefixFrom(mb.Addr, mb.Addr.BitLen()))
		}
	}
	for _, itf := range m.Interfaces {
		if env.LocalAddrs == nil {
			break
		}
		addrs := env.LocalAddrs(itf.Name)
		for _, g := range itf.Groups {
			for _, a := range addrs {
				a = a.Unmap().WithZone("")
				carriers[g] = append(carriers[g], netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}

	// Number every rule once, in config order; expand its peer.
	byGroup := map[string][2][]RuleID{}
	for gi, g := range m.Groups {
		var ids [2][]RuleID
		for d, list := range [2][]NRule{g.Ingress, g.Egress} {
			for _, r := range list {
				id := RuleID(len(p.Rules))
				var pfx []netip.Prefix
				switch r.Peer.Kind {
				case PeerCIDR:
					pfx = []netip.Prefix{r.Peer.Prefix}
				case PeerPrefixList:
					pfx = m.PrefixLists[r.Peer.ID]
				case PeerGroup:
					pfx = carriers[r.Peer.ID]
				}
				label := fmt.Sprintf("%s/%s/%d", g.ID, Direction(d), r.Index)
				p.Rules = append(p.Rules, RuleInfo{ID: id, Group: gi, GroupID: g.ID, GroupName: g.Name, Label: label, Rule: r, Prefixes: pfx})
				ids[d] = append(ids[d], id)
			}
		}
		byGroup[g.ID] = ids
	}

	// Interfaces with the same groups share their compiled directions.
	shared := map[string][2]*dirPolicy{}
	tb := &tables{blocks: make([][256]RuleID, 1, 1+len(p.Rules)), uniform: map[RuleID]uint32{}}
	attach := func(itf *IfaceModel) *Iface {
		key := strings.Join(itf.Groups, ",")
		dirs, ok := shared[key]
		if !ok {
			for d := range 2 {
				var ids []RuleID
				for _, g := range itf.Groups {
					ids = append(ids, byGroup[g][d]...)
				}
				dirs[d] = p.compileDir(ids, tb)
			}
			shared[key] = dirs
		}
		c := &Iface{Name: itf.Name, Groups: itf.Groups, Timeouts: itf.Timeouts, dir: dirs}
		p.ifaces[itf.Name] = c
		return c
	}
	for i := range m.Interfaces {
		attach(&m.Interfaces[i])
		p.names = append(p.names, m.Interfaces[i].Name)
	}
	for i := range m.Ports {
		pt := &m.Ports[i]
		attach(&pt.IfaceModel).Port = &PortInfo{InstanceID: pt.InstanceID, ENI: pt.ENI, Addrs: pt.Addrs, SourceDestCheck: pt.SourceDestCheck}
		p.ports = append(p.ports, pt.Name)
	}
	p.devices = append(slices.Clone(p.names), p.ports...)
	for _, dirs := range shared {
		dirs[0].blocks, dirs[1].blocks = tb.blocks, tb.blocks
	}
	return p, nil
}

type interval struct {
	lo, hi int // inclusive, 0–65535
	rule   RuleID
}

// builder collects, for one prefix, the rules whose peer covers it.
type builder struct {
	all                   RuleID
	tcp, udp, icmp, icmp6 []interval
	other                 []interval // lo = hi = protocol number
}

func minRule(a, b RuleID) RuleID {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

func (b *builder) add(id RuleID, r *NRule) {
	switch r.Proto {
	case ipproto.All:
		b.all = minRule(b.all, id)
	case ipproto.TCP:
		b.tcp = append(b.tcp, interval{r.From, r.To, id})
	case ipproto.UDP:
		b.udp = append(b.udp, interval{r.From, r.To, id})
	case ipproto.ICMP, ipproto.ICMPv6:
		iv := icmpInterval(r.From, r.To, id)
		if r.Proto == ipproto.ICMP {
			b.icmp = append(b.icmp, iv)
		} else {
			b.icmp6 = append(b.icmp6, iv)
		}
	default:
		b.other = append(b.other, interval{r.Proto, r.Proto, id})
	}
}

// icmpInterval maps an ICMP type/code pair (-1 = all) onto the 16-bit key type<<8|code.
func icmpInterval(t, c int, id RuleID) interval {
	switch {
	case t < 0:
		return interval{0, 0xffff, id}
	case c < 0:
		return interval{t << 8, t<<8 | 0xff, id}
	}
	return interval{t<<8 | c, t<<8 | c, id}
}

// build fills e with parent's rules (nil: none) and the prefix's own rules b.
func (e *entry) build(parent *entry, b *builder, tb *tables) {
	var up entry
	if parent != nil {
		up = *parent
	}
	e.all = minRule(b.all, up.all)
	e.tcp = tb.overlay(up.tcp, b.tcp)
	e.udp = tb.overlay(up.udp, b.udp)
	e.icmp = tb.overlay(up.icmp, b.icmp)
	e.icmp6 = tb.overlay(up.icmp6, b.icmp6)
	e.other = up.other
	if len(b.other) > 0 {
		o := new([256]RuleID)
		if up.other != nil {
			*o = *up.other
		}
		for _, iv := range b.other {
			o[iv.lo] = minRule(o[iv.lo], iv.rule)
		}
		e.other = o
	}
}

func (p *Policy) compileDir(ids []RuleID, tb *tables) *dirPolicy {
	dp := &dirPolicy{rules: ids}
	byPrefix := map[netip.Prefix]*builder{}
	for _, id := range ids {
		ri := &p.Rules[id]
		for _, pfx := range ri.Prefixes {
			b := byPrefix[pfx]
			if b == nil {
				b = &builder{}
				byPrefix[pfx] = b
			}
			b.add(id, &ri.Rule)
			if pfx.Bits() == 0 {
				fam := 0
				if !pfx.Addr().Is4() {
					fam = 1
				}
				switch {
				case ri.Rule.Proto == ipproto.All:
					dp.openAll[fam] = [2]bool{true, true}
				case (ri.Rule.Proto == ipproto.TCP || ri.Rule.Proto == ipproto.UDP) && ri.Rule.From == 0 && ri.Rule.To == 65535:
					dp.openAll[fam][ri.Rule.Proto/ipproto.UDP] = true // tcp 6/17 = 0, udp 17/17 = 1
				}
			}
		}
	}
	// Push supernet rules down: shortest prefixes first, so that each prefix's longest
	// strict supernet is already built and carries everything above it. A prefix's entry
	// is its parent's with its own rules laid over (overlay): the tables it adds nothing
	// to, and the 256-key blocks its own rules do not touch, are shared with the parent.
	// Compiling a prefix thus costs what its own rules cost, not what its supernets hold
	// (before, every /32 re-swept all the 0.0.0.0/0 rules: 10 000 rules took ~1 s).
	prefixes := make([]netip.Prefix, 0, len(byPrefix))
	for pfx := range byPrefix {
		prefixes = append(prefixes, pfx)
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if c := cmp.Compare(a.Bits(), b.Bits()); c != 0 {
			return c
		}
		return a.Addr().Compare(b.Addr())
	})
	entries := make([]entry, len(prefixes))
	for i, pfx := range prefixes {
		var parent *entry
		if _, up, ok := dp.trie.LookupPrefixLPM(pfx); ok {
			parent = up
		}
		e := &entries[i]
		e.build(parent, byPrefix[pfx], tb)
		dp.trie.Insert(pfx, e)
	}
	dp.wild[0], _ = dp.trie.Get(netip.PrefixFrom(netip.IPv4Unspecified(), 0))
	dp.wild[1], _ = dp.trie.Get(netip.PrefixFrom(netip.IPv6Unspecified(), 0))
	return dp
}

// segment is a run of keys [lo, hi] whose first allowing rule is rule.
type segment struct {
	lo, hi int
	rule   RuleID
}

// segments turns overlapping intervals into disjoint runs labelled with the lowest rule
// covering them: a sweep over the interval ends with a min-heap of open rules (lazy
// deletion), O(k log k) for k intervals.
func segments(ivs []interval) []segment {
	type event struct {
		pos  int
		open bool
		rule RuleID
	}
	ev := make([]event, 0, 2*len(ivs))
	for _, iv := range ivs {
		ev = append(ev, event{iv.lo, true, iv.rule}, event{iv.hi + 1, false, iv.rule})
	}
	slices.SortFunc(ev, func(a, b event) int { return cmp.Compare(a.pos, b.pos) })
	var h ruleHeap
	closed := map[RuleID]int{}
	var out []segment
	for i := 0; i < len(ev); {
		pos := ev[i].pos
		for ; i < len(ev) && ev[i].pos == pos; i++ {
			if ev[i].open {
				heap.Push(&h, ev[i].rule)
			} else {
				closed[ev[i].rule]++
			}
		}
		for h.Len() > 0 && closed[h[0]] > 0 {
			closed[h[0]]--
			heap.Pop(&h)
		}
		if h.Len() == 0 || pos > 0xffff {
			continue
		}
		end := 0xffff
		if i < len(ev) {
			end = ev[i].pos - 1
		}
		if n := len(out); n > 0 && out[n-1].rule == h[0] && out[n-1].hi == pos-1 {
			out[n-1].hi = end
		} else {
			out = append(out, segment{pos, end, h[0]})
		}
	}
	return out
}

type ruleHeap []RuleID

func (h ruleHeap) Len() int           { return len(h) }
func (h ruleHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h ruleHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *ruleHeap) Push(x any)        { *h = append(*h, x.(RuleID)) }
func (h *ruleHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// tables holds, while compiling, the blocks every port map of the policy points into:
// blocks[0] is empty (no rule for any key), and a block one rule covers entirely is
// stored once (uniform). Blocks are plain arrays indexed by uint32, so the port maps
// hold no pointers: cheap to allocate and copy, and nothing for the GC to scan.
type tables struct {
	blocks  [][256]RuleID
	uniform map[RuleID]uint32
}

// overlay returns parent's map (nil: empty) with the intervals ivs laid over it, the lower
// rule winning where both allow. parent is never written: blocks that ivs do not touch,
// or that already hold ivs' rule or a lower one everywhere, are shared with it.
func (tb *tables) overlay(parent *portMap, ivs []interval) *portMap {
	if len(ivs) == 0 {
		return parent
	}
	segs := []segment{{ivs[0].lo, ivs[0].hi, ivs[0].rule}}
	if len(ivs) > 1 {
		segs = segments(ivs)
	}
	m := &portMap{}
	if parent != nil {
		m.hi = parent.hi
	}
	var owned [256]bool // buckets whose block this call allocated: the only ones it writes
	for _, s := range segs {
		for pos := s.lo; pos <= s.hi; {
			bucket := pos >> 8
			end := bucket<<8 | 0xff
			last := min(s.hi, end)
			bi := m.hi[bucket]
			whole := pos == bucket<<8 && last == end // segments are disjoint: no other touches it
			switch {
			case whole && bi == 0:
				m.hi[bucket] = tb.uniformBlock(s.rule)
			case whole && atMost(&tb.blocks[bi], s.rule):
				// every key already has this rule or a lower one: share the block
			default:
				if !owned[bucket] {
					tb.blocks = append(tb.blocks, tb.blocks[bi]) // copy on write; block 0 is empty
					bi = uint32(len(tb.blocks) - 1)
					m.hi[bucket], owned[bucket] = bi, true
				}
				blk := &tb.blocks[bi]
				for k := pos; k <= last; k++ {
					blk[k&0xff] = minRule(blk[k&0xff], s.rule)
				}
			}
			pos = last + 1
		}
	}
	return m
}

// uniformBlock is the block mapping all 256 keys to rule.
func (tb *tables) uniformBlock(rule RuleID) uint32 {
	if i, ok := tb.uniform[rule]; ok {
		return i
	}
	var u [256]RuleID
	for k := range u {
		u[k] = rule
	}
	tb.blocks = append(tb.blocks, u)
	i := uint32(len(tb.blocks) - 1)
	tb.uniform[rule] = i
	return i
}

// atMost: every key of blk is allowed by rule or by a lower one.
func atMost(blk *[256]RuleID, rule RuleID) bool {
	for _, r := range blk {
		if r == 0 || r > rule {
			return false
		}
	}
	return true
}
