package rules

import (
	"net/netip"
	"testing"
)

// Table tests of SPEC part 1, one row per packet: the compiled policy's verdict, the rule
// that allowed it (its label, "sg-a/ingress/3"), and whether the flow is untracked.

type row struct {
	k    pkt
	want verdict
}

// check judges every row on iface and, to keep the two honest, also asks the reference.
func check(t *testing.T, p *Policy, env Env, iface string, rows []row) {
	t.Helper()
	ref := &reference{m: p.Model, locals: env.LocalAddrs}
	for _, tt := range rows {
		if got := decide(t, p, iface, tt.k); got != tt.want {
			t.Errorf("Decide(%v) = %v; want %v", tt.k, got, tt.want)
		}
		checkAgainstReference(t, p, ref, iface, tt.k, "reference")
	}
}

// SPEC 1.1: each protocol form. egress: [] keeps every flow tracked here.
func TestSpecProtocols(t *testing.T) {
	p := policy(t, group(`
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}          # 0
      - {ip_protocol: tcp, from_port: 1000, to_port: 2000, cidr_ipv4: 192.0.2.0/24}   # 1
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 198.51.100.0/24}    # 2
      - {ip_protocol: icmp, from_port: 8, to_port: 8, cidr_ipv4: 192.0.2.0/24}        # 3: type 8 code 8, NOT ping
      - {ip_protocol: icmp, from_port: 3, to_port: -1, cidr_ipv4: 192.0.2.0/24}       # 4: type 3, all codes
      - {ip_protocol: icmp, from_port: -1, to_port: -1, cidr_ipv4: 203.0.113.0/24}    # 5: all types
      - {ip_protocol: icmpv6, cidr_ipv6: "2001:db8::/32"}                             # 6: ports omitted = all
      - {ip_protocol: icmpv6, from_port: 128, to_port: 0, cidr_ipv6: "::/0"}          # 7: echo request
      - {ip_protocol: icmpv6, from_port: 1, cidr_ipv6: "2001:db8:1::/48"}             # 8: to_port omitted = all codes
      - {ip_protocol: "47", from_port: 5, to_port: 5, cidr_ipv4: 192.0.2.0/24}       # 9: GRE, ports ignored
      - {ip_protocol: 6, from_port: 22, to_port: 22, cidr_ipv4: 198.51.100.0/24}      # 10: 6 = tcp
      - {ip_protocol: "17", from_port: 0, to_port: 65535, cidr_ipv4: 203.0.113.0/24}  # 11: 17 = udp
      - {ip_protocol: 1, from_port: 0, to_port: 0, cidr_ipv4: 198.51.100.0/24}        # 12: 1 = icmp, echo reply
      - {ip_protocol: 58, from_port: 2, to_port: 0, cidr_ipv6: "2001:db8::/32"}       # 13: 58 = icmpv6
      - {ip_protocol: icmp, from_port: 255, to_port: 255, cidr_ipv4: 198.51.100.0/24} # 14: the last key
      - {ip_protocol: "0", cidr_ipv6: "2001:db8::/32"}                                # 15: protocol 0
      - {ip_protocol: "255", cidr_ipv4: 0.0.0.0/0}                                    # 16: protocol 255
`, "[]"), Env{})
	check(t, p, Env{}, "eth0", []row{
		// tcp: the range is inclusive at both ends.
		{tcp("203.0.113.5", 80), allow("sg-a/ingress/0")},
		{tcp("203.0.113.5", 79), deny},
		{tcp("203.0.113.5", 81), deny},
		{tcp("192.0.2.9", 999), deny},
		{tcp("192.0.2.9", 1000), allow("sg-a/ingress/1")},
		{tcp("192.0.2.9", 1500), allow("sg-a/ingress/1")},
		{tcp("192.0.2.9", 2000), allow("sg-a/ingress/1")},
		{tcp("192.0.2.9", 2001), deny},
		{tcp("198.51.100.1", 1000), deny},
		{udp("192.0.2.9", 1000), deny}, // a tcp rule is not a udp rule
		// udp
		{udp("198.51.100.1", 53), allow("sg-a/ingress/2")},
		{udp("198.51.100.1", 54), deny},
		{tcp("198.51.100.1", 53), deny},
		{udp("192.0.2.1", 53), deny},
		// icmp: from 8 to 8 is type 8 code 8 — ping (type 8 code 0) is denied.
		{icmp("192.0.2.9", 8, 0), deny},
		{icmp("192.0.2.9", 8, 8), allow("sg-a/ingress/3")},
		{icmp("192.0.2.9", 8, 9), deny},
		{icmp("192.0.2.9", 3, 0), allow("sg-a/ingress/4")},
		{icmp("192.0.2.9", 3, 4), allow("sg-a/ingress/4")},
		{icmp("192.0.2.9", 3, 255), allow("sg-a/ingress/4")},
		{icmp("192.0.2.9", 2, 255), deny},
		{icmp("192.0.2.9", 4, 0), deny},
		{icmp("203.0.113.7", 0, 0), allow("sg-a/ingress/5")},
		{icmp("203.0.113.7", 255, 255), allow("sg-a/ingress/5")},
		{icmp("198.51.100.1", 0, 0), allow("sg-a/ingress/12")},
		{icmp("198.51.100.1", 0, 1), deny},
		{icmp("198.51.100.1", 255, 255), allow("sg-a/ingress/14")},
		{icmp("198.51.100.1", 255, 254), deny},
		{tcp("203.0.113.7", 8), deny}, // an icmp rule is not a tcp rule
		// icmpv6
		{icmp6("2001:db8::1", 135, 0), allow("sg-a/ingress/6")},
		{icmp6("2001:db8:ffff::1", 255, 255), allow("sg-a/ingress/6")},
		{icmp6("2001:db9::1", 128, 0), allow("sg-a/ingress/7")},
		{icmp6("2001:db9::1", 128, 1), deny},
		{icmp6("2001:db9::1", 129, 0), deny},
		{icmp6("2001:db8:1::1", 1, 4), allow("sg-a/ingress/6")},
		{icmp("2001:db8::1", 8, 0), deny}, // icmp (1) is not icmpv6 (58)
		// numbers are names
		{tcp("198.51.100.1", 22), allow("sg-a/ingress/10")},
		{udp("198.51.100.1", 22), deny},
		{udp("203.0.113.7", 0), allow("sg-a/ingress/11")},
		{udp("203.0.113.7", 65535), allow("sg-a/ingress/11")},
		// other protocols ignore ports
		{protoPkt(47, "192.0.2.9", 0), allow("sg-a/ingress/9")},
		{protoPkt(47, "192.0.2.9", 6), allow("sg-a/ingress/9")},
		{protoPkt(47, "198.51.100.1", 5), deny},
		{protoPkt(50, "192.0.2.9", 5), deny},
		{protoPkt(0, "2001:db8::1", 0), allow("sg-a/ingress/15")},
		{protoPkt(0, "192.0.2.9", 0), deny},
		{protoPkt(255, "192.0.2.9", 9), allow("sg-a/ingress/16")},
		{protoPkt(254, "192.0.2.9", 9), deny},
		// nothing in egress
		{out(tcp("203.0.113.5", 80)), deny},
		{out(icmp6("2001:db8::1", 128, 0)), deny},
	})
}

