package filter

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/sgd-firewall/sgd/internal/rules"
)

func rulesOpts() rules.Options { return rules.Options{} }

// TestJudgeNoAllocs pins zero allocations per packet for every kind and direction, in
// the steady state (flows already tracked or denied).
func TestJudgeNoAllocs(t *testing.T) {
	_, w, _ := newTestEngine(t, webYAML, 0)
	cases := []struct {
		name string
		h    Point
		b    []byte
	}{
		{"tcp-syn-allowed-new", in, pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn)},
		{"tcp-reply-tracked", out, pkt("tcp", "192.0.2.10:22", "198.51.100.7:40000", synAck)},
		{"tcp-denied", in, pkt("tcp", "198.51.100.8:40000", "192.0.2.10:22", syn)},
		{"udp-tracked", in, pkt("udp", "203.0.113.9:5353", "192.0.2.10:53")},
		{"udp-denied", in, pkt("udp", "203.0.112.9:5353", "192.0.2.10:53")},
		{"icmp-echo", in, pkt("icmp", "203.0.113.9", "192.0.2.10", 8, 0, 77)},
		{"icmp-denied", in, pkt("icmp", "203.0.113.9", "192.0.2.10", 13, 0)},
		{"icmpv6-ndp", in, pkt("icmpv6", "2001:db8::30", "2001:db8::10", 135, 0)},
		{"gre", in, pkt("gre", "203.0.113.5", "192.0.2.10")},
		{"tcp6-syn", in, pkt("tcp", "[2001:db8::20]:40000", "[2001:db8::10]:22", syn)},
		{"tcp6-denied", in, pkt("tcp", "[2001:db8::30]:40000", "[2001:db8::10]:22", syn)},
		{"egress-denied", out, pkt("tcp", "192.0.2.10:40000", "203.0.113.9:443", syn)},
		{"malformed", in, []byte{0x45, 0, 0}},
	}
	for _, c := range cases {
		w.Judge(c.b, c.h) // create the flow, if any
		if n := testing.AllocsPerRun(200, func() { w.Judge(c.b, c.h) }); n != 0 {
			t.Errorf("%s: Judge allocates %v times per packet; want 0", c.name, n)
		}
	}
}

// benchYAML builds a config with n ingress rules: distinct /32 and /24 peers on varied
// ports plus a few rules for everyone, quotas lifted.
func benchYAML(n int) string {
	s := "security_groups:\n  - group_id: sg-bench\n    ingress:\n"
	s += "      - {ip_protocol: tcp, from_port: 443, to_port: 443, cidr_ipv4: 0.0.0.0/0}\n"
	for i := 1; i < n; i++ {
		if i%2 == 0 {
			s += fmt.Sprintf("      - {ip_protocol: tcp, from_port: %d, to_port: %d, cidr_ipv4: 10.%d.%d.0/24}\n", 1000+i%5000, 1000+i%5000+10, i/256%256, i%256)
		} else {
			s += fmt.Sprintf("      - {ip_protocol: udp, from_port: %d, to_port: %d, cidr_ipv4: 172.16.%d.%d/32}\n", i%60000, i%60000, i/256%256, i%256)
		}
	}
	return s + "    egress: []\ninterfaces:\n  - {name: eth0, security_groups: [sg-bench]}\n"
}

// BenchmarkJudge is the whole per-packet decision (decode + conntrack + rules) for a
// tracked flow's packets and for denied packets, at 10, 1 000 and 10 000 rules.
func BenchmarkJudge(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		e, w, _ := newTestEngine(b, "security_groups: []\ninterfaces: []\n", 0)
		setPolicy(b, e, benchYAML(n), rules.Options{Unlimited: true})
		_ = netip.Addr{}
		established := pkt("tcp", "192.0.2.99:40000", "192.0.2.10:443", syn)
		w.Judge(established, in)
		estAck := pkt("tcp", "192.0.2.99:40000", "192.0.2.10:443", ack)
		denied := pkt("tcp", "10.0.3.7:40000", "192.0.2.10:9", syn)
		newUDP := pkt("udp", "172.16.0.1:5000", "192.0.2.10:1")
		b.Run(fmt.Sprintf("tracked/rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if r := w.Judge(estAck, in); r.Reason != ReasonTracked {
					b.Fatalf("Judge = %v; want tracked", r.Reason)
				}
			}
		})
		b.Run(fmt.Sprintf("denied/rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if r := w.Judge(denied, in); r.Reason != ReasonNoRule {
					b.Fatalf("Judge = %v; want no_rule", r.Reason)
				}
			}
		})
		b.Run(fmt.Sprintf("tracked-udp/rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if r := w.Judge(newUDP, in); r.Verdict != Accept {
					b.Fatalf("Judge = %v; want accept", r.Reason)
				}
			}
		})
	}
}
