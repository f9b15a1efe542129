package rules

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"go.yaml.in/yaml/v3"
)

// The differential test of SPEC 3.2: the compiled matcher (Iface.Decide) agrees with the
// reference evaluator (reference_test.go) on thousands of random rule sets and packets —
// on allow/deny, on which rule allowed (the lowest id), and on untracked.
//
// Rule sets are drawn from a small universe of addresses so that prefixes nest and
// overlap (/0 to /32 and /128, both families, non-canonical spellings), and packets are
// biased to the edges of what the rules name: the first and last address of every prefix
// and their neighbours, from_port/to_port ± 1, ICMP type/code ± 1.

// diffSeed is the base seed; case i of a run uses PCG(diffSeed, i). SGD_DIFF_SEED
// overrides it to explore further: SGD_DIFF_SEED=7 go test -run Differential.
func diffSeed(t testing.TB) uint64 {
	if s := os.Getenv("SGD_DIFF_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SGD_DIFF_SEED=%q: %v", s, err)
		}
		return n
	}
	return 20240601
}

func TestDifferential(t *testing.T) {
	cases, packets := 2500, 200
	if testing.Short() {
		cases = 300
	}
	seed := diffSeed(t)
	failures := 0
	for i := range cases {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		g := &cfgGen{r: r, maxRules: 8}
		if i%50 == 49 {
			g.maxRules = 150 // a few large sets: deep tries, many overlapping port ranges
		}
		c, localAddrs := g.config()
		via := "struct"
		switch i % 10 { // one case in ten through each text form: the loader is slow
		case 1:
			via = "yaml"
		case 2:
			via = "json"
		}
		m := g.validate(t, c, via, seed, i)
		if m == nil {
			failures++
			continue
		}
		env := Env{LocalAddrs: func(name string) []netip.Addr { return localAddrs[name] }}
		if i%7 == 0 {
			env = Env{} // no local addresses: self-references match members only
			localAddrs = nil
		}
		p, err := Compile(m, env)
		if err != nil {
			t.Fatalf("seed %d case %d: Compile: %v", seed, i, err)
		}
		ref := &reference{m: m, locals: env.LocalAddrs}
		pk := g.packetSource(m, localAddrs)
		bad := 0
		for range packets {
			iface := m.Interfaces[r.IntN(len(m.Interfaces))].Name
			k := pk.next()
			if !checkAgainstReference(t, p, ref, iface, k, fmt.Sprintf("seed %d case %d (%s)", seed, i, via)) {
				bad++
				if bad >= 3 {
					break
				}
			}
		}
		if bad > 0 {
			out, _ := yaml.Marshal(c)
			t.Logf("seed %d case %d config:\n%s\nlocal addresses: %v", seed, i, out, localAddrs)
			failures++
		}
		if failures >= 5 {
			t.Fatalf("stopping after %d failing cases", failures)
		}
	}
}

// cfgGen draws random, valid configurations.
type cfgGen struct {
	r        *rand.Rand
	maxRules int
	groups   []string
	lists    []string
	seen     map[string]bool // rule keys of the group and direction being drawn
}