// SPEC 1.1: -1 and `all` are every protocol, and ports written with them are ignored.
func TestSpecAllProtocols(t *testing.T) {
	p := policy(t, group(`
      - {ip_protocol: "-1", cidr_ipv4: 10.0.0.0/8}
      - {ip_protocol: all, cidr_ipv6: "2001:db8::/32"}
      - {ip_protocol: -1, from_port: 80, to_port: 80, cidr_ipv4: 192.0.2.0/24}
      - {ip_protocol: ALL, cidr_ipv4: 198.51.100.0/24}
`, "[]"), Env{})
	check(t, p, Env{}, "eth0", []row{
		{tcp("10.1.2.3", 1), allow("sg-a/ingress/0")},
		{udp("10.1.2.3", 65535), allow("sg-a/ingress/0")},
		{icmp("10.1.2.3", 8, 0), allow("sg-a/ingress/0")},
		{protoPkt(47, "10.1.2.3", 0), allow("sg-a/ingress/0")},
		{protoPkt(0, "10.1.2.3", 0), allow("sg-a/ingress/0")},
		{icmp6("2001:db8::5", 128, 0), allow("sg-a/ingress/1")},
		{tcp("2001:db8::5", 443), allow("sg-a/ingress/1")},
		{protoPkt(132, "2001:db8::5", 0), allow("sg-a/ingress/1")},
		{tcp("192.0.2.1", 443), allow("sg-a/ingress/2")},
		{udp("192.0.2.1", 1), allow("sg-a/ingress/2")},
		{icmp("198.51.100.200", 3, 4), allow("sg-a/ingress/3")},
		{tcp("11.0.0.0", 80), deny},
		{tcp("9.255.255.255", 80), deny},
		{tcp("2001:db9::", 80), deny},
	})
}

