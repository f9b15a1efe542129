package rules

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// Benchmarks of SPEC 3.1's rule bars: Decide at 10, 1 000 and 10 000 rules (0 allocs/op,
// 10 000 ≤ 1.3 × 10), Compile of 10 000 rules (≤ 50 ms).

// benchConfig is n ingress rules as a large site might write them, spread over four groups
// on eth0: many distinct /32 and /24 peers of both families with their own ports, some
// /0 rules, ICMP, a few egress rules.
func benchConfig(n int) Config {
	var c Config
	const groups = 4
	for g := range groups {
		eg := []Rule{
			{IPProtocol: "udp", FromPort: intp(53), ToPort: intp(53), CidrIPv4: fmt.Sprintf("198.51.100.%d/32", g)},
			{IPProtocol: "tcp", FromPort: intp(443), ToPort: intp(443), CidrIPv4: "0.0.0.0/0"},
		}
		c.SecurityGroups = append(c.SecurityGroups, Group{GroupID: fmt.Sprintf("sg-bench%d", g), Egress: &eg})
	}
	for i := range n {
		var r Rule
		hi, lo := (i>>8)&255, i&255
		switch {
		case i%20 == 0: // open to everyone on one port
			port := 1 + i/20
			r = Rule{IPProtocol: "tcp", FromPort: intp(port), ToPort: intp(port), CidrIPv4: "0.0.0.0/0"}
			if i%40 == 0 {
				r.CidrIPv4, r.CidrIPv6 = "", "::/0"
			}
		case i%50 == 7:
			r = Rule{IPProtocol: "icmp", FromPort: intp(i % 20), ToPort: intp(-1), CidrIPv4: fmt.Sprintf("10.%d.%d.0/24", hi, lo)}
		case i%4 == 1:
			from := 1000 + i%500
			r = Rule{IPProtocol: "tcp", FromPort: intp(from), ToPort: intp(from + 10), CidrIPv4: fmt.Sprintf("10.%d.%d.0/24", hi, lo)}
		case i%4 == 2:
			r = Rule{IPProtocol: "udp", FromPort: intp(53 + i%100), ToPort: intp(53 + i%100), CidrIPv4: fmt.Sprintf("172.16.%d.%d/32", hi, lo)}
		case i%4 == 3:
			bits := 64
			if i%8 == 3 {
				bits = 128
			}
			r = Rule{IPProtocol: "tcp", FromPort: intp(22 + i%50), ToPort: intp(22 + i%50), CidrIPv6: fmt.Sprintf("2001:db8:%x::/%d", i, bits)}
		default:
			r = Rule{IPProtocol: "tcp", FromPort: intp(80 + i%100), ToPort: intp(80 + i%100), CidrIPv4: fmt.Sprintf("192.168.%d.%d/32", hi, lo)}
		}
		g := &c.SecurityGroups[i%groups]
		g.Ingress = append(g.Ingress, r)
	}
	itf := Interface{Name: "eth0"}
	for _, g := range c.SecurityGroups {
		itf.SecurityGroups = append(itf.SecurityGroups, g.GroupID)
	}
	c.Interfaces = []Interface{itf}
	return c
}