var (
	anchors4 = []string{"0.0.0.0", "10.0.0.0", "10.1.2.3", "10.1.2.255", "10.1.3.0", "10.255.255.255",
		"172.16.5.4", "192.0.2.0", "192.0.2.128", "192.0.2.200", "198.51.100.7", "203.0.113.42", "255.255.255.255"}
	anchors6 = []string{"::", "::1", "2001:db8::", "2001:db8::1", "2001:db8::ff", "2001:db8:1::", "2001:db8:1:2::ff",
		"2001:db8:100::5", "2001:db8:ffff::", "fe80::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}
	bits4 = []int{0, 0, 1, 7, 8, 12, 16, 20, 23, 24, 25, 28, 30, 31, 32, 32}
	bits6 = []int{0, 0, 1, 16, 32, 32, 48, 56, 64, 96, 112, 120, 127, 128, 128}
	// Ports at the usual edges, so that ranges touch and overlap.
	portPicks = []int{0, 1, 21, 22, 23, 79, 80, 81, 255, 256, 443, 1023, 1024, 8080, 65279, 65280, 65534, 65535}
	icmpTypes = []int{-1, 0, 3, 8, 11, 128, 129, 255}
	icmpCodes = []int{-1, 0, 1, 4, 8, 255}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// addr draws an anchor, sometimes nudged to a neighbour.
func (g *cfgGen) addr(v6 bool) netip.Addr {
	a := netip.MustParseAddr(pick(g.r, anchors4))
	if v6 {
		a = netip.MustParseAddr(pick(g.r, anchors6))
	}
	switch g.r.IntN(6) {
	case 0:
		if n := a.Next(); n.IsValid() {
			a = n
		}
	case 1:
		if n := a.Prev(); n.IsValid() {
			a = n
		}
	}
	return a
}

// prefix draws a CIDR as a user might write it: often not canonical (10.1.2.3/8).
func (g *cfgGen) prefix(v6 bool) string {
	a := g.addr(v6)
	bits := pick(g.r, bits4)
	if v6 {
		bits = pick(g.r, bits6)
	}
	p := netip.PrefixFrom(a, bits)
	if g.r.IntN(2) == 0 {
		p = p.Masked()
	}
	return p.String()
}

func intp(n int) *int { return &n }

// rule draws one rule and a key that is equal for rules Validate calls duplicates.
func (g *cfgGen) rule(self string) (Rule, string) {
	r := g.r
	var x Rule
	var proto, from, to int
	switch r.IntN(10) {
	case 0, 1, 2:
		x.IPProtocol, proto = Protocol(pick(r, []string{"tcp", "TCP", "6"})), ipproto.TCP
	case 3, 4:
		x.IPProtocol, proto = Protocol(pick(r, []string{"udp", "17"})), ipproto.UDP
	case 5:
		x.IPProtocol, proto = Protocol(pick(r, []string{"icmp", "1"})), ipproto.ICMP
	case 6:
		x.IPProtocol, proto = Protocol(pick(r, []string{"icmpv6", "58"})), ipproto.ICMPv6
	case 7:
		x.IPProtocol, proto = Protocol(pick(r, []string{"-1", "all"})), ipproto.All
	default:
		x.IPProtocol = Protocol(pick(r, []string{"47", "50", "0", "132", "255"}))
		proto, _ = x.IPProtocol.Number()
	}
	switch proto {
	case ipproto.TCP, ipproto.UDP:
		if r.IntN(8) == 0 {
			from, to = 0, 65535
		} else {
			from, to = pick(r, portPicks), pick(r, portPicks)
			if r.IntN(4) == 0 {
				to = r.IntN(65536)
			}
			if from > to {
				from, to = to, from
			}
		}
		x.FromPort, x.ToPort = intp(from), intp(to)
	case ipproto.ICMP, ipproto.ICMPv6:
		from, to = pick(r, icmpTypes), pick(r, icmpCodes)
		if from == -1 {
			to = -1
		}
		if proto == ipproto.ICMPv6 && r.IntN(4) == 0 {
			from, to = -1, -1 // ports omitted: all types and codes
		} else {
			x.FromPort = intp(from)
			if !(proto == ipproto.ICMPv6 && to == -1 && r.IntN(2) == 0) {
				x.ToPort = intp(to) // icmpv6 may omit to_port: all codes
			}
		}
	default:
		if r.IntN(3) == 0 {
			x.FromPort, x.ToPort = intp(r.IntN(100)), intp(100+r.IntN(100)) // ignored
		}
	}
	var peer string
	switch n := r.IntN(20); {
	case n < 8:
		x.CidrIPv4 = g.prefix(false)
		peer = "c" + netip.MustParsePrefix(x.CidrIPv4).Masked().String()
	case n < 14:
		x.CidrIPv6 = g.prefix(true)
		peer = "c" + netip.MustParsePrefix(x.CidrIPv6).Masked().String()
	case n < 17 && len(g.lists) > 0:
		x.PrefixListID = pick(r, g.lists)
		peer = "p" + x.PrefixListID
	default:
		x.ReferencedGroupID = pick(r, g.groups)
		if r.IntN(3) == 0 {
			x.ReferencedGroupID = self
		}
		peer = "g" + x.ReferencedGroupID
	}
	if r.IntN(5) == 0 {
		x.Description = "rule " + strconv.Itoa(r.IntN(1000))
	}
	return x, fmt.Sprintf("%d|%d|%d|%s", proto, from, to, peer)
}

// openRule draws a rule that opens a protocol on all ports to or from everywhere, the
// other half of an untracked flow (SPEC 1.4).
func (g *cfgGen) openRule() (Rule, string) {
	r := g.r
	x := Rule{IPProtocol: Protocol(pick(r, []string{"-1", "tcp", "udp", "6", "17"}))}
	proto, _ := x.IPProtocol.Number()
	from, to := 0, 0
	if proto != ipproto.All {
		from, to = 0, 65535
		x.FromPort, x.ToPort = intp(from), intp(to)
	}
	peer := "c0.0.0.0/0"
	if r.IntN(2) == 0 {
		x.CidrIPv4 = "0.0.0.0/0"
	} else {
		x.CidrIPv6, peer = "::/0", "c::/0"
	}
	return x, fmt.Sprintf("%d|%d|%d|%s", proto, from, to, peer)
}

func (g *cfgGen) rules(self string, n int) []Rule {
	out := []Rule{} // never nil: nil and empty marshal differently
	g.seen = map[string]bool{}
	for j := range n {
		x, key := g.rule(self)
		if j == 0 && g.r.IntN(4) == 0 {
			x, key = g.openRule()
		}
		if g.seen[key] {
			continue // a duplicate is a validation error, tested elsewhere
		}
		g.seen[key] = true
		out = append(out, x)
	}
	return out
}

// config draws a configuration and the local addresses of its interfaces.
func (g *cfgGen) config() (Config, map[string][]netip.Addr) {
	r := g.r
	var c Config
	nGroups := 1 + r.IntN(4)
	g.groups = nil
	for i := range nGroups {
		g.groups = append(g.groups, fmt.Sprintf("sg-g%d", i))
	}
	g.lists = nil
	for i := range r.IntN(4) {
		id := fmt.Sprintf("pl-l%d", i)
		g.lists = append(g.lists, id)
		pl := PrefixList{PrefixListID: id}
		for range 1 + r.IntN(4) {
			pl.Entries = append(pl.Entries, g.prefix(r.IntN(2) == 0))
		}
		c.PrefixLists = append(c.PrefixLists, pl)
	}
	namedDefault := r.IntN(5) == 0
	for i, id := range g.groups {
		gr := Group{GroupID: id, Ingress: g.rules(id, r.IntN(g.maxRules+1))}
		if namedDefault && i == nGroups-1 {
			gr.GroupName = "default"
		}
		switch r.IntN(8) {
		case 0, 1:
			// egress omitted: AWS's default egress rules
		case 2:
			gr.Egress = &[]Rule{} // egress: [] — no egress at all
		default:
			eg := g.rules(id, r.IntN(g.maxRules+1))
			gr.Egress = &eg
		}
		c.SecurityGroups = append(c.SecurityGroups, gr)
	}
	localAddrs := map[string][]netip.Addr{}
	for i := range 1 + r.IntN(3) {
		name := fmt.Sprintf("eth%d", i)
		itf := Interface{Name: name}
		if r.IntN(6) != 0 { // else: no groups, the interface gets `default`
			perm := r.Perm(nGroups)
			for _, gi := range perm[:1+r.IntN(nGroups)] {
				itf.SecurityGroups = append(itf.SecurityGroups, g.groups[gi])
			}
			if !namedDefault && r.IntN(8) == 0 {
				itf.SecurityGroups = append(itf.SecurityGroups, "default") // AWS's default group
			}
		}
		c.Interfaces = append(c.Interfaces, itf)
		for range r.IntN(3) {
			localAddrs[name] = append(localAddrs[name], g.addr(r.IntN(2) == 0))
		}
	}
	for range r.IntN(4) {
		mb := Member{Address: g.addr(r.IntN(2) == 0).String()}
		perm := r.Perm(nGroups)
		for _, gi := range perm[:1+r.IntN(min(2, nGroups))] {
			mb.SecurityGroups = append(mb.SecurityGroups, g.groups[gi])
		}
		if !namedDefault && r.IntN(6) == 0 {
			mb.SecurityGroups = append(mb.SecurityGroups, "default") // AWS's default group
		}
		c.Members = append(c.Members, mb)
	}
	return c, localAddrs
}

// validate turns c into a model the way via says: directly, or through YAML or JSON text
// and Parse, so that the loader is exercised too. A drawn config is always valid.
func (g *cfgGen) validate(t *testing.T, c Config, via string, seed uint64, i int) *Model {
	t.Helper()
	doc := &Document{File: "generated", Config: c}
	var text []byte
	var err error
	switch via {
	case "yaml":
		text, err = yaml.Marshal(c)
	case "json":
		text, err = json.Marshal(c)
	}
	if err != nil {
		t.Fatalf("seed %d case %d: marshal %s: %v", seed, i, via, err)
	}
	if text != nil {
		if doc, err = Parse("generated."+via, text); err != nil {
			t.Errorf("seed %d case %d: Parse(%s) = %v; want no error\n%s", seed, i, via, err, text)
			return nil
		}
	}
	m, err := Validate(doc, Options{Unlimited: true})
	if err != nil {
		out, _ := yaml.Marshal(c)
		t.Errorf("seed %d case %d: Validate = %v; want no error\n%s", seed, i, err, out)
		return nil
	}
	return m
}

// packets draws packets biased to the edges of what a model's rules name.
type packets struct {
	r      *rand.Rand
	addrs  []netip.Addr
	ports  []int
	types  []int
	codes  []int
	protos []int
}

func (g *cfgGen) packetSource(m *Model, localAddrs map[string][]netip.Addr) *packets {
	pk := &packets{r: g.r, protos: []int{ipproto.TCP, ipproto.UDP, ipproto.ICMP, ipproto.ICMPv6, 47, 50, 0, 132, 255, 2}}
	addPrefix := func(p netip.Prefix) {
		if !p.IsValid() {
			return
		}
		first, last := p.Masked().Addr(), lastAddr(p)
		pk.addrs = append(pk.addrs, first, last)
		if a := first.Prev(); a.IsValid() {
			pk.addrs = append(pk.addrs, a)
		}
		if a := last.Next(); a.IsValid() {
			pk.addrs = append(pk.addrs, a)
		}
	}
	addPort := func(ps ...int) {
		for _, p := range ps {
			if p >= 0 && p <= 65535 {
				pk.ports = append(pk.ports, p)
			}
		}
	}
	for _, gm := range m.Groups {
		for _, list := range [][]NRule{gm.Ingress, gm.Egress} {
			for _, r := range list {
				if r.Peer.Kind == PeerCIDR {
					addPrefix(r.Peer.Prefix)
				}
				switch r.Proto {
				case ipproto.TCP, ipproto.UDP:
					addPort(r.From-1, r.From, r.From+1, r.To-1, r.To, r.To+1)
				case ipproto.ICMP, ipproto.ICMPv6:
					pk.types = append(pk.types, r.From, r.From+1, r.To) // codes double as types
					pk.codes = append(pk.codes, r.To-1, r.To, r.To+1, r.From)
				default:
					if r.Proto >= 0 {
						pk.protos = append(pk.protos, r.Proto)
					}
				}
			}
		}
	}
	for _, list := range m.PrefixLists {
		for _, p := range list {
			addPrefix(p)
		}
	}
	for _, mb := range m.Members {
		pk.addrs = append(pk.addrs, mb.Addr, mb.Addr.Next(), mb.Addr.Prev())
	}
	for _, as := range localAddrs {
		for _, a := range as {
			pk.addrs = append(pk.addrs, a, a.Next())
		}
	}
	pk.addrs = slices.DeleteFunc(pk.addrs, func(a netip.Addr) bool { return !a.IsValid() })
	for range 4 {
		pk.addrs = append(pk.addrs, g.addr(false), g.addr(true))
	}
	addPort(0, 65535, g.r.IntN(65536))
	pk.types = slices.DeleteFunc(append(pk.types, 0, 8, 255), func(n int) bool { return n < 0 || n > 255 })
	pk.codes = slices.DeleteFunc(append(pk.codes, 0, 255), func(n int) bool { return n < 0 || n > 255 })
	return pk
}

func (pk *packets) next() pkt {
	r := pk.r
	k := pkt{remote: pick(r, pk.addrs), proto: uint8(pick(r, pk.protos))}
	if r.IntN(2) == 0 {
		k.dir = Egress
	}
	if r.IntN(10) == 0 {
		k.proto = uint8(r.IntN(256))
	}
	if r.IntN(10) == 0 {
		k.remote = randomAddr(r, k.remote.Is6())
	}
	switch k.proto {
	case ipproto.ICMP, ipproto.ICMPv6:
		k.typ, k.code = uint8(pick(r, pk.types)), uint8(pick(r, pk.codes))
	default:
		k.port = uint16(pick(r, pk.ports)) // other protocols: a port the rules must ignore
	}
	if r.IntN(10) == 0 {
		k.port = uint16(r.IntN(65536))
	}
	return k
}

// lastAddr is the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	p = p.Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func randomAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return netip.AddrFrom16(b)
	}
	return netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
}