// SPEC 1.1: an IPv4 rule never matches IPv6 traffic, and vice versa — /0 included.
func TestSpecFamilies(t *testing.T) {
	p := policy(t, group(`
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv6: "::/0"}
      - {ip_protocol: -1, cidr_ipv6: "::/96"}
`, `
      - {ip_protocol: -1, cidr_ipv4: 0.0.0.0/0}
`), Env{})
	check(t, p, Env{}, "eth0", []row{
		{tcp("192.0.2.1", 22), allowU("sg-a/ingress/0")},
		{tcp("2001:db8::1", 22), deny},
		{tcp("::ffff:192.0.2.1", 22), deny}, // an IPv4-mapped IPv6 address is IPv6 to Decide
		{udp("2001:db8::1", 53), allow("sg-a/ingress/1")},
		{udp("192.0.2.1", 53), deny},
		{tcp("::c000:201", 22), allow("sg-a/ingress/2")}, // ::192.0.2.1 is IPv6
		{out(tcp("203.0.113.5", 443)), allow("sg-a/egress/0")},
		{out(tcp("2001:db8::1", 443)), deny},
	})
}

// SPEC 1.1: a prefix list holds prefixes of both families; each matches its own family.
func TestSpecPrefixLists(t *testing.T) {
	src := `
security_groups:
  - group_id: sg-a
    ingress:
      - {ip_protocol: tcp, from_port: 443, to_port: 443, prefix_list_id: pl-corp}
      - {ip_protocol: udp, from_port: 1, to_port: 1, prefix_list_id: pl-empty}
    egress: []
prefix_lists:
  - prefix_list_id: pl-corp
    entries: [198.51.100.0/24, "2001:db8:100::/48", 192.0.2.77/32, 198.51.100.9/24]
  - {prefix_list_id: pl-empty, entries: []}
interfaces:
  - {name: eth0, security_groups: [sg-a]}
`
	p := policy(t, src, Env{})
	check(t, p, Env{}, "eth0", []row{
		{tcp("198.51.100.0", 443), allow("sg-a/ingress/0")},
		{tcp("198.51.100.255", 443), allow("sg-a/ingress/0")},
		{tcp("198.51.101.0", 443), deny},
		{tcp("2001:db8:100::1", 443), allow("sg-a/ingress/0")},
		{tcp("2001:db8:100:ffff:ffff:ffff:ffff:ffff", 443), allow("sg-a/ingress/0")},
		{tcp("2001:db8:101::", 443), deny},
		{tcp("192.0.2.77", 443), allow("sg-a/ingress/0")},
		{tcp("192.0.2.78", 443), deny},
		{tcp("198.51.100.1", 444), deny},
		{udp("198.51.100.1", 1), deny},
	})
	// 198.51.100.9/24 is 198.51.100.0/24 again: canonicalised and listed once.
	if got, want := len(p.Model.PrefixLists["pl-corp"]), 3; got != want {
		t.Errorf("len(PrefixLists[pl-corp]) = %d; want %d (%v)", got, want, p.Model.PrefixLists["pl-corp"])
	}
}