func benchModel(tb testing.TB, n int) *Model {
	tb.Helper()
	m, err := Validate(&Document{File: "bench", Config: benchConfig(n)}, Options{Unlimited: true})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// benchPackets draws 256 packets aimed at the rules — half inside a rule's peer and
// ports, half just outside — and their verdicts from the reference evaluator.
func benchPackets(tb testing.TB, m *Model) ([]pkt, []RuleID) {
	tb.Helper()
	r := rand.New(rand.NewPCG(3, 1))
	var all []*NRule
	for _, g := range m.Groups {
		for i := range g.Ingress {
			all = append(all, &g.Ingress[i])
		}
	}
	ref := &reference{m: m}
	var ks []pkt
	var want []RuleID
	for len(ks) < 256 {
		x := all[r.IntN(len(all))]
		k := pkt{proto: uint8(x.Proto), remote: x.Peer.Prefix.Addr()}
		if b := x.Peer.Prefix.Bits(); b > 0 && b < k.remote.BitLen() {
			k.remote = lastAddr(x.Peer.Prefix) // the far edge of the prefix
		}
		switch x.Proto {
		case ipproto.TCP, ipproto.UDP:
			k.port = uint16(x.From + r.IntN(x.To-x.From+1))
		case ipproto.ICMP:
			k.typ, k.code = uint8(x.From), uint8(r.IntN(16))
		}
		if len(ks)%2 == 1 { // a near miss
			switch r.IntN(3) {
			case 0:
				k.port = uint16(x.To + 1)
			case 1:
				k.remote = lastAddr(x.Peer.Prefix).Next()
			default: // udp for tcp, and vice versa
				if x.Proto == ipproto.UDP {
					k.proto = ipproto.TCP
				} else {
					k.proto = ipproto.UDP
				}
			}
			if !k.remote.IsValid() {
				continue
			}
		}
		ks = append(ks, k)
		want = append(want, ref.decide("eth0", k).rule.id)
	}
	return ks, want
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			m := benchModel(b, n)
			p, err := Compile(m, Env{})
			if err != nil {
				b.Fatal(err)
			}
			itf := p.Interface("eth0")
			ks, want := benchPackets(b, m)
			allowed := 0
			for _, w := range want {
				if w != 0 {
					allowed++
				}
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				j := i & 255
				k := &ks[j]
				if id, _ := itf.Decide(k.dir, k.proto, k.remote, k.port, k.typ, k.code); id != want[j] {
					b.Fatalf("Decide(%v) = %d; want %d", *k, id, want[j])
				}
			}
			b.ReportMetric(float64(allowed)/float64(len(want)), "allowed/op")
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			m := benchModel(b, n)
			b.ReportAllocs()
			for b.Loop() {
				p, err := Compile(m, Env{})
				if err != nil || len(p.Rules) != n+1+4*2 {
					b.Fatalf("Compile = %d rules, %v; want %d", len(p.Rules)-1, err, n+4*2)
				}
			}
		})
	}
}

