package filter

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// portsYAML: two instances' ports, eth0 (web, 198.51.100.10) and eth1 (db,
// 198.51.100.20), with the hypervisor lab's groups (SPEC 4.3); web's sg-out lets it reach
// db (its egress is judged too: AWS judges both ends). The test engine resolves
// index ifEth0 to eth0 and ifEth1 to eth1.
const portsYAML = `
security_groups:
  - group_id: sg-web
    ingress:
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}
    egress: []
  - group_id: sg-db
    ingress:
      - {ip_protocol: tcp, from_port: 3306, to_port: 3306, referenced_group_id: sg-web}
    egress: []
  - group_id: sg-out
    egress:
      - {ip_protocol: udp, from_port: 0, to_port: 65535, cidr_ipv6: "::/0"}
      - {ip_protocol: icmpv6, cidr_ipv6: "::/0"}
      - {ip_protocol: tcp, from_port: 3306, to_port: 3306, referenced_group_id: sg-db}
ports:
  - {name: eth0, addresses: [198.51.100.10, "2001:db8:a::10"], security_groups: [sg-web, sg-out]}
  - {name: eth1, addresses: [198.51.100.20], security_groups: [sg-db]%s}
`

var (
	webOut, webIn = Point{Dev: ifEth0, Dir: DirEgress}, Point{Dev: ifEth0, Dir: DirIngress}
	dbOut, dbIn   = Point{Dev: ifEth1, Dir: DirEgress}, Point{Dev: ifEth1, Dir: DirIngress}
)

func TestPortsJudge(t *testing.T) {
	e, w, _ := newTestEngine(t, fmt.Sprintf(portsYAML, ""), 0)
	for _, c := range []struct {
		name     string
		from, to Point
		b        []byte
		want     Reason
		at       string
	}{
		{"web → db:3306, web a member of sg-web by its port", webOut, dbIn, pkt("tcp", "198.51.100.10:40000", "198.51.100.20:3306", syn), ReasonRule, "eth1"},
		{"the reply, statefully with egress: []", dbOut, webIn, pkt("tcp", "198.51.100.20:3306", "198.51.100.10:40000", synAck), ReasonTracked, "eth0"},
		{"db → web:443", dbOut, webIn, pkt("tcp", "198.51.100.20:40001", "198.51.100.10:443", syn), ReasonNoRule, "eth1"},
		{"db spoofing web's address", dbOut, webIn, pkt("tcp", "198.51.100.10:40002", "198.51.100.10:80", syn), ReasonSpoofed, "eth1"},
		{"web sending as db to db:3306", webOut, dbIn, pkt("tcp", "198.51.100.20:40003", "198.51.100.20:3306", syn), ReasonSpoofed, "eth0"},
	} {
		if r := w.JudgePath(c.b, c.from, c.to); r.Reason != c.want || r.Iface != c.at {
			t.Errorf("%s: JudgePath = %v at %s; want %v at %s", c.name, r.Reason, r.Iface, c.want, c.at)
		}
	}
	// One point: a port and anything else (the uplink, the host, an unlisted port).
	runSteps(t, w, []step{
		{webIn, pkt("tcp", "203.0.113.9:40000", "198.51.100.10:80", syn), ReasonRule},
		// The host's own address is a peer like any other at a port: not spoofed_local.
		{webIn, pkt("tcp", "192.0.2.10:40000", "198.51.100.10:80", syn), ReasonRule},
		{webOut, pkt("tcp", "198.51.100.10:80", "203.0.113.9:40000", synAck), ReasonTracked},
		{webOut, pkt("udp", "203.0.113.66:53", "203.0.113.9:53"), ReasonSpoofed},
		{webOut, pkt("udp", "198.51.100.10:53", "203.0.113.9:53"), ReasonNoRule},
		// IPv6 link-local and DAD keep the link working; the rules judge them.
		{webOut, pkt("icmpv6", "fe80::10", "ff02::1:ff00:20", 135, 0), ReasonExempt},
		{webOut, pkt("icmpv6", "::", "ff02::16", 143, 0), ReasonRuleNoFlow}, // an MLD report in DAD
		{webOut, pkt("udp", "[fe80::10]:5353", "[ff02::fb]:5353"), ReasonRule},
		{webOut, pkt("udp", "[2001:db8:a::99]:5353", "[2001:db8::1]:53"), ReasonSpoofed},
		{webOut, pkt("udp", "[2001:db8:a::10]:5353", "[2001:db8::1]:53"), ReasonRule},
	})
	if p, _ := e.Counters(); p[DirEgress][ReasonSpoofed] != 4 {
		t.Errorf("spoofed egress packets counted = %d; want 4", p[DirEgress][ReasonSpoofed])
	}
}

// With source_dest_check: false the rules alone decide (an instance that routes).
func TestPortsSourceDestCheckOff(t *testing.T) {
	_, w, _ := newTestEngine(t, fmt.Sprintf(portsYAML, ", source_dest_check: false"), 0)
	if r := w.JudgePath(pkt("tcp", "198.51.100.30:40000", "198.51.100.10:80", syn), dbOut, webIn); r.Reason != ReasonNoRule || r.Iface != "eth1" {
		t.Errorf("db (check off) sending from another address: JudgePath = %v at %s; want no_rule at eth1 (its egress: [])", r.Reason, r.Iface)
	}
}

