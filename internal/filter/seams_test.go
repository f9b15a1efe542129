package filter

import (
	"net/netip"
	"testing"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// pathIfaces: "instance" eth0 may send web requests out; "instance" eth1 takes web
// requests in from 192.0.2.0/24 only.
const pathIfaces = `
security_groups:
  - group_id: sg-client
    egress:
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}
  - group_id: sg-web
    ingress:
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 192.0.2.0/24}
    egress: []
interfaces:
  - {name: eth0, security_groups: [sg-client]}
  - {name: eth1, security_groups: [sg-web]}
`

// A packet between two attachment points is judged at both: the source's egress, then the
// destination's ingress, each with its own tracking (SPEC 4.3, 4.2).
func TestJudgePath(t *testing.T) {
	e, w, _ := newTestEngine(t, pathIfaces, 0)
	out0, in1 := Point{Dev: ifEth0, Dir: DirEgress}, Point{Dev: ifEth1, Dir: DirIngress}
	out1, in0 := Point{Dev: ifEth1, Dir: DirEgress}, Point{Dev: ifEth0, Dir: DirIngress}
	for _, c := range []struct {
		name     string
		from, to Point
		b        []byte
		want     Reason
		at       string // the point that decided
		points   uint64 // points judged
	}{
		{"both allow: a flow starts at each point", out0, in1, pkt("tcp", "192.0.2.7:40000", "198.51.100.80:80", syn), ReasonRule, "eth1", 2},
		{"the reply rides both flows", out1, in0, pkt("tcp", "198.51.100.80:80", "192.0.2.7:40000", synAck), ReasonTracked, "eth0", 2},
		{"egress allows, ingress does not", out0, in1, pkt("tcp", "203.0.113.7:40000", "198.51.100.80:80", syn), ReasonNoRule, "eth1", 2},
		{"egress does not allow: ingress is not asked", out0, in1, pkt("tcp", "192.0.2.7:40001", "198.51.100.80:81", syn), ReasonNoRule, "eth0", 1},
	} {
		before, _ := e.Counters()
		r := w.JudgePath(c.b, c.from, c.to)
		if r.Reason != c.want || r.Iface != c.at {
			t.Errorf("%s: JudgePath = %v at %s; want %v at %s", c.name, r.Reason, r.Iface, c.want, c.at)
		}
		after, _ := e.Counters()
		n := func(p [2][NumReasons]uint64) (s uint64) {
			for d := range p {
				for _, v := range p[d] {
					s += v
				}
			}
			return s
		}
		if got := n(after) - n(before); got != c.points {
			t.Errorf("%s: %d points counted; want %d", c.name, got, c.points)
		}
	}
	// Each point tracks the flow in its own zone: two flows for the connection; the SYN
	// the web side dropped left a flow at the client's egress, as in AWS (it idles out).
	if n := e.Table().Len(); n != 3 {
		t.Errorf("table holds %d flows; want 3 (one per point of the connection, one of the dropped SYN)", n)
	}
}

// A tracked flow names the rule that let it in, by a number that keeps naming that rule
// across a reload that removes an earlier rule (SPEC 4.1: the connection table refers to
// rules by id).
func TestFlowNamesItsRule(t *testing.T) {
	const two = `
security_groups:
  - group_id: sg-web
    ingress:
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 198.51.100.0/24}
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 203.0.113.0/24}
interfaces:
  - {name: eth0, security_groups: [sg-web]}
`
	e, w, _ := newTestEngine(t, two, 0)
	web := e.Policy().Rules[e.Policy().Interface("eth0").RuleIDs(rules.Ingress)[1]]
	if r := w.Judge(pkt("tcp", "203.0.113.5:40000", "192.0.2.10:80", syn), in); r.Reason != ReasonRule || r.Rule == nil || r.Rule.Rule.ID != web.Rule.ID {
		t.Fatalf("Judge = %v, rule %v; want rule %s", r.Reason, r.Rule, web.Rule.ID)
	}
	flowRule := func() RuleKey {
		var k RuleKey
		n := 0
		e.Table().Range(func(_ conntrack.Tuple, fi conntrack.FlowInfo) bool {
			n++
			var ok bool
			if k, ok = e.FlowRule(fi.Meta.Rule); !ok {
				t.Errorf("FlowRule(%d) unknown", fi.Meta.Rule)
			}
			return true
		})
		if n != 1 {
			t.Fatalf("%d flows; want 1", n)
		}
		return k
	}
	want := RuleKey{Group: "sg-web", Rule: web.Rule.ID}
	if got := flowRule(); got != want {
		t.Errorf("flow's rule = %+v; want %+v", got, want)
	}
	setPolicy(t, e, `
security_groups:
  - group_id: sg-web
    ingress:
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 203.0.113.0/24}
interfaces:
  - {name: eth0, security_groups: [sg-web]}
`, rules.Options{})
	if got := flowRule(); got != want {
		t.Errorf("after the reload, flow's rule = %+v; want %+v", got, want)
	}
	if r := w.Judge(pkt("tcp", "203.0.113.5:40001", "192.0.2.10:80", syn), in); r.Rule == nil || r.Rule.Rule.ID != web.Rule.ID {
		t.Errorf("after the reload the rule's id is %v; want %s", r.Rule, web.Rule.ID)
	}
	if _, ok := e.FlowRule(0); ok {
		t.Error("FlowRule(0) is known; 0 means no rule")
	}
}

// sgd explain and the packet path make one decision before the rules: for each packet the
// screen decides, Explain's verdict is the judge's.
func TestExplainScreensAsTheJudge(t *testing.T) {
	e, w, _ := newTestEngine(t, twoIfaces, 0)
	e.opt.ExemptDHCP = true
	q := func(dir Dir, proto uint8, src, dst string, sport, dport uint16, typ uint8) rules.Query {
		return rules.Query{Iface: "eth0", Direction: dir, Proto: proto, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst),
			SrcPort: sport, Port: dport, ICMPType: typ}
	}
	for _, c := range []struct {
		name string
		q    rules.Query
		b    []byte
		at   Point
		want Reason
	}{
		{"neighbour solicitation", q(DirIngress, 58, "fe80::1", "ff02::1:ff00:10", 0, 0, 135), pkt("icmpv6", "fe80::1", "ff02::1:ff00:10", 135, 0), in, ReasonExempt},
		{"spoofed local source", q(DirIngress, 17, "192.0.2.10", "192.0.2.10", 4000, 5000, 0), pkt("udp", "192.0.2.10:4000", "192.0.2.10:5000"), in, ReasonSpoofedLocal},
		{"DHCP offer on the link", q(DirIngress, 17, "192.0.2.1", "255.255.255.255", 67, 68, 0), pkt("udp", "192.0.2.1:67", "255.255.255.255:68"), in, ReasonExempt},
		{"DHCP from off the link: the rules", q(DirIngress, 17, "203.0.113.1", "192.0.2.10", 67, 68, 0), pkt("udp", "203.0.113.1:67", "192.0.2.10:68"), in, ReasonNoRule},
		{"DHCP discover out", q(DirEgress, 17, "192.0.2.10", "255.255.255.255", 68, 67, 0), pkt("udp", "192.0.2.10:68", "255.255.255.255:67"), out, ReasonExempt},
		{"allowed by a rule", q(DirIngress, 17, "203.0.113.9", "192.0.2.10", 4000, 5000, 0), pkt("udp", "203.0.113.9:4000", "192.0.2.10:5000"), in, ReasonRule},
	} {
		r := w.Judge(c.b, c.at)
		if r.Reason != c.want {
			t.Errorf("%s: Judge = %v; want %v", c.name, r.Reason, c.want)
		}
		ex := Explain(e.Policy(), testHost(), true, c.q)
		if ex.Allowed != (r.Verdict == Accept) || (ex.Exempt != "") != (r.Reason == ReasonExempt) {
			t.Errorf("%s: Explain allowed=%v exempt=%q why=%q; the judge said %v (%v)", c.name, ex.Allowed, ex.Exempt, ex.Why, r.Verdict, r.Reason)
		}
	}
	if ex := Explain(e.Policy(), testHost(), true, rules.Query{Iface: "lo", Proto: 6, Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1")}); !ex.Allowed || ex.Exempt == "" {
		t.Errorf("Explain on lo = %+v; want never filtered", ex)
	}
}

// Every screening has a sentence for explain and a reason; passing has neither.
func TestScreenings(t *testing.T) {
	for sc := screenFragment; int(sc) < len(screenings); sc++ {
		if screenings[sc].why == "" || screenings[sc].reason == ReasonNoRule {
			t.Errorf("screening %d has no sentence or reason", sc)
		}
	}
}