// SPEC 1.1: a group reference matches the local addresses of every interface carrying
// the group (self-reference included) and the configured members; it does not import the
// referenced group's rules.
func TestSpecGroupReferences(t *testing.T) {
	src := `
security_groups:
  - group_id: sg-a
    ingress:
      - {ip_protocol: -1, referenced_group_id: sg-a}
      - {ip_protocol: tcp, from_port: 22, to_port: 22, referenced_group_id: sg-b}
      - {ip_protocol: udp, from_port: 9, to_port: 9, referenced_group_id: sg-c}
    egress: []
  - group_id: sg-b
    ingress:
      - {ip_protocol: -1, cidr_ipv4: 0.0.0.0/0}
    egress: []
  - group_id: sg-c
    egress: []
interfaces:
  - {name: eth0, security_groups: [sg-a]}
  - {name: eth1, security_groups: [sg-b]}
members:
  - {address: 198.51.100.7, security_groups: [sg-a]}
  - {address: "2001:db8::7", security_groups: [sg-b, sg-a]}
  - {address: 203.0.113.9, security_groups: [sg-b]}
`
	env := locals("eth0=192.0.2.10", "eth0=2001:db8::10", "eth1=192.0.2.20", "eth1=fe80::1%eth1")
	p := policy(t, src, env)
	check(t, p, env, "eth0", []row{
		{udp("192.0.2.10", 5), allow("sg-a/ingress/0")}, // eth0's own address: self-reference
		{udp("2001:db8::10", 5), allow("sg-a/ingress/0")},
		{udp("198.51.100.7", 5), allow("sg-a/ingress/0")}, // a member of sg-a
		{icmp("2001:db8::7", 8, 0), allow("sg-a/ingress/0")},
		{udp("192.0.2.11", 5), deny},
		{udp("198.51.100.8", 5), deny},
		{tcp("192.0.2.20", 22), allow("sg-a/ingress/1")},  // eth1 carries sg-b
		{tcp("fe80::1", 22), allow("sg-a/ingress/1")},     // zone dropped
		{tcp("203.0.113.9", 22), allow("sg-a/ingress/1")}, // a member of sg-b
		{tcp("192.0.2.20", 23), deny},
		{tcp("203.0.113.1", 22), deny},
		{tcp("203.0.113.1", 80), deny}, // sg-b's rules are not imported
		{udp("192.0.2.20", 9), deny},   // sg-c is carried by no one
	})
	// Without local addresses (sgd check on another machine) only members match.
	p = policy(t, src, Env{})
	check(t, p, Env{}, "eth0", []row{
		{udp("192.0.2.10", 5), deny},
		{udp("198.51.100.7", 5), allow("sg-a/ingress/0")},
		{tcp("192.0.2.20", 22), deny},
	})
}

// SPEC 1.2: the rules of all groups on an interface form one allow set; the reported rule
// is the first in config order (Model.Groups), whatever order the interface lists them.
func TestSpecGroupsMerge(t *testing.T) {
	src := `
security_groups:
  - group_id: sg-a
    ingress:
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 192.0.2.0/24}
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 192.0.2.0/24}
    egress: []
  - group_id: sg-b
    ingress:
      - {ip_protocol: tcp, from_port: 0, to_port: 1024, cidr_ipv4: 192.0.2.128/25}
      - {ip_protocol: tcp, from_port: 8080, to_port: 8080, cidr_ipv4: 0.0.0.0/0}
    egress:
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 198.51.100.53/32}
  - group_id: sg-c
    ingress:
      - {ip_protocol: udp, from_port: 123, to_port: 123, cidr_ipv4: 0.0.0.0/0}
    egress: []
interfaces:
  - {name: eth0, security_groups: [sg-b, sg-a]}
  - {name: eth1, security_groups: [sg-a]}
  - {name: eth2, security_groups: [sg-a, sg-b]}
`
	p := policy(t, src, Env{})
	rows := []row{
		{tcp("192.0.2.1", 22), allow("sg-a/ingress/0")},
		{tcp("192.0.2.200", 22), allow("sg-a/ingress/0")}, // sg-b/ingress/0 also allows it
		{tcp("192.0.2.200", 80), allow("sg-a/ingress/1")},
		{tcp("192.0.2.200", 81), allow("sg-b/ingress/0")},
		{tcp("192.0.2.1", 81), deny},
		{tcp("203.0.113.1", 8080), allow("sg-b/ingress/1")},
		{udp("203.0.113.1", 123), deny}, // sg-c is on no interface here
		{out(udp("198.51.100.53", 53)), allow("sg-b/egress/0")},
		{out(udp("198.51.100.54", 53)), deny},
	}
	check(t, p, Env{}, "eth0", rows)
	check(t, p, Env{}, "eth2", rows)
	check(t, p, Env{}, "eth1", []row{
		{tcp("192.0.2.200", 22), allow("sg-a/ingress/0")},
		{tcp("192.0.2.200", 81), deny},
		{tcp("203.0.113.1", 8080), deny},
		{out(udp("198.51.100.53", 53)), deny},
	})
}

