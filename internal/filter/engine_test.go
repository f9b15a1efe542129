package filter

import (
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/rules"
)

const webYAML = `
security_groups:
  - group_id: sg-web
    ingress:
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 198.51.100.7/32}
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 203.0.113.0/24}
      - {ip_protocol: icmp, from_port: 8, to_port: -1, cidr_ipv4: 203.0.113.0/24}
      - {ip_protocol: 47, cidr_ipv4: 203.0.113.5/32}
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv6: "2001:db8::20/128"}
    egress: []
interfaces:
  - {name: eth0, security_groups: [sg-web]}
`

// step is one packet of a scenario and the reason it must get.
type step struct {
	h    Point
	b    []byte
	want Reason
}

func runSteps(t *testing.T, w *Worker, steps []step) {
	t.Helper()
	for i, s := range steps {
		got := w.Judge(s.b, s.h)
		if got.Reason != s.want || got.Verdict != s.want.Verdict() {
			t.Errorf("step %d: Judge(%v) = %v/%v; want %v/%v", i, w.Packet(), got.Verdict, got.Reason, s.want.Verdict(), s.want)
		}
	}
}

func TestJudgeStateless(t *testing.T) {
	_, w, _ := newTestEngine(t, webYAML, 0)
	runSteps(t, w, []step{
		{in, pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn), ReasonRule},
		{in, pkt("tcp", "198.51.100.8:40000", "192.0.2.10:22", syn), ReasonNoRule},
		{in, pkt("tcp", "192.0.2.99:40000", "192.0.2.10:80", syn), ReasonRule},
		{in, pkt("tcp", "192.0.2.99:40000", "192.0.2.10:81", syn), ReasonNoRule},
		{in, pkt("tcp", "192.0.2.99:40001", "192.0.2.10:80", ack), ReasonRuleNoFlow},      // bare ACK: rules alone, no flow
		{in, pkt("tcp", "192.0.2.99:40002", "192.0.2.10:80", syn|0x01), ReasonRuleNoFlow}, // SYN+FIN starts nothing
		{in, pkt("udp", "203.0.113.9:5353", "192.0.2.10:53"), ReasonRule},
		{in, pkt("udp", "203.0.112.9:5353", "192.0.2.10:53"), ReasonNoRule},
		{in, pkt("icmp", "203.0.113.9", "192.0.2.10", 8, 0, 77), ReasonRule},
		{in, pkt("icmp", "203.0.113.9", "192.0.2.10", 13, 0), ReasonNoRule},
		{in, pkt("icmp", "198.51.100.7", "192.0.2.10", 8, 0, 78), ReasonNoRule},
		{in, pkt("gre", "203.0.113.5", "192.0.2.10"), ReasonRule},
		{in, pkt("gre", "203.0.113.6", "192.0.2.10"), ReasonNoRule},
		{in, pkt("tcp", "[2001:db8::20]:40000", "[2001:db8::10]:22", syn), ReasonRule},
		{in, pkt("tcp", "[2001:db8::30]:40000", "[2001:db8::10]:22", syn), ReasonNoRule},
		{in, pkt("icmpv6", "2001:db8::30", "2001:db8::10", 135, 0), ReasonExempt}, // neighbour solicitation
		{in, pkt("icmpv6", "2001:db8::30", "2001:db8::10", 128, 0, 5), ReasonNoRule},
		{out, pkt("tcp", "192.0.2.10:40000", "203.0.113.9:443", syn), ReasonNoRule}, // egress: []
		{Point{Dev: ifOther}, pkt("tcp", "198.51.100.8:1", "192.0.2.10:22", syn), ReasonExempt},
		{Point{Dev: ifGone}, pkt("tcp", "198.51.100.7:1", "192.0.2.10:22", syn), ReasonUnknownIface},
		{in, []byte{0x45, 0, 0}, ReasonMalformed},
		{out, laterFragment(pkt("tcp", "192.0.2.10:40000", "203.0.113.9:8080", ack)), ReasonFragment},
		{in, pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn)[:30], ReasonMalformed},
	})
}

