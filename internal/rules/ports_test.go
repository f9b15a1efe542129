package rules

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Ports (SPEC 4.3): the instances' interfaces as the host sees them.

// hypervisor is the three-instance lab of SPEC 4.3: web (HTTP from anywhere, SSH from
// sg-mgmt), db (3306 from sg-web), mgmt, with no members: entry.
const hypervisor = `
security_groups:
  - group_id: sg-web
    ingress:
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}
      - {ip_protocol: tcp, from_port: 22, to_port: 22, referenced_group_id: sg-mgmt}
    egress: []
  - group_id: sg-db
    ingress:
      - {ip_protocol: tcp, from_port: 3306, to_port: 3306, referenced_group_id: sg-web}
    egress: []
  - group_id: sg-mgmt
interfaces:
  - {name: eth0, security_groups: [sg-mgmt]}
ports:
  - {name: vweb0, instance_id: i-web, addresses: [198.51.100.10, "2001:db8:a::10"], security_groups: [sg-web]}
  - {name: vdb0, network_interface_id: eni-db, addresses: [198.51.100.20], security_groups: [sg-db],
     connection_tracking: {tcp_established_timeout: 3600}}
  - {name: vmgmt0, addresses: [198.51.100.30], security_groups: [sg-mgmt], source_dest_check: false}
`

func TestPortsValidate(t *testing.T) {
	m := model(t, hypervisor, Options{})
	if len(m.Interfaces) != 1 || len(m.Ports) != 3 {
		t.Fatalf("Validate: %d interfaces, %d ports; want 1 and 3", len(m.Interfaces), len(m.Ports))
	}
	web, db, mgmt := m.Ports[0], m.Ports[1], m.Ports[2]
	for _, tt := range []struct {
		what      string
		got, want any
	}{
		{"web instance", web.InstanceID, "i-web"},
		{"web ENI (derived)", web.ENI, PortENI("vweb0")},
		{"db ENI (given)", db.ENI, "eni-db"},
		{"web addresses", web.Addrs, []netip.Addr{netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("2001:db8:a::10")}},
		{"web source/dest check (default)", web.SourceDestCheck, true},
		{"mgmt source/dest check", mgmt.SourceDestCheck, false},
		{"db timeout", db.Timeouts.TCPEstablished.Seconds(), 3600.0},
		{"db udp timeout (default)", db.Timeouts.UDP, DefaultTimeouts().UDP},
	} {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %v; want %v", tt.what, tt.got, tt.want)
		}
	}
	if id := PortENI("vweb0"); len(id) != 21 || !strings.HasPrefix(id, "eni-") || id == PortENI("vdb0") {
		t.Errorf("PortENI(vweb0) = %q; want eni- and 17 hex digits, distinct per name", id)
	}
}

