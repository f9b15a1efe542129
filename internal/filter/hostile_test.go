package filter

import (
	"testing"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// Packets an attacker crafts against a host: each must get the drop the rules imply, never
// a pass through another interface's flow, the host's own address or an exemption.

// twoIfaces: eth0 lets udp/5000 and tcp/5000 in from the client 203.0.113.9 (and ICMP
// errors related to its flows); eth1's group allows nothing at all.
const twoIfaces = `
security_groups:
  - group_id: sg-client
    ingress:
      - {ip_protocol: udp, from_port: 5000, to_port: 5000, cidr_ipv4: 203.0.113.9/32}
      - {ip_protocol: tcp, from_port: 5000, to_port: 5000, cidr_ipv4: 203.0.113.9/32}
      - {ip_protocol: udp, from_port: 5000, to_port: 5000, cidr_ipv6: "2001:db8:9::9/128"}
    egress: []
  - group_id: sg-none
    egress: []
interfaces:
  - {name: eth0, security_groups: [sg-client]}
  - {name: eth1, security_groups: [sg-none]}
`

var in1 = Point{Dev: ifEth1}

// A flow tracked on eth0 admits nothing on eth1 (SPEC 4.2), whether the packet carries the
// flow's tuple in its original or its reply direction, or is an ICMP error quoting it.
func TestFlowsArePerInterface(t *testing.T) {
	e, w, _ := newTestEngine(t, twoIfaces, 0)
	e.opt.AllowRelatedICMP = true
	udpIn := pkt("udp", "203.0.113.9:4000", "192.0.2.10:5000")
	runSteps(t, w, []step{
		{in, udpIn, ReasonRule},
		{in, pkt("tcp", "203.0.113.9:4001", "192.0.2.10:5000", syn), ReasonRule},
		{in, pkt("udp", "[2001:db8:9::9]:4000", "[2001:db8::10]:5000"), ReasonRule},
		// The same tuples on eth1: judged by eth1's rules, which allow nothing.
		{in1, udpIn, ReasonNoRule},
		{in1, pkt("tcp", "203.0.113.9:4001", "192.0.2.10:5000", ack), ReasonNoRule},
		{in1, pkt("udp", "[2001:db8:9::9]:4000", "[2001:db8::10]:5000"), ReasonNoRule},
		{Point{Dev: ifEth1, Dir: DirEgress}, pkt("udp", "192.0.2.10:5000", "203.0.113.9:4000"), ReasonNoRule},
		{in1, icmpError("icmp", 3, "203.0.113.9", "192.0.2.10", pkt("udp", "192.0.2.10:5000", "203.0.113.9:4000")), ReasonNoRule},
		// An error whose quote the host did not send (another destination) is not related.
		{in, icmpError("icmp", 3, "203.0.113.9", "192.0.2.10", pkt("udp", "192.0.2.11:5000", "203.0.113.9:4000")), ReasonNoRule},
		{in, icmpError("icmp", 3, "203.0.113.9", "192.0.2.10", pkt("udp", "203.0.113.9:4000", "192.0.2.10:5000")), ReasonNoRule},
		// On eth0 they still belong to their flows.
		{in, icmpError("icmp", 3, "203.0.113.9", "192.0.2.10", pkt("udp", "192.0.2.10:5000", "203.0.113.9:4000")), ReasonRelatedICMP},
		{in, pkt("tcp", "203.0.113.9:4001", "192.0.2.10:5000", ack), ReasonTracked},
		{out, pkt("udp", "192.0.2.10:5000", "203.0.113.9:4000"), ReasonTracked},
	})
	var zones []uint16
	e.Table().Range(func(tp conntrack.Tuple, _ conntrack.FlowInfo) bool { zones = append(zones, tp.Zone); return true })
	for _, z := range zones {
		if z != e.opt.Zones.Of("eth0") {
			t.Errorf("flow in zone %d; want every flow in eth0's zone %d", z, e.opt.Zones.Of("eth0"))
		}
	}
}

// A reload that adds an interface before eth0 keeps eth0's zone, so its tracked flows are
// neither lost nor inherited by the newcomer.
func TestZonesSurviveReload(t *testing.T) {
	e, w, _ := newTestEngine(t, twoIfaces, 0)
	runSteps(t, w, []step{{in, pkt("udp", "203.0.113.9:4000", "192.0.2.10:5000"), ReasonRule}})
	setPolicy(t, e, `
security_groups:
  - group_id: sg-none
    egress: []
interfaces:
  - {name: eth1, security_groups: [sg-none]}
  - {name: eth0, security_groups: [sg-none]}
`, rules.Options{})
	runSteps(t, w, []step{
		{out, pkt("udp", "192.0.2.10:5000", "203.0.113.9:4000"), ReasonTracked},
		{Point{Dev: ifEth1, Dir: DirEgress}, pkt("udp", "192.0.2.10:5000", "203.0.113.9:4000"), ReasonNoRule},
	})
}

// AWS's default group allows all traffic from itself: from the host's own addresses. A
// packet that arrives with one of them as its source is forged, whatever the rules say.
func TestSpoofedLocalSource(t *testing.T) {
	_, w, _ := newTestEngine(t, `
security_groups:
  - group_id: sg-self
    ingress:
      - {ip_protocol: "-1", referenced_group_id: sg-self}
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 0.0.0.0/0}
interfaces:
  - {name: eth0, security_groups: [sg-self]}
`, 0)
	runSteps(t, w, []step{
		{in, pkt("udp", "192.0.2.10:4000", "192.0.2.10:22"), ReasonSpoofedLocal},
		{in, pkt("udp", "[2001:db8::10]:4000", "[2001:db8::10]:22"), ReasonSpoofedLocal},
		{in, pkt("udp", "[fe80::10]:4000", "[2001:db8::10]:22"), ReasonSpoofedLocal},
		{in, pkt("tcp", "198.51.100.1:4000", "192.0.2.10:22", syn), ReasonSpoofedLocal}, // eth9's address
		{in, pkt("udp", "192.0.2.10:4000", "192.0.2.10:53"), ReasonSpoofedLocal},        // even where a rule allows anyone
		{in, pkt("udp", "192.0.2.99:4000", "192.0.2.10:53"), ReasonUntracked},
		{in, pkt("udp", "192.0.2.99:4000", "192.0.2.10:22"), ReasonNoRule},
		// The host's own packets leave with its addresses, of course.
		{out, pkt("udp", "192.0.2.10:4000", "192.0.2.99:53"), ReasonRule},
		// Neighbour discovery stays exempt (duplicate address detection, for one).
		{in, pkt("icmpv6", "2001:db8::10", "ff02::1", 136, 0), ReasonExempt},
	})
}

// With allow_related_icmp, only the errors SPEC 1.4 names pass as related: destination
// unreachable, time exceeded, packet too big. Redirects, source quench and parameter
// problems quoting the same tracked flow are judged by the rules.
func TestRelatedICMPTypes(t *testing.T) {
	e, w, _ := newTestEngine(t, twoIfaces, 0)
	e.opt.AllowRelatedICMP = true
	quote4 := pkt("udp", "192.0.2.10:5000", "203.0.113.9:4000")
	quote6 := pkt("udp", "[2001:db8::10]:5000", "[2001:db8:9::9]:4000")
	steps := []step{
		{in, pkt("udp", "203.0.113.9:4000", "192.0.2.10:5000"), ReasonRule},
		{in, pkt("udp", "[2001:db8:9::9]:4000", "[2001:db8::10]:5000"), ReasonRule},
	}
	for _, c := range []struct {
		proto string
		typ   int
		want  Reason
	}{
		{"icmp", 3, ReasonRelatedICMP},
		{"icmp", 11, ReasonRelatedICMP},
		{"icmp", 4, ReasonNoRule},  // source quench
		{"icmp", 5, ReasonNoRule},  // redirect
		{"icmp", 12, ReasonNoRule}, // parameter problem
		{"icmpv6", 1, ReasonRelatedICMP},
		{"icmpv6", 2, ReasonRelatedICMP},
		{"icmpv6", 3, ReasonRelatedICMP},
		{"icmpv6", 4, ReasonNoRule}, // parameter problem
	} {
		src, dst, q := "203.0.113.9", "192.0.2.10", quote4
		if c.proto == "icmpv6" {
			src, dst, q = "2001:db8:9::9", "2001:db8::10", quote6
		}
		steps = append(steps, step{in, icmpError(c.proto, c.typ, src, dst, q), c.want})
	}
	runSteps(t, w, steps)
}

// The DHCP exemption covers the client's direction on its link only: with no rule for
// DHCP at all, an on-link server's answers come in and the client's broadcasts leave,
// while an off-link host gets nothing in and nothing leaves for an off-link address.
func TestDHCPExemptionScope(t *testing.T) {
	const closed = `
security_groups:
  - group_id: sg-closed
    egress: []
interfaces:
  - {name: eth0, security_groups: [sg-closed]}
`
	e, w, _ := newTestEngine(t, closed, 0)
	e.opt.ExemptDHCP = true
	runSteps(t, w, []step{
		// DHCPv4: eth0 is 192.0.2.10/24.
		{in, pkt("udp", "192.0.2.1:67", "255.255.255.255:68"), ReasonExempt},
		{in, pkt("udp", "192.0.2.1:67", "192.0.2.10:68"), ReasonExempt},
		{out, pkt("udp", "0.0.0.0:68", "255.255.255.255:67"), ReasonExempt},
		{out, pkt("udp", "192.0.2.10:68", "192.0.2.1:67"), ReasonExempt},
		{in, pkt("udp", "203.0.113.66:67", "192.0.2.10:68"), ReasonNoRule},      // off-link "server"
		{in, pkt("udp", "203.0.113.66:67", "255.255.255.255:68"), ReasonNoRule}, // off-link, broadcast
		{in, pkt("udp", "192.0.2.1:67", "192.0.2.11:68"), ReasonNoRule},         // not to this host
		{out, pkt("udp", "192.0.2.10:68", "203.0.113.66:67"), ReasonNoRule},     // exfiltration off the link
		{in, pkt("udp", "192.0.2.1:68", "192.0.2.10:67"), ReasonNoRule},         // the server's direction
		{out, pkt("udp", "192.0.2.10:67", "192.0.2.1:68"), ReasonNoRule},
		// DHCPv6: link-local, and to All_DHCP_Relay_Agents_and_Servers out.
		{in, pkt("udp", "[fe80::1]:547", "[fe80::10]:546"), ReasonExempt},
		{out, pkt("udp", "[fe80::10]:546", "[ff02::1:2]:547"), ReasonExempt},
		{in, pkt("udp", "[2001:db8:66::1]:547", "[2001:db8::10]:546"), ReasonNoRule},
		{out, pkt("udp", "[fe80::10]:546", "[2001:db8:66::1]:547"), ReasonNoRule},
	})
	e.opt.ExemptDHCP = false
	runSteps(t, w, []step{{in, pkt("udp", "192.0.2.1:67", "255.255.255.255:68"), ReasonNoRule}})
}

// Every reason has a name and a verdict of its own (a new reason cannot silently accept).
func TestReasonTable(t *testing.T) {
	drops := map[Reason]bool{ReasonNoRule: true, ReasonMalformed: true, ReasonTableFull: true,
		ReasonUnknownIface: true, ReasonFragment: true, ReasonSpoofedLocal: true, ReasonSpoofed: true}
	seen := map[string]bool{}
	for r := range NumReasons {
		if r.String() == "" || seen[r.String()] {
			t.Errorf("Reason(%d).String() = %q: empty or repeated", r, r.String())
		}
		seen[r.String()] = true
		if want := map[bool]Verdict{true: Drop, false: Accept}[drops[r]]; r.Verdict() != want {
			t.Errorf("%v.Verdict() = %v; want %v", r, r.Verdict(), want)
		}
	}
	if NumReasons.Verdict() != Drop {
		t.Errorf("an unknown reason's verdict = %v; want drop", NumReasons.Verdict())
	}
}