func TestJudgeStateful(t *testing.T) {
	t.Run("inbound flow answered with egress []", func(t *testing.T) {
		_, w, _ := newTestEngine(t, webYAML, 0)
		runSteps(t, w, []step{
			{in, pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn), ReasonRule},
			{out, pkt("tcp", "192.0.2.10:22", "198.51.100.7:40000", synAck), ReasonTracked},
			{in, pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", ack), ReasonTracked},
			{out, pkt("tcp", "192.0.2.10:22", "198.51.100.7:40000", ack), ReasonTracked},
			// The same server port talking to another peer is not part of the flow.
			{out, pkt("tcp", "192.0.2.10:22", "198.51.100.9:40000", synAck), ReasonNoRule},
			{out, pkt("udp", "192.0.2.10:53", "203.0.113.9:5353"), ReasonNoRule},
			{in, pkt("udp", "203.0.113.9:5353", "192.0.2.10:53"), ReasonRule},
			{out, pkt("udp", "192.0.2.10:53", "203.0.113.9:5353"), ReasonTracked},
			{in, pkt("icmp", "203.0.113.9", "192.0.2.10", 8, 0, 77), ReasonRule},
			{out, pkt("icmp", "192.0.2.10", "203.0.113.9", 0, 0, 77), ReasonTracked},
			{out, pkt("icmp", "192.0.2.10", "203.0.113.9", 0, 0, 78), ReasonNoRule}, // other identifier
			{out, pkt("icmp", "192.0.2.10", "203.0.113.9", 8, 0, 77), ReasonNoRule}, // a request the other way is not a reply
			{in, pkt("icmp", "203.0.113.9", "192.0.2.10", 8, 0, 77), ReasonTracked}, // the originator pings again
			{in, pkt("gre", "203.0.113.5", "192.0.2.10"), ReasonRule},
			{out, pkt("gre", "192.0.2.10", "203.0.113.5"), ReasonTracked},
		})
	})
	t.Run("outbound flow answered with no ingress", func(t *testing.T) {
		_, w, _ := newTestEngine(t, `
security_groups:
  - group_id: sg-out
    egress:
      - {ip_protocol: tcp, from_port: 443, to_port: 443, cidr_ipv4: 203.0.113.0/24}
interfaces:
  - {name: eth0, security_groups: [sg-out]}
`, 0)
		runSteps(t, w, []step{
			{out, pkt("tcp", "192.0.2.10:40000", "203.0.113.9:443", syn), ReasonRule},
			{in, pkt("tcp", "203.0.113.9:443", "192.0.2.10:40000", synAck), ReasonTracked},
			{in, pkt("tcp", "203.0.113.9:443", "192.0.2.10:40001", synAck), ReasonNoRule},
			{out, pkt("tcp", "192.0.2.10:40000", "203.0.113.9:443", rst), ReasonTracked},
			// After the reset, the responder cannot open a connection on the same port pair.
			{in, pkt("tcp", "203.0.113.9:443", "192.0.2.10:40000", syn), ReasonNoRule},
		})
	})
}

// openYAML allows tcp/80 from anywhere with AWS's default egress: its flows are untracked.
const openYAML = `
security_groups:
  - group_id: sg-open
    ingress:
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}
interfaces:
  - {name: eth0, security_groups: [sg-open]}
`