// BenchmarkValidate: the other half of a reload.
func BenchmarkValidate(b *testing.B) {
	doc := &Document{File: "bench", Config: benchConfig(10000)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Validate(doc, Options{Unlimited: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// SPEC 3.1 / STYLE 5: deciding allocates nothing, for every packet kind and direction.
func TestDecideNoAllocs(t *testing.T) {
	src := lines(
		"security_groups:",
		"  - group_id: sg-a",
		"    ingress:",
		"      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 192.0.2.0/24}",
		"      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv6: \"2001:db8::/32\"}",
		"      - {ip_protocol: icmp, from_port: 8, to_port: 0, cidr_ipv4: 0.0.0.0/0}",
		"      - {ip_protocol: icmpv6, from_port: 128, to_port: 0, cidr_ipv6: \"::/0\"}",
		"      - {ip_protocol: \"47\", cidr_ipv4: 198.51.100.0/24}",
		"      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}",
		"      - {ip_protocol: tcp, from_port: 443, to_port: 443, referenced_group_id: sg-a}",
		"interfaces:",
		"  - {name: eth0, security_groups: [sg-a]}",
	)
	p := policy(t, src, locals("eth0=192.0.2.10"))
	itf := p.Interface("eth0")
	for _, tt := range []struct {
		k       pkt
		allowed bool
	}{
		{tcp("192.0.2.1", 22), true},
		{tcp("192.0.2.1", 23), false},
		{tcp("203.0.113.1", 80), true}, // untracked: the /0 path
		{tcp("2001:db8::1", 22), false},
		{udp("2001:db8::1", 53), true},
		{udp("192.0.2.1", 53), false},
		{icmp("203.0.113.1", 8, 0), true},
		{icmp("203.0.113.1", 8, 1), false},
		{icmp6("2001:db8::1", 128, 0), true},
		{icmp6("2001:db8::1", 1, 0), false},
		{protoPkt(47, "198.51.100.1", 0), true},
		{protoPkt(47, "2001:db8::1", 0), false},
		{protoPkt(50, "198.51.100.1", 0), false},
		{out(tcp("203.0.113.1", 80)), true}, // default egress
		{out(udp("2001:db8::1", 53)), true},
		{out(icmp6("2001:db8::1", 128, 0)), true},
		{out(protoPkt(47, "198.51.100.1", 0)), true},
	} {
		k := tt.k
		var id RuleID
		allocs := testing.AllocsPerRun(100, func() {
			id, _ = itf.Decide(k.dir, k.proto, k.remote, k.port, k.typ, k.code)
		})
		if (id != 0) != tt.allowed {
			t.Errorf("Decide(%v) = rule %d; want allowed=%v", k, id, tt.allowed)
		}
		if allocs != 0 {
			t.Errorf("Decide(%v) allocates %v times per call; want 0", k, allocs)
		}
	}
}

// The benchmark's own packets are judged by Decide as the reference judges them, so that
// BenchmarkDecide times real verdicts.
func TestBenchPackets(t *testing.T) {
	m := benchModel(t, 1000)
	p, err := Compile(m, Env{})
	if err != nil {
		t.Fatal(err)
	}
	ks, want := benchPackets(t, m)
	var allowed int
	for i, k := range ks {
		id, _ := p.Interface("eth0").Decide(k.dir, k.proto, k.remote, k.port, k.typ, k.code)
		if id != want[i] {
			t.Errorf("Decide(%v) = %d; want %d", k, id, want[i])
		}
		if id != 0 {
			allowed++
		}
	}
	if allowed < 64 || allowed > 192 {
		t.Errorf("%d of %d benchmark packets allowed; want a mix", allowed, len(ks))
	}
}

// TestDecideScaling measures SPEC 3.1's ratio (ns/op at 10 000 rules over ns/op at 10)
// in a way a shared, loaded machine does not blur: many short interleaved bursts per
// size, keeping each size's fastest burst. Opt-in, as timing is no pass/fail matter
// here: SGD_SCALING=1 go test -run DecideScaling -v ./internal/rules/
func TestDecideScaling(t *testing.T) {
	if os.Getenv("SGD_SCALING") == "" {
		t.Skip("set SGD_SCALING=1 to measure")
	}
	type setup struct {
		n    int
		itf  *Iface
		ks   []pkt
		want []RuleID
		best time.Duration
	}
	var ss []*setup
	for _, n := range []int{10, 1000, 10000} {
		m := benchModel(t, n)
		start := time.Now()
		p, err := Compile(m, Env{})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Compile(%d rules) = %v", n, time.Since(start))
		ks, want := benchPackets(t, m)
		ss = append(ss, &setup{n: n, itf: p.Interface("eth0"), ks: ks, want: want, best: time.Hour})
	}
	const burst = 20000
	for range 300 {
		for _, s := range ss {
			start := time.Now()
			for i := range burst {
				j := i & 255
				k := &s.ks[j]
				if id, _ := s.itf.Decide(k.dir, k.proto, k.remote, k.port, k.typ, k.code); id != s.want[j] {
					t.Fatalf("Decide(%v) = %d; want %d", *k, id, s.want[j])
				}
			}
			s.best = min(s.best, time.Since(start))
		}
	}
	for _, s := range ss {
		t.Logf("Decide at %5d rules: %.1f ns/op", s.n, float64(s.best.Nanoseconds())/burst)
	}
	t.Logf("ratio 10000/10 = %.2f", float64(ss[2].best)/float64(ss[0].best))
}