// Each port is its own zone (SPEC 4.2): a flow tracked at one port does not admit the
// same tuple through the other.
func TestPortsOwnTracking(t *testing.T) {
	// db's check is off, so that the tracking alone answers for the tuple at db's port.
	_, w2, _ := newTestEngine(t, `
security_groups:
  - group_id: sg-web
    ingress:
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}
    egress: []
ports:
  - {name: eth0, addresses: [198.51.100.10], security_groups: [sg-web]}
  - {name: eth1, addresses: [198.51.100.20], security_groups: [sg-web], source_dest_check: false}
`, 0)
	runSteps(t, w2, []step{
		{webIn, pkt("tcp", "203.0.113.9:40000", "198.51.100.10:80", syn), ReasonRule},
		{dbOut, pkt("tcp", "198.51.100.10:80", "203.0.113.9:40000", synAck), ReasonNoRule},
		{dbIn, pkt("tcp", "203.0.113.9:40000", "198.51.100.10:80", ack), ReasonRuleNoFlow},
		{webOut, pkt("tcp", "198.51.100.10:80", "203.0.113.9:40000", synAck), ReasonTracked},
	})
}

// explain on a port says what the judge does: spoofed at its egress.
func TestPortsExplain(t *testing.T) {
	e, w, _ := newTestEngine(t, fmt.Sprintf(portsYAML, ""), 0)
	q := rules.Query{Iface: "eth1", Direction: DirEgress, Proto: 6, Src: netip.MustParseAddr("198.51.100.10"), Dst: netip.MustParseAddr("198.51.100.10"), SrcPort: 40000, Port: 80}
	r := w.Judge(pkt("tcp", "198.51.100.10:40000", "198.51.100.10:80", syn), dbOut)
	ex := Explain(e.Policy(), testHost(), true, q)
	if r.Reason != ReasonSpoofed || ex.Allowed || ex.Why == "" {
		t.Errorf("Judge = %v; Explain = %+v; want spoofed and a denial that says why", r.Reason, ex)
	}
	q.Src = netip.MustParseAddr("198.51.100.20")
	q.Direction, q.Iface = DirIngress, "eth0"
	if ex := Explain(e.Policy(), testHost(), true, q); !ex.Allowed || ex.Rule == nil || ex.Rule.GroupID != "sg-web" {
		t.Errorf("Explain(web ingress tcp/80 from db) = %+v; want allowed by sg-web", ex)
	}
}

func TestPortsNoAllocs(t *testing.T) {
	_, w, _ := newTestEngine(t, fmt.Sprintf(portsYAML, ""), 0)
	for _, c := range []struct {
		name     string
		from, to Point
		b        []byte
	}{
		{"path-allowed", webOut, dbIn, pkt("tcp", "198.51.100.10:40000", "198.51.100.20:3306", syn)},
		{"path-reply", dbOut, webIn, pkt("tcp", "198.51.100.20:3306", "198.51.100.10:40000", synAck)},
		{"path-denied", dbOut, webIn, pkt("tcp", "198.51.100.20:40001", "198.51.100.10:443", syn)},
		{"path-spoofed", dbOut, webIn, pkt("tcp", "198.51.100.10:40002", "198.51.100.10:80", syn)},
	} {
		w.JudgePath(c.b, c.from, c.to)
		if n := testing.AllocsPerRun(200, func() { w.JudgePath(c.b, c.from, c.to) }); n != 0 {
			t.Errorf("%s: JudgePath allocates %v times per packet; want 0", c.name, n)
		}
	}
}

func TestIsPort(t *testing.T) {
	e, _, _ := newTestEngine(t, fmt.Sprintf(portsYAML, ""), 0)
	for _, c := range []struct {
		dev  uint32
		want bool
	}{{ifEth0, true}, {ifEth1, true}, {ifOther, false}, {ifOther, false}, {ifGone, false}, {0, false}} {
		if got := e.IsPort(c.dev); got != c.want {
			t.Errorf("IsPort(%d) = %v; want %v", c.dev, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { e.IsPort(ifOther); e.IsPort(ifEth0) }); n != 0 {
		t.Errorf("IsPort allocates %v times once the devices are known; want 0", n)
	}
	_, w, _ := newTestEngine(t, webYAML, 0)
	if r := w.Judge(pkt("tcp", "203.0.113.9:1", "192.0.2.10:22", syn), Point{Dev: ifOther}); r.Reason != ReasonExempt {
		t.Errorf("Judge at an unlisted device = %v; want exempt", r.Reason)
	}
	if r := w.Judge(pkt("tcp", "203.0.113.9:1", "192.0.2.10:22", syn), Point{Dev: ifOther}); r.Reason != ReasonExempt {
		t.Errorf("Judge at an unlisted device, again (remembered) = %v; want exempt", r.Reason)
	}
}