func TestLastAddr(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"10.1.2.3/8", "10.255.255.255"},
		{"0.0.0.0/0", "255.255.255.255"},
		{"192.0.2.7/32", "192.0.2.7"},
		{"2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"2001:db8::/127", "2001:db8::1"},
	} {
		if got := lastAddr(netip.MustParsePrefix(tt.in)); got.String() != tt.want {
			t.Errorf("lastAddr(%v) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

// A Policy is read by every packet goroutine at once without locks (compile.go): judging
// from several goroutines must give the single-threaded answers. Run with -race.
func TestDecideConcurrent(t *testing.T) {
	r := rand.New(rand.NewPCG(diffSeed(t), 99))
	g := &cfgGen{r: r, maxRules: 40}
	c, localAddrs := g.config()
	m := g.validate(t, c, "struct", 0, 99)
	if m == nil {
		t.FailNow()
	}
	env := Env{LocalAddrs: func(name string) []netip.Addr { return localAddrs[name] }}
	p, err := Compile(m, env)
	if err != nil {
		t.Fatal(err)
	}
	pk := g.packetSource(m, localAddrs)
	type judged struct {
		iface string
		k     pkt
		id    RuleID
		u     bool
	}
	var js []judged
	for range 500 {
		j := judged{iface: m.Interfaces[r.IntN(len(m.Interfaces))].Name, k: pk.next()}
		j.id, j.u = p.Interface(j.iface).Decide(j.k.dir, j.k.proto, j.k.remote, j.k.port, j.k.typ, j.k.code)
		js = append(js, j)
	}
	done := make(chan string, 4)
	for w := range 4 {
		go func() {
			for i := range 20 * len(js) {
				j := js[(i*7+w)%len(js)]
				id, u := p.Interface(j.iface).Decide(j.k.dir, j.k.proto, j.k.remote, j.k.port, j.k.typ, j.k.code)
				if id != j.id || u != j.u {
					done <- fmt.Sprintf("Decide(%v on %s) = %d, %v; want %d, %v", j.k, j.iface, id, u, j.id, j.u)
					return
				}
			}
			done <- ""
		}()
	}
	for range 4 {
		if msg := <-done; msg != "" {
			t.Error(msg)
		}
	}
}