func TestUntracked(t *testing.T) {
	e, w, _ := newTestEngine(t, openYAML, 0)
	runSteps(t, w, []step{
		{in, pkt("tcp", "192.0.2.99:40000", "192.0.2.10:80", syn), ReasonUntracked},
		{out, pkt("tcp", "192.0.2.10:80", "192.0.2.99:40000", synAck), ReasonRuleNoFlow}, // default egress judges the reply
	})
	if n := e.Table().Len(); n != 0 {
		t.Errorf("untracked flow made %d table entries; want 0", n)
	}
	// Removing the rule stops the untracked flow at once.
	setPolicy(t, e, `
security_groups:
  - group_id: sg-open
interfaces:
  - {name: eth0, security_groups: [sg-open]}
`, rulesOpts())
	runSteps(t, w, []step{{in, pkt("tcp", "192.0.2.99:40000", "192.0.2.10:80", ack), ReasonNoRule}})
}

// The reply of an untracked flow must not become a tracked flow of its own: AWS's DNS
// server example (udp/53 in from everywhere, default egress) stops at once when its rule
// goes, although the answers went out through a tracked-looking egress rule.
func TestUntrackedReplyStartsNoFlow(t *testing.T) {
	const dns = `
security_groups:
  - group_id: sg-dns
    ingress:
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 0.0.0.0/0}
interfaces:
  - {name: eth0, security_groups: [sg-dns]}
`
	e, w, _ := newTestEngine(t, dns, 0)
	runSteps(t, w, []step{
		{in, pkt("udp", "203.0.113.9:5000", "192.0.2.10:53"), ReasonUntracked},
		{out, pkt("udp", "192.0.2.10:53", "203.0.113.9:5000"), ReasonUntracked},
		{out, pkt("tcp", "192.0.2.10:40000", "203.0.113.9:443", syn), ReasonRule}, // ordinary outbound flows are tracked
	})
	if n := e.Table().Len(); n != 1 {
		t.Errorf("table holds %d flows; want 1 (only the outbound TCP flow)", n)
	}
	setPolicy(t, e, "security_groups:\n  - group_id: sg-dns\ninterfaces:\n  - {name: eth0, security_groups: [sg-dns]}\n", rulesOpts())
	runSteps(t, w, []step{{in, pkt("udp", "203.0.113.9:5000", "192.0.2.10:53"), ReasonNoRule}})
}