func TestPortsValidateErrors(t *testing.T) {
	const groups = "security_groups:\n  - group_id: sg-a\n"
	for _, tt := range []struct {
		name, src, code, where, field string
	}{
		{"name missing", groups + "ports:\n  - {addresses: [192.0.2.1]}\n", CodeMissingParameter, "ports[0]", "name"},
		{"name malformed", groups + "ports:\n  - {name: \"a/b\"}\n", CodeInterfaceMalformed, "port a/b", "name"},
		{"lo", groups + "ports:\n  - {name: lo}\n", CodeParameterValue, "port lo", "name"},
		{"port twice", groups + "ports:\n  - {name: v0}\n  - {name: v0}\n", CodeInterfaceDuplicate, "port v0", "name"},
		{"interface and port", groups + "interfaces:\n  - {name: v0}\nports:\n  - {name: v0}\n", CodeInterfaceDuplicate, "port v0", "name"},
		{"ENI malformed", groups + "ports:\n  - {name: v0, network_interface_id: nic-1}\n", CodeInterfaceMalformed, "port v0", "network_interface_id"},
		{"ENI twice", groups + "ports:\n  - {name: v0, network_interface_id: eni-a}\n  - {name: v1, network_interface_id: eni-a}\n", CodeInterfaceDuplicate, "port v1", "network_interface_id"},
		{"instance malformed", groups + "ports:\n  - {name: v0, instance_id: web}\n", CodeInstanceIDMalformed, "port v0", "instance_id"},
		{"address malformed", groups + "ports:\n  - {name: v0, addresses: [192.0.2.300]}\n", CodeMemberAddrMalformed, "port v0", "addresses[0]"},
		{"address a prefix", groups + "ports:\n  - {name: v0, addresses: [192.0.2.0/24]}\n", CodeMemberAddrMalformed, "port v0", "addresses[0]"},
		{"address mapped", groups + "ports:\n  - {name: v0, addresses: [\"::ffff:192.0.2.1\"]}\n", CodeMemberAddrMalformed, "port v0", "addresses[0]"},
		{"address multicast", groups + "ports:\n  - {name: v0, addresses: [224.0.0.1]}\n", CodeParameterValue, "port v0", "addresses[0]"},
		{"address on two ports", groups + "ports:\n  - {name: v0, addresses: [192.0.2.1]}\n  - {name: v1, addresses: [192.0.2.1]}\n", CodeParameterValue, "port v1", "addresses[0]"},
		{"group undefined", groups + "ports:\n  - {name: v0, security_groups: [sg-b]}\n", CodeGroupNotFound, "port v0", "security_groups[0]"},
		{"groups quota", groups + "ports:\n  - {name: v0, security_groups: [sg-a, sg-b, sg-c, sg-d, sg-e, sg-f]}\n", CodeGroupsLimit, "port v0", "security_groups"},
		{"timeout", groups + "ports:\n  - {name: v0, connection_tracking: {udp_timeout: 10}}\n", CodeParameterValue, "port v0", "connection_tracking.udp_timeout"},
		{"unknown field", groups + "ports:\n  - {name: v0, source_dst_check: false}\n", CodeUnknownParameter, "port v0", ""},
		{"check not a bool", groups + "ports:\n  - {name: v0, source_dest_check: no}\n", CodeMalformedConfig, "port v0", "source_dest_check"},
	} {
		es := configErrors(t, "c.yaml", tt.src, Options{})
		found := false
		for _, e := range es {
			found = found || e.Code == tt.code && e.Where == tt.where && e.Field == tt.field
		}
		if !found {
			t.Errorf("%s: Validate = %v; want %s at %s field %q", tt.name, es, tt.code, tt.where, tt.field)
		}
	}
}

// A port's addresses are members of its groups: referenced_group_id matches them with no
// members: entry, and each port is its own attachment with its groups' rules.
func TestPortsCompileMembership(t *testing.T) {
	p := policy(t, hypervisor, Env{})
	if got := p.PortNames(); !slices.Equal(got, []string{"vweb0", "vdb0", "vmgmt0"}) {
		t.Errorf("PortNames() = %v", got)
	}
	if got := p.InterfaceNames(); !slices.Equal(got, []string{"eth0"}) {
		t.Errorf("InterfaceNames() = %v; want [eth0] (ports are not this host's interfaces)", got)
	}
	if itf := p.Interface("vweb0"); itf == nil || itf.Port == nil || itf.Port.InstanceID != "i-web" || !itf.Port.SourceDestCheck {
		t.Fatalf("Interface(vweb0) = %+v; want the port with its instance", itf)
	}
	if p.Interface("eth0").Port != nil {
		t.Errorf("Interface(eth0).Port is set; an interface is not a port")
	}
	for _, tt := range []struct {
		iface string
		k     pkt
		want  verdict
	}{
		{"vweb0", tcp("198.51.100.30", 22), allow("sg-web/ingress/1")}, // mgmt, by its port's address
		{"vweb0", tcp("198.51.100.20", 22), deny},                      // db is not in sg-mgmt
		{"vweb0", tcp("203.0.113.9", 80), allow("sg-web/ingress/0")},
		{"vdb0", tcp("198.51.100.10", 3306), allow("sg-db/ingress/0")}, // web, IPv4
		{"vdb0", tcp("2001:db8:a::10", 3306), allow("sg-db/ingress/0")},
		{"vdb0", tcp("198.51.100.30", 3306), deny},
		{"vweb0", out(tcp("198.51.100.20", 3306)), deny}, // egress: []
		{"vmgmt0", out(tcp("198.51.100.10", 22)), allow("sg-mgmt/egress/0")},
	} {
		if got := decide(t, p, tt.iface, tt.k); got != tt.want {
			t.Errorf("Decide(%s, %v) = %v; want %v", tt.iface, tt.k, got, tt.want)
		}
	}
	ex := p.Explain(Query{Iface: "vweb0", Direction: Ingress, Proto: 6, Src: netip.MustParseAddr("198.51.100.30"), Dst: netip.MustParseAddr("198.51.100.10"), Port: 22})
	if !ex.Allowed || ex.Rule == nil || ex.Rule.GroupID != "sg-web" {
		t.Errorf("Explain(vweb0 ingress tcp/22 from mgmt) = %+v; want allowed by sg-web", ex)
	}
}