// SPEC 1.3: omitted egress is AWS's default (all to 0.0.0.0/0 and ::/0); `egress: []` is
// none; no ingress is nothing in.
func TestSpecDefaultEgress(t *testing.T) {
	src := `
security_groups:
  - group_id: sg-omitted
  - group_id: sg-empty
    egress: []
  - group_id: sg-null
    egress: null
interfaces:
  - {name: eth0, security_groups: [sg-omitted]}
  - {name: eth1, security_groups: [sg-empty]}
  - {name: eth2, security_groups: [sg-null]}
`
	p := policy(t, src, Env{})
	for _, iface := range []string{"eth0", "eth2"} {
		g := map[string]string{"eth0": "sg-omitted", "eth2": "sg-null"}[iface]
		check(t, p, Env{}, iface, []row{
			{out(tcp("203.0.113.5", 443)), allow(g + "/egress/0")},
			{out(udp("0.0.0.0", 0)), allow(g + "/egress/0")},
			{out(protoPkt(47, "255.255.255.255", 0)), allow(g + "/egress/0")},
			{out(tcp("2001:db8::1", 443)), allow(g + "/egress/1")},
			{out(icmp6("::", 128, 0)), allow(g + "/egress/1")},
			{tcp("203.0.113.5", 443), deny}, // no ingress: nothing in
			{icmp6("2001:db8::1", 128, 0), deny},
		})
	}
	check(t, p, Env{}, "eth1", []row{
		{out(tcp("203.0.113.5", 443)), deny},
		{out(tcp("2001:db8::1", 443)), deny},
		{out(icmp("203.0.113.5", 8, 0)), deny},
	})
	if r := p.Model.Group("sg-omitted").Egress; len(r) != 2 || !r[0].Default || !r[1].Default {
		t.Errorf("Group(sg-omitted).Egress = %+v; want the two AWS default rules", r)
	}
}

// SPEC 1.3: an interface with no groups gets the group named default — the config's own,
// or AWS's default group (all in from itself, all out) when the config has none.
func TestSpecDefaultGroup(t *testing.T) {
	t.Run("defined", func(t *testing.T) {
		src := `
security_groups:
  - group_id: sg-other
    ingress: [{ip_protocol: -1, cidr_ipv4: 0.0.0.0/0}]
  - group_id: sg-0abc
    group_name: Default
    ingress: [{ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 192.0.2.0/24}]
    egress: []
interfaces:
  - {name: eth0}
  - {name: eth1, security_groups: []}
  - {name: eth2, security_groups: [default]}
`
		p := policy(t, src, Env{})
		for _, iface := range []string{"eth0", "eth1", "eth2"} {
			if got := p.Interface(iface).Groups; len(got) != 1 || got[0] != "sg-0abc" {
				t.Errorf("Interface(%s).Groups = %v; want [sg-0abc]", iface, got)
			}
			check(t, p, Env{}, iface, []row{
				{tcp("192.0.2.1", 22), allow("sg-0abc/ingress/0")},
				{tcp("203.0.113.1", 22), deny},
				{out(tcp("192.0.2.1", 22)), deny},
			})
		}
	})
	t.Run("synthesized", func(t *testing.T) {
		src := `
security_groups:
  - group_id: sg-default
    group_name: not-the-default
    ingress: [{ip_protocol: -1, cidr_ipv4: 0.0.0.0/0}]
interfaces:
  - {name: eth0}
  - {name: eth1, security_groups: [sg-default]}
members:
  - {address: 198.51.100.7, security_groups: [sg-default]}
  - {address: 203.0.113.77, security_groups: [Default]}
`
		env := locals("eth0=192.0.2.10", "eth0=2001:db8::10", "eth1=192.0.2.20")
		p := policy(t, src, env)
		// sg-default is taken by the config, so AWS's group gets another id.
		const id = "sg-default-sgd"
		g := p.Model.Group(id)
		if g == nil || !g.Synthesized || g.Name != "default" {
			t.Fatalf("Group(%s) = %+v; want AWS's synthesized default group", id, g)
		}
		check(t, p, env, "eth0", []row{
			{tcp("192.0.2.10", 22), allow(id + "/ingress/0")}, // from itself: eth0 carries it
			{udp("2001:db8::10", 53), allow(id + "/ingress/0")},
			{tcp("192.0.2.20", 22), deny},                       // eth1 carries the config's sg-default
			{tcp("198.51.100.7", 22), deny},                     // a member of the config's sg-default
			{tcp("203.0.113.77", 22), allow(id + "/ingress/0")}, // a member carrying AWS's default group
			{tcp("203.0.113.1", 22), deny},
			{out(tcp("203.0.113.1", 22)), allow(id + "/egress/0")},
			{out(tcp("2001:db8::1", 22)), allow(id + "/egress/1")},
		})
		check(t, p, env, "eth1", []row{
			{tcp("203.0.113.1", 22), allowU("sg-default/ingress/0")},
		})
	})
}