// A reload that lands while a packet's interface index is being learned must not make the
// packet path index the old policy's counters with the new policy's rule ids.
func TestLearnDuringReload(t *testing.T) {
	clk := &fakeClock{t: 1}
	var e *Engine
	big := benchYAML(50)
	e = New(Options{Table: conntrack.New(conntrack.Config{}), Now: clk.now, IfName: func(i uint32) (string, bool) {
		setPolicy(t, e, big, rules.Options{Unlimited: true}) // a reload, right now
		return "eth0", true
	}})
	w := e.NewWorker()
	doc, _ := rules.Parse("t.yaml", []byte("security_groups:\n  - group_id: sg-bench\ninterfaces:\n  - {name: eth0, security_groups: [sg-bench]}\n"))
	m, err := rules.Validate(doc, rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := rules.Compile(m, rules.Env{})
	e.SetPolicy(p, Host{}) // eth0's index unknown: the first packet learns it
	r := w.Judge(pkt("udp", "172.16.0.49:5000", "192.0.2.10:49"), in)
	if r.Verdict != Accept {
		t.Errorf("Judge during a reload = %v/%v; want accept by the new policy", r.Verdict, r.Reason)
	}
}

func TestTrackedSurvivesRuleRemoval(t *testing.T) {
	e, w, _ := newTestEngine(t, webYAML, 0)
	runSteps(t, w, []step{
		{in, pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn), ReasonRule},
		{out, pkt("tcp", "192.0.2.10:22", "198.51.100.7:40000", synAck), ReasonTracked},
		{in, pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", ack), ReasonTracked},
	})
	setPolicy(t, e, `
security_groups:
  - group_id: sg-web
    egress: []
interfaces:
  - {name: eth0, security_groups: [sg-web]}
`, rulesOpts())
	runSteps(t, w, []step{
		{in, pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", ack), ReasonTracked},  // the old flow passes
		{in, pkt("tcp", "198.51.100.7:40001", "192.0.2.10:22", syn), ReasonNoRule},   // a new one does not
		{out, pkt("tcp", "192.0.2.10:22", "198.51.100.7:40000", ack), ReasonTracked}, // replies still pass
	})
}

func TestTableFull(t *testing.T) {
	e, w, clk := newTestEngine(t, webYAML, 2)
	runSteps(t, w, []step{
		{in, pkt("udp", "203.0.113.1:1000", "192.0.2.10:53"), ReasonRule},
		{in, pkt("udp", "203.0.113.2:1000", "192.0.2.10:53"), ReasonRule},
		{in, pkt("udp", "203.0.113.3:1000", "192.0.2.10:53"), ReasonTableFull},
		{out, pkt("udp", "192.0.2.10:53", "203.0.113.1:1000"), ReasonTracked}, // old flows continue
		{in, pkt("udp", "203.0.113.2:1000", "192.0.2.10:53"), ReasonTracked},
	})
	// Once the flows idle out (UDP 30 s), there is room again.
	clk.t += int64(31 * time.Second)
	e.Table().Sweep(clk.t)
	runSteps(t, w, []step{{in, pkt("udp", "203.0.113.3:1000", "192.0.2.10:53"), ReasonRule}})
	pk, _ := e.Counters()
	if got := pk[DirIngress][ReasonTableFull]; got != 1 {
		t.Errorf("table-full drops = %d; want 1", got)
	}
}

func TestRuleHits(t *testing.T) {
	e, w, _ := newTestEngine(t, webYAML, 0)
	runSteps(t, w, []step{
		{in, pkt("tcp", "198.51.100.7:40000", "192.0.2.10:22", syn), ReasonRule},
		{in, pkt("tcp", "198.51.100.7:40001", "192.0.2.10:22", syn), ReasonRule},
		{in, pkt("udp", "203.0.113.9:5353", "192.0.2.10:53"), ReasonRule},
	})
	ssh, dns := keyOf(t, e, "sg-web/ingress/0"), keyOf(t, e, "sg-web/ingress/2")
	hits := e.RuleHits()
	if hits[ssh] != 2 || hits[dns] != 1 {
		t.Errorf("RuleHits() = %v; want %v:2 %v:1", hits, ssh, dns)
	}
	// A reload must not make the counters dip (Prometheus would read a reset).
	setPolicy(t, e, webYAML, rulesOpts())
	if got := e.RuleHits(); got[ssh] != 2 || got[dns] != 1 {
		t.Errorf("RuleHits() right after a reload = %v; want the same counts", got)
	}
	// A reload that removes an earlier rule: the DNS rule moves from ingress[2] to
	// ingress[1] but keeps its id, and its count counts on.
	setPolicy(t, e, `
security_groups:
  - group_id: sg-web
    ingress:
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 203.0.113.0/24}
    egress: []
interfaces:
  - {name: eth0, security_groups: [sg-web]}
`, rulesOpts())
	if got := keyOf(t, e, "sg-web/ingress/1"); got != dns {
		t.Fatalf("the DNS rule's key after the reload = %v; want %v", got, dns)
	}
	runSteps(t, w, []step{{in, pkt("udp", "203.0.113.9:5354", "192.0.2.10:53"), ReasonRule}})
	if got := e.RuleHits(); got[dns] != 2 || got[ssh] != 2 {
		t.Errorf("RuleHits() after removing the SSH rule = %v; want %v:2 (counting on) %v:2 (stopped)", got, dns, ssh)
	}
}

// keyOf returns the key of the rule at label ("sg-web/ingress/2") in the policy in force.
func keyOf(t *testing.T, e *Engine, label string) RuleKey {
	t.Helper()
	for i := range e.Policy().Rules[1:] {
		if ri := &e.Policy().Rules[i+1]; ri.Label == label {
			return ruleKey(ri)
		}
	}
	t.Fatalf("no rule %s in the policy", label)
	return RuleKey{}
}