// SPEC 1.4: untracked flows.
func TestSpecUntracked(t *testing.T) {
	for _, tt := range []struct {
		name            string
		ingress, egress string
		rows            []row
	}{
		{"default egress reverses everything", `
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv6: "::/0"}
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 192.0.2.0/24}
      - {ip_protocol: icmp, from_port: -1, to_port: -1, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: "47", cidr_ipv4: 0.0.0.0/0}`, "", []row{
			{tcp("203.0.113.1", 22), allowU("sg-a/ingress/0")},
			{udp("2001:db8::1", 53), allowU("sg-a/ingress/1")},
			{tcp("192.0.2.1", 80), allow("sg-a/ingress/2")},      // specific CIDR: tracked
			{icmp("203.0.113.1", 8, 0), allow("sg-a/ingress/3")}, // ICMP: always tracked
			{protoPkt(47, "203.0.113.1", 0), allow("sg-a/ingress/4")},
			{out(tcp("203.0.113.1", 443)), allow("sg-a/egress/0")}, // no all-ports ingress rule
		}},
		{"reverse tcp all ports", `
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 0.0.0.0/0}`, `
      - {ip_protocol: "6", from_port: 0, to_port: 65535, cidr_ipv4: 0.0.0.0/0}`, []row{
			{tcp("203.0.113.1", 22), allowU("sg-a/ingress/0")},
			{udp("203.0.113.1", 53), allow("sg-a/ingress/1")}, // the reverse rule is tcp only
		}},
		{"reverse limited in ports", `
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 0.0.0.0/0}`, `
      - {ip_protocol: tcp, from_port: 1024, to_port: 65535, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: tcp, from_port: 0, to_port: 1023, cidr_ipv4: 0.0.0.0/0}`, []row{
			{tcp("203.0.113.1", 22), allow("sg-a/ingress/0")}, // two rules covering all ports are not one
		}},
		{"reverse limited in peer", `
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 0.0.0.0/0}`, `
      - {ip_protocol: -1, cidr_ipv4: 0.0.0.0/1}
      - {ip_protocol: -1, cidr_ipv4: 128.0.0.0/1}`, []row{
			{tcp("203.0.113.1", 22), allow("sg-a/ingress/0")},
		}},
		{"reverse in the other family only", `
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv6: "::/0"}`, `
      - {ip_protocol: udp, from_port: 0, to_port: 65535, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: tcp, from_port: 0, to_port: 65535, cidr_ipv6: "::/0"}`, []row{
			{tcp("203.0.113.1", 22), allow("sg-a/ingress/0")},
			{tcp("2001:db8::1", 22), allowU("sg-a/ingress/1")},
			{out(udp("203.0.113.1", 9)), allow("sg-a/egress/0")}, // no udp ingress from 0.0.0.0/0
		}},
		{"egress flows", `
      - {ip_protocol: tcp, from_port: 0, to_port: 65535, cidr_ipv4: 0.0.0.0/0}`, `
      - {ip_protocol: tcp, from_port: 443, to_port: 443, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 198.51.100.0/24}`, []row{
			{out(tcp("203.0.113.1", 443)), allowU("sg-a/egress/0")},
			{out(udp("203.0.113.1", 53)), allow("sg-a/egress/1")},
			{out(tcp("198.51.100.1", 80)), allow("sg-a/egress/2")},
			{tcp("203.0.113.1", 5), allow("sg-a/ingress/0")}, // egress has no all-ports rule
		}},
		{"any allowing /0 rule counts, not only the first", `
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 192.0.2.0/24}
      - {ip_protocol: tcp, from_port: 0, to_port: 1023, cidr_ipv4: 0.0.0.0/0}`, "", []row{
			{tcp("192.0.2.1", 22), allowU("sg-a/ingress/0")},
			{tcp("192.0.2.1", 1023), allowU("sg-a/ingress/1")},
			{tcp("192.0.2.1", 1024), deny},
		}},
		{"a prefix list entry 0.0.0.0/0 is 0.0.0.0/0", `
      - {ip_protocol: tcp, from_port: 22, to_port: 22, prefix_list_id: pl-any}`, `
      - {ip_protocol: -1, prefix_list_id: pl-any}`, []row{
			{tcp("203.0.113.1", 22), allowU("sg-a/ingress/0")},
			{tcp("2001:db8::1", 22), allow("sg-a/ingress/0")},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := group(tt.ingress, tt.egress) + "prefix_lists:\n  - {prefix_list_id: pl-any, entries: [0.0.0.0/0, \"2001:db8::/32\"]}\n"
			p := policy(t, src, Env{})
			check(t, p, Env{}, "eth0", tt.rows)
		})
	}
}

// SPEC 1.1: non-canonical prefixes are canonicalised; duplicates are found after it.
func TestSpecCanonicalPrefixes(t *testing.T) {
	p := policy(t, group(`
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 10.1.2.3/8}
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv6: "2001:db8::1/32"}
      - {ip_protocol: tcp, from_port: 23, to_port: 23, cidr_ipv4: " 192.0.2.9/0 "}
`, "[]"), Env{})
	if got := p.Rules[1].Rule.Peer.Prefix; got != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("peer of 10.1.2.3/8 = %v; want 10.0.0.0/8", got)
	}
	check(t, p, Env{}, "eth0", []row{
		{tcp("10.0.0.0", 22), allow("sg-a/ingress/0")},
		{tcp("10.200.0.1", 22), allow("sg-a/ingress/0")},
		{tcp("11.0.0.0", 22), deny},
		{tcp("2001:db8:ffff::1", 22), allow("sg-a/ingress/1")},
		{tcp("2001:db9::", 22), deny},
		{tcp("203.0.113.1", 23), allow("sg-a/ingress/2")},
	})
	es := configErrors(t, "dup.yaml", group(`
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 10.1.2.3/8}
      - {ip_protocol: "6", from_port: 22, to_port: 22, cidr_ipv4: 10.0.0.0/8}
      - {ip_protocol: icmpv6, cidr_ipv6: "2001:db8::1/32"}
      - {ip_protocol: "58", from_port: -1, to_port: -1, cidr_ipv6: "2001:db8::/32"}
      - {ip_protocol: "47", from_port: 1, to_port: 1, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: "47", cidr_ipv4: 0.0.0.0/0}
`, ""), Options{})
	if got := es.Codes(); len(got) != 3 || got[0] != CodePermissionDuplicate || got[1] != CodePermissionDuplicate || got[2] != CodePermissionDuplicate {
		t.Fatalf("Validate codes = %v; want 3 × %s\n%v", got, CodePermissionDuplicate, es)
	}
	for i, where := range []string{"group sg-a ingress[1]", "group sg-a ingress[3]", "group sg-a ingress[5]"} {
		if es[i].Where != where {
			t.Errorf("error %d Where = %q; want %q", i, es[i].Where, where)
		}
	}
}

// SPEC 2.1: the example of the spec, judged.
func TestSpecExample(t *testing.T) {
	env := locals("eth0=192.0.2.10")
	p := policy(t, specExample(t), env)
	check(t, p, env, "eth0", []row{
		{tcp("203.0.113.9", 80), allowU("sg-web/ingress/0")},
		{tcp("2001:db8::9", 80), deny},
		{tcp("203.0.113.9", 443), allowU("sg-web/ingress/1")},
		{tcp("203.0.113.42", 22), allow("sg-web/ingress/2")},
		{tcp("203.0.113.43", 22), deny},
		{tcp("10.0.2.15", 22), allow("sg-web/ingress/3")}, // a member of sg-mgmt
		{tcp("10.0.2.16", 22), deny},
		{icmp("198.51.100.1", 8, 0), allow("sg-web/ingress/4")},
		{icmp("198.51.100.1", 0, 0), deny},
		{icmp("2001:db8:100::1", 8, 3), allow("sg-web/ingress/4")}, // icmp rules match by number, not family
		{out(udp("203.0.113.9", 53)), allow("sg-web/egress/0")},
		{out(udp("2001:db8::9", 53)), allow("sg-web/egress/1")},
	})
}
