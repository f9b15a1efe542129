package rules

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Validation (SPEC 1.5): every code, with the group, rule, field and line it names.

// ec2Source says, for every code sgd reports, where AWS documents it or a public thread
// quotes EC2 returning it for the same mistake. "errors-overview" is the EC2 API
// Reference's "Error codes for the Amazon EC2 API" page
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html): its
// "Common client error codes" or "Client error codes for specific actions" table.
// TestValidateErrors refuses a row whose code has no source here.
var ec2Source = map[string]string{
	CodeGroupIDMalformed:    "errors-overview, specific actions; returned: github.com/aws/aws-cdk/issues/20800",
	CodeGroupDuplicate:      "errors-overview, specific actions (a name already used in the VPC)",
	CodeGroupNotFound:       "errors-overview, specific actions",
	CodePrefixListNotFound:  "errors-overview, specific actions (spelled InvalidPrefixListID.NotFound)",
	CodePrefixListMalformed: "errors-overview, specific actions (spelled InvalidPrefixListId.Malformed)",
	// The page: "the specified security group rule is malformed … use CIDR notation".
	// Ports out of range: github.com/boto/boto3/issues/336 ("TCP/UDP port (-1) out of
	// range"); github.com/aws/aws-cli/issues/1066 quotes InvalidParameterValue for the
	// same text, so sgd keeps the documented code.
	CodePermissionMalformed: "errors-overview, specific actions; returned: github.com/boto/boto3/issues/336",
	CodePermissionDuplicate: "errors-overview, specific actions; returned: github.com/galaxyproject/cloudlaunch/issues/56",
	// Unknown protocol: github.com/hashicorp/terraform-provider-aws/issues/1793 ("Invalid
	// value 'all' for IP protocol. Unknown protocol."); none: github.com/nanovms/ops/issues/735
	// ("VPC security group rules must specify protocols explicitly"). Missing ports:
	// github.com/aws/aws-sdk-go-v2/issues/1203 ("Must specify both from and to ports with
	// TCP/UDP"), github.com/lucidsoftware/cumulus/issues/64 ("… with ICMP"). ICMP code out
	// of range: github.com/terraform-aws-modules/terraform-aws-security-group/issues/7,
	// github.com/hashicorp/terraform/issues/13015 (type and code). A group name sg-*:
	// github.com/pulumi/pulumi-awsx/issues/328 ("Group names may not be in the format sg-*").
	CodeParameterValue:      "errors-overview, common client errors; returned: see the comment above",
	CodeMissingParameter:    "errors-overview, common client errors; no peer: github.com/boto/boto3/issues/1078 (\"Missing source specification\")",
	CodeRulesLimit:          "errors-overview, specific actions",
	CodeGroupsLimit:         "errors-overview, specific actions",
	CodeUnknownParameter:    "errors-overview, common client errors",
	CodeInterfaceMalformed:  "errors-overview, specific actions (an eni- id there; a device name here)",
	CodeMemberAddrMalformed: "errors-overview, specific actions",
	CodeRuleIDMalformed:     "errors-overview, specific actions",
	CodeInstanceIDMalformed: "errors-overview, common client errors (InvalidInstanceID.Malformed)",
	// sgd's own, for what no EC2 request can say: a file that does not parse, an
	// interface or a prefix list defined twice in one file (EC2 assigns those ids).
	CodeMalformedConfig:     "sgd's own",
	CodeInterfaceDuplicate:  "sgd's own",
	CodePrefixListDuplicate: "sgd's own",
}

// lines joins its arguments as the lines of a file, so that line N of the file is
// argument N and a test can say which line an error must cite.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// rule1 is a one-group, one-interface config whose ingress has the rule r on line 4.
func rule1(r string) string {
	return lines(
		"security_groups:",
		"  - group_id: sg-a",
		"    ingress:",
		"      - "+r,
		"interfaces:",
		"  - {name: eth0, security_groups: [sg-a]}",
	)
}

func TestValidateErrors(t *testing.T) {
	long := strings.Repeat("x", 256)
	for _, tt := range []struct {
		name  string
		src   string
		code  string
		where string
		field string
		line  int
	}{
		// groups
		{"group id malformed", lines(
			"security_groups:",
			"  - group_id: web"),
			CodeGroupIDMalformed, "group web", "group_id", 2},
		{"group id with underscore", lines(
			"security_groups:",
			"  - {group_id: sg-a_b}"),
			CodeGroupIDMalformed, "group sg-a_b", "group_id", 2},
		{"group id missing", lines(
			"security_groups:",
			"  - group_id: sg-a",
			"  - group_name: web"),
			CodeMissingParameter, "security_groups[1]", "group_id", 3},
		{"group id twice", lines(
			"security_groups:",
			"  - group_id: sg-a",
			"  - group_id: sg-b",
			"  - group_id: sg-a"),
			CodeGroupDuplicate, "group sg-a", "group_id", 4},
		{"group name twice, any case", lines(
			"security_groups:",
			"  - group_id: sg-a",
			"    group_name: Web",
			"  - group_id: sg-b",
			"    group_name: wEB"),
			CodeGroupDuplicate, "group sg-b", "group_name", 5},
		{"group name reserved", lines(
			"security_groups:",
			"  - group_id: sg-a",
			"    group_name: SG-web"),
			CodeParameterValue, "group sg-a", "group_name", 3},
		{"group name twice, trailing spaces dropped", lines(
			"security_groups:",
			"  - {group_id: sg-a, group_name: web}",
			"  - {group_id: sg-b, group_name: \"Web  \"}"),
			CodeGroupDuplicate, "group sg-b", "group_name", 3},
		{"group name characters", lines(
			"security_groups:",
			"  - group_id: sg-a",
			"    group_name: \"web<1>\""),
			CodeParameterValue, "group sg-a", "group_name", 3},
		{"group description too long", lines(
			"security_groups:",
			"  - group_id: sg-a",
			"    description: "+long),
			CodeParameterValue, "group sg-a", "description", 3},
		{"group description characters", lines(
			"security_groups:",
			"  - group_id: sg-a",
			"    description: café"),
			CodeParameterValue, "group sg-a", "description", 3},
		// rules: protocol
		{"protocol missing", rule1("{from_port: 1, to_port: 2, cidr_ipv4: 10.0.0.0/8}"),
			CodeParameterValue, "group sg-a ingress[0]", "ip_protocol", 4},
		{"protocol name", rule1("{ip_protocol: tcpx, from_port: 1, to_port: 2, cidr_ipv4: 10.0.0.0/8}"),
			CodeParameterValue, "group sg-a ingress[0]", "ip_protocol", 4},
		{"protocol 256", rule1("{ip_protocol: 256, cidr_ipv4: 10.0.0.0/8}"),
			CodeParameterValue, "group sg-a ingress[0]", "ip_protocol", 4},
		{"protocol -2", rule1("{ip_protocol: -2, cidr_ipv4: 10.0.0.0/8}"),
			CodeParameterValue, "group sg-a ingress[0]", "ip_protocol", 4},
		// rules: ports
		{"tcp without from_port", rule1("{ip_protocol: tcp, to_port: 2, cidr_ipv4: 10.0.0.0/8}"),
			CodeParameterValue, "group sg-a ingress[0]", "from_port", 4},
		{"udp without to_port", rule1("{ip_protocol: udp, from_port: 2, cidr_ipv4: 10.0.0.0/8}"),
			CodeParameterValue, "group sg-a ingress[0]", "to_port", 4},
		{"tcp from > to", rule1("{ip_protocol: tcp, from_port: 81, to_port: 80, cidr_ipv4: 10.0.0.0/8}"),
			CodePermissionMalformed, "group sg-a ingress[0]", "from_port", 4},
		{"tcp port -1", rule1("{ip_protocol: tcp, from_port: -1, to_port: -1, cidr_ipv4: 10.0.0.0/8}"),
			CodePermissionMalformed, "group sg-a ingress[0]", "from_port", 4},
		{"udp port 65536", rule1("{ip_protocol: udp, from_port: 1, to_port: 65536, cidr_ipv4: 10.0.0.0/8}"),
			CodePermissionMalformed, "group sg-a ingress[0]", "to_port", 4},
		{"icmp without type", rule1("{ip_protocol: icmp, to_port: -1, cidr_ipv4: 10.0.0.0/8}"),
			CodeParameterValue, "group sg-a ingress[0]", "from_port", 4},
		{"icmp without code", rule1("{ip_protocol: icmp, from_port: 8, cidr_ipv4: 10.0.0.0/8}"),
			CodeParameterValue, "group sg-a ingress[0]", "to_port", 4},
		{"icmp type 256", rule1("{ip_protocol: icmp, from_port: 256, to_port: 0, cidr_ipv4: 10.0.0.0/8}"),
			CodeParameterValue, "group sg-a ingress[0]", "from_port", 4},
		{"icmpv6 code -2", rule1("{ip_protocol: icmpv6, from_port: 1, to_port: -2, cidr_ipv6: \"::/0\"}"),
			CodeParameterValue, "group sg-a ingress[0]", "to_port", 4},
		{"icmp type -1 code 0", rule1("{ip_protocol: icmp, from_port: -1, to_port: 0, cidr_ipv4: 10.0.0.0/8}"),
			CodeParameterValue, "group sg-a ingress[0]", "to_port", 4},
		{"icmpv6 code without type", rule1("{ip_protocol: icmpv6, to_port: 4, cidr_ipv6: \"::/0\"}"),
			CodeParameterValue, "group sg-a ingress[0]", "to_port", 4},
		// rules: peers
		{"no peer", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2}"),
			CodeMissingParameter, "group sg-a ingress[0]", "", 4},
		{"two peers", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2, cidr_ipv4: 10.0.0.0/8, referenced_group_id: sg-a}"),
			CodePermissionMalformed, "group sg-a ingress[0]", "referenced_group_id", 4},
		{"cidr_ipv4 /33", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2, cidr_ipv4: 10.0.0.0/33}"),
			CodePermissionMalformed, "group sg-a ingress[0]", "cidr_ipv4", 4},
		{"cidr_ipv4 without length", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2, cidr_ipv4: 10.0.0.1}"),
			CodePermissionMalformed, "group sg-a ingress[0]", "cidr_ipv4", 4},
		{"cidr_ipv4 holding IPv6", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2, cidr_ipv4: \"2001:db8::/32\"}"),
			CodePermissionMalformed, "group sg-a ingress[0]", "cidr_ipv4", 4},
		{"cidr_ipv6 holding IPv4", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2, cidr_ipv6: 10.0.0.0/8}"),
			CodePermissionMalformed, "group sg-a ingress[0]", "cidr_ipv6", 4},
		{"cidr_ipv6 with zone", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2, cidr_ipv6: \"fe80::%eth0/64\"}"),
			CodePermissionMalformed, "group sg-a ingress[0]", "cidr_ipv6", 4},
		{"group reference malformed", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2, referenced_group_id: web}"),
			CodeGroupIDMalformed, "group sg-a ingress[0]", "referenced_group_id", 4},
		{"group reference undefined", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2, referenced_group_id: sg-b}"),
			CodeGroupNotFound, "group sg-a ingress[0]", "referenced_group_id", 4},
		{"prefix list undefined", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2, prefix_list_id: pl-x}"),
			CodePrefixListNotFound, "group sg-a ingress[0]", "prefix_list_id", 4},
		{"rule description characters", rule1("{ip_protocol: tcp, from_port: 1, to_port: 2, cidr_ipv4: 10.0.0.0/8, description: \"a\\tb\"}"),
			CodeParameterValue, "group sg-a ingress[0]", "description", 4},
		{"rule twice", lines(
			"security_groups:",
			"  - group_id: sg-a",
			"    ingress: []",
			"    egress:",
			"      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 10.0.0.0/8}",
			"      - {ip_protocol: tcp, from_port: 53, to_port: 53, cidr_ipv4: 10.0.0.0/8}",
			"      - {ip_protocol: \"17\", from_port: 53, to_port: 53, cidr_ipv4: 10.9.9.9/8}"),
			CodePermissionDuplicate, "group sg-a egress[2]", "", 7},
		{"rule on its own lines", lines(
			"security_groups:",
			"  - group_id: sg-a",
			"    ingress:",
			"      - ip_protocol: tcp",
			"        from_port: 22",
			"        to_port: 22",
			"        cidr_ipv4: 10.0.0.0/8",
			"      - ip_protocol: tcp",
			"        from_port: 22",
			"        to_port: 22",
			"        cidr_ipv4: 10.0.0.300/8"),
			CodePermissionMalformed, "group sg-a ingress[1]", "cidr_ipv4", 11},
		// prefix lists
		{"prefix list id malformed", lines(
			"prefix_lists:",
			"  - prefix_list_id: corp",
			"    entries: [10.0.0.0/8]"),
			CodePrefixListMalformed, "prefix list corp", "prefix_list_id", 2},
		{"prefix list id missing", lines(
			"prefix_lists:",
			"  - entries: [10.0.0.0/8]"),
			CodeMissingParameter, "prefix_lists[0]", "prefix_list_id", 2},
		{"prefix list twice", lines(
			"prefix_lists:",
			"  - {prefix_list_id: pl-a, entries: [10.0.0.0/8]}",
			"  - {prefix_list_id: pl-a, entries: [10.0.0.0/8]}"),
			CodePrefixListDuplicate, "prefix list pl-a", "prefix_list_id", 3},
		{"prefix list entry", lines(
			"prefix_lists:",
			"  - prefix_list_id: pl-a",
			"    entries:",
			"      - 10.0.0.0/8",
			"      - 10.0.0.0/99"),
			CodeParameterValue, "prefix list pl-a", "entries[1]", 5},
		// interfaces
		{"interface group undefined", lines(
			"security_groups: [{group_id: sg-a}]",
			"interfaces:",
			"  - name: eth0",
			"    security_groups:",
			"      - sg-a",
			"      - sg-b"),
			CodeGroupNotFound, "interface eth0", "security_groups[1]", 6},
		{"interface group twice", lines(
			"security_groups: [{group_id: sg-a}]",
			"interfaces:",
			"  - {name: eth0, security_groups: [sg-a, sg-a]}"),
			CodeParameterValue, "interface eth0", "security_groups[1]", 3},
		{"interface name missing", lines(
			"interfaces:",
			"  - security_groups: []"),
			CodeMissingParameter, "interfaces[0]", "name", 2},
		{"interface name too long", lines(
			"interfaces:",
			"  - name: a-very-long-interface"),
			CodeInterfaceMalformed, "interface a-very-long-interface", "name", 2},
		{"interface name with slash", lines(
			"interfaces:",
			"  - name: eth0/1"),
			CodeInterfaceMalformed, "interface eth0/1", "name", 2},
		{"interface loopback", lines(
			"interfaces:",
			"  - name: lo"),
			CodeParameterValue, "interface lo", "name", 2},
		{"interface twice", lines(
			"interfaces:",
			"  - name: eth0",
			"  - name: eth1",
			"  - name: eth0"),
			CodeInterfaceDuplicate, "interface eth0", "name", 4},
		{"tcp_established_timeout 59", lines(
			"interfaces:",
			"  - name: eth0",
			"    connection_tracking:",
			"      tcp_established_timeout: 59"),
			CodeParameterValue, "interface eth0", "connection_tracking.tcp_established_timeout", 4},
		{"tcp_established_timeout 432001", lines(
			"interfaces:",
			"  - name: eth0",
			"    connection_tracking: {tcp_established_timeout: 432001}"),
			CodeParameterValue, "interface eth0", "connection_tracking.tcp_established_timeout", 3},
		{"udp_timeout 29", lines(
			"interfaces:",
			"  - name: eth0",
			"    connection_tracking: {udp_timeout: 29}"),
			CodeParameterValue, "interface eth0", "connection_tracking.udp_timeout", 3},
		{"udp_timeout 61", lines(
			"interfaces:",
			"  - name: eth0",
			"    connection_tracking: {udp_timeout: 61}"),
			CodeParameterValue, "interface eth0", "connection_tracking.udp_timeout", 3},
		{"udp_stream_timeout 59", lines(
			"interfaces:",
			"  - name: eth0",
			"    connection_tracking: {udp_stream_timeout: 59}"),
			CodeParameterValue, "interface eth0", "connection_tracking.udp_stream_timeout", 3},
		{"udp_stream_timeout 181", lines(
			"interfaces:",
			"  - name: eth0",
			"    connection_tracking:",
			"      udp_timeout: 30",
			"      udp_stream_timeout: 181"),
			CodeParameterValue, "interface eth0", "connection_tracking.udp_stream_timeout", 5},
		// members
		{"member address", lines(
			"security_groups: [{group_id: sg-a}]",
			"members:",
			"  - {address: 10.0.0.256, security_groups: [sg-a]}"),
			CodeMemberAddrMalformed, "members[0]", "address", 3},
		{"member prefix", lines(
			"security_groups: [{group_id: sg-a}]",
			"members:",
			"  - address: 10.0.0.0/24",
			"    security_groups: [sg-a]"),
			CodeMemberAddrMalformed, "members[0]", "address", 3},
		{"member group undefined", lines(
			"security_groups: [{group_id: sg-a}]",
			"members:",
			"  - address: 10.0.0.1",
			"    security_groups:",
			"      - sg-b"),
			CodeGroupNotFound, "members[0]", "security_groups[0]", 5},
		{"member without groups", lines(
			"members:",
			"  - address: 10.0.0.1"),
			CodeMissingParameter, "members[0]", "security_groups", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if ec2Source[tt.code] == "" {
				t.Errorf("code %s has no source in ec2Source: cite where EC2 documents or returns it", tt.code)
			}
			es := configErrors(t, "test.yaml", tt.src, Options{})
			if len(es) != 1 {
				t.Fatalf("Validate = %d errors; want 1\n%v", len(es), es)
			}
			e := es[0]
			got := fmt.Sprintf("%s|%s|%s|%d", e.Code, e.Where, e.Field, e.Line)
			want := fmt.Sprintf("%s|%s|%s|%d", tt.code, tt.where, tt.field, tt.line)
			if got != want {
				t.Errorf("Validate = %s; want %s (code|where|field|line)\n%v", got, want, e)
			}
			// The message a person reads names all of it.
			msg := e.Error()
			for _, part := range []string{"test.yaml:" + fmt.Sprint(tt.line) + ":", tt.where, tt.field, tt.code} {
				if !strings.Contains(msg, part) {
					t.Errorf("Error() = %q; want it to contain %q", msg, part)
				}
			}
		})
	}
}

// Everything in range, at the edges, is accepted.
func TestValidateAcceptsEdges(t *testing.T) {
	m := model(t, lines(
		"security_groups:",
		"  - group_id: sg-A-9",
		"    group_name: \"web 1._-:/()#,@[]+=&;{}!$*\"",
		"    description: "+strings.Repeat("d", 255),
		"    ingress:",
		"      - {ip_protocol: tcp, from_port: 0, to_port: 65535, cidr_ipv4: 0.0.0.0/0}",
		"      - {ip_protocol: icmp, from_port: 255, to_port: 255, cidr_ipv4: 0.0.0.0/0}",
		"      - {ip_protocol: icmp, from_port: 0, to_port: -1, cidr_ipv4: 0.0.0.0/0}",
		"      - {ip_protocol: icmpv6, from_port: 128, cidr_ipv6: \"::/0\"}",
		"      - {ip_protocol: \"0\", cidr_ipv6: \"::/0\"}",
		"      - {ip_protocol: \" TCP \", from_port: 1, to_port: 1, cidr_ipv6: \"::/0\"}",
		"interfaces:",
		"  - name: eth0",
		"    security_groups: [sg-A-9]",
		"    connection_tracking: {tcp_established_timeout: 60, udp_timeout: 60, udp_stream_timeout: 60}",
		"  - name: veth-0123456789",
		"    connection_tracking: {tcp_established_timeout: 432000, udp_timeout: 30, udp_stream_timeout: 180}",
	), Options{})
	if got, want := fmt.Sprint(m.Interfaces[0].Timeouts), "{1m0s 1m0s 1m0s}"; got != want {
		t.Errorf("Timeouts(eth0) = %v; want %v", got, want)
	}
	if got, want := m.Interfaces[1].Timeouts, DefaultTimeouts(); got != want {
		t.Errorf("Timeouts(veth-0123456789) = %v; want %v", got, want)
	}
	if got := m.Group("sg-A-9").Ingress[3]; got.From != 128 || got.To != -1 {
		t.Errorf("icmpv6 from_port 128 without to_port = type %d code %d; want type 128 code -1", got.From, got.To)
	}
}

// A config is rejected whole, with every problem, not just the first.
func TestValidateReportsEveryError(t *testing.T) {
	es := configErrors(t, "test.yaml", lines(
		"security_groups:",
		"  - group_id: sg-a",
		"    ingress:",
		"      - {ip_protocol: tcp, from_port: 80, to_port: 79, cidr_ipv4: 0.0.0.0/0}",
		"      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 10.0.0.0/8}",
		"    egress:",
		"      - {ip_protocol: udp, from_port: 53, to_port: 53, prefix_list_id: pl-nope}",
		"interfaces:",
		"  - name: eth0",
		"    security_groups: [sg-a, sg-b]",
	), Options{})
	got := fmt.Sprint(es.Codes())
	want := fmt.Sprint([]string{CodePermissionMalformed, CodePrefixListNotFound, CodeGroupNotFound})
	if got != want {
		t.Fatalf("Validate codes = %v; want %v\n%v", got, want, es)
	}
	for i, line := range []int{4, 7, 10} {
		if es[i].Line != line {
			t.Errorf("error %d Line = %d; want %d: %v", i, es[i].Line, line, es[i])
		}
	}
	if n := strings.Count(es.Error(), "\n") + 1; n != 3 {
		t.Errorf("Errors.Error() has %d lines; want 3:\n%v", n, es)
	}
}

// UnknownParameter (SPEC 1.5): a field sgd does not know is an error wherever it is —
// an ignored field could leave the host more open than the user wrote — with its line.
func TestValidateUnknownFields(t *testing.T) {
	for _, tt := range []struct {
		name, src, field string
		line             int
	}{
		{"top level", lines("security_groups: []", "securitygroups: []"), "securitygroups", 2},
		{"group", lines("security_groups:", "  - group_id: sg-a", "    egres: []"), "egres", 3},
		{"rule", rule1("{ip_protocol: tcp, port: 22, cidr_ipv4: 10.0.0.0/8}"), "port", 4},
		{"rule, AWS's camel case", rule1("{IpProtocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 10.0.0.0/8}"), "IpProtocol", 4},
		{"interface", lines("interfaces:", "  - name: eth0", "    groups: [sg-a]"), "groups", 3},
		{"connection tracking", lines("interfaces:", "  - name: eth0", "    connection_tracking: {tcp_timeout: 60}"), "tcp_timeout", 3},
		{"prefix list", lines("prefix_lists:", "  - prefix_list_id: pl-a", "    cidrs: [10.0.0.0/8]"), "cidrs", 3},
		{"member", lines("members:", "  - addr: 10.0.0.1"), "addr", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			es := configErrors(t, "test.yaml", tt.src, Options{})
			if len(es) != 1 {
				t.Fatalf("Parse = %d errors; want 1\n%v", len(es), es)
			}
			e := es[0]
			if e.Code != CodeUnknownParameter || e.Line != tt.line || !strings.Contains(e.Msg, `"`+tt.field+`"`) {
				t.Errorf("Parse = %q (code %s, line %d); want %s at line %d naming %q", e, e.Code, e.Line, CodeUnknownParameter, tt.line, tt.field)
			}
		})
	}
	// All of them at once: every unknown field is reported (with a daemon: section too:
	// internal/controller TestFileUnknownFields).
	es := configErrors(t, "test.yaml", lines(
		"bogus: 1",
		"security_groups:",
		"  - {group_id: sg-a, bogus: 2, ingress: [{ip_protocol: -1, cidr_ipv4: 0.0.0.0/0, bogus: 3}]}",
		"interfaces: [{name: eth0, bogus: 4}]",
	), Options{})
	if got := fmt.Sprint(es.Codes()); got != fmt.Sprint(slicesRepeat(CodeUnknownParameter, 4)) {
		t.Errorf("Parse codes = %v; want 4 × %s\n%v", got, CodeUnknownParameter, es)
	}
}

func slicesRepeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// Files that do not parse are MalformedConfig, with a line where there is one.
func TestParseMalformed(t *testing.T) {
	for _, tt := range []struct {
		name, file, src string
		line            int
	}{
		{"yaml syntax", "c.yaml", lines("security_groups:", "  - group_id: sg-a", "    description: \"abc", "interfaces: []"), 3},
		{"yaml two documents", "c.yaml", lines("security_groups: []", "---", "security_groups: []"), 0},
		{"yaml key twice", "c.yaml", lines("security_groups:", "  - group_id: sg-a", "    egress: []", "    egress:"), 4},
		{"yaml port as text", "c.yaml", rule1("{ip_protocol: tcp, from_port: eighty, to_port: 80, cidr_ipv4: 0.0.0.0/0}"), 4},
		{"yaml protocol as list", "c.yaml", rule1("{ip_protocol: [tcp], from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}"), 4},
		{"yaml groups as map", "c.yaml", lines("security_groups:", "  group_id: sg-a"), 2},
		{"json syntax", "c.json", lines(`{"security_groups": [`, `  {"group_id": "sg-a",}`, `]}`), 2},
		{"json trailing data", "c.json", `{"security_groups": []} {}`, 0},
		{"json port as text", "c.json", lines(`{"security_groups": [{"group_id": "sg-a",`, `  "ingress": [{"ip_protocol": "tcp", "from_port": "80"}]}]}`), 2},
		{"json protocol as object", "c.json", `{"security_groups": [{"group_id": "sg-a", "ingress": [{"ip_protocol": {}}]}]}`, 1},
		{"json key twice", "c.json", lines(`{"security_groups": [{"group_id": "sg-a",`, `  "ingress": [{"ip_protocol": "-1", "cidr_ipv4": "10.0.0.1/32",`, `    "cidr_ipv4": "0.0.0.0/0"}]}]}`), 3},
		{"json key twice, top level", "c.json", lines(`{"interfaces": [],`, ` "security_groups": [{"group_id": "sg-a", "egress": []}],`, ` "security_groups": [{"group_id": "sg-a"}]}`), 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			es := configErrors(t, tt.file, tt.src, Options{})
			e := es[0]
			if e.Code != CodeMalformedConfig || e.Line != tt.line {
				t.Errorf("Parse = %q (code %s, line %d); want %s at line %d", e, e.Code, e.Line, CodeMalformedConfig, tt.line)
			}
		})
	}
}

// SPEC 2.1: JSON is accepted and means what the same YAML means; its unknown fields are
// rejected too.
func TestParseJSON(t *testing.T) {
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(specExample(t)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	js, err := json.MarshalIndent(c, "\t", "\t")
	if err != nil {
		t.Fatal(err)
	}
	fromYAML := model(t, specExample(t), Options{})
	doc, err := Parse("spec.json", js)
	if err != nil {
		t.Fatalf("Parse(JSON) = %v; want no error\n%s", err, js)
	}
	fromJSON, err := Validate(doc, Options{})
	if err != nil {
		t.Fatalf("Validate(JSON) = %v; want no error\n%s", err, js)
	}
	fromYAML.File, fromYAML.Hash = "", ""
	fromJSON.File, fromJSON.Hash = "", ""
	if !reflect.DeepEqual(fromYAML, fromJSON) {
		t.Errorf("JSON model = %+v; want the YAML model %+v", fromJSON, fromYAML)
	}
	// Hand-written JSON, bare numbers for the protocol, errors with lines.
	es := configErrors(t, "c.json", lines(
		`{"security_groups": [{"group_id": "sg-a", "ingress": [`,
		`  {"ip_protocol": 6, "from_port": 22, "to_port": 22, "cidr_ipv4": "10.0.0.0/8"},`,
		`  {"ip_protocol": "icmp", "from_port": -1, "to_port": 0, "cidr_ipv4": "10.0.0.0/8"}]}]}`,
	), Options{})
	if e := es[0]; len(es) != 1 || e.Code != CodeParameterValue || e.Line != 3 || e.Where != "group sg-a ingress[1]" || e.Field != "to_port" {
		t.Errorf("Validate(JSON) = %v; want one %s at line 3, group sg-a ingress[1] to_port", es, CodeParameterValue)
	}
	for _, src := range []string{
		`{"security_groups": [], "bogus": 1}`,
		`{"security_groups": [{"group_id": "sg-a", "ingress": [{"ip_protocol": "-1", "cidr_ipv4": "0.0.0.0/0", "port": 1}]}]}`,
		`{"interfaces": [{"name": "eth0", "connection_tracking": {"tcp_timeout": 60}}]}`,
	} {
		es := configErrors(t, "c.json", src, Options{})
		if len(es) != 1 || es[0].Code != CodeUnknownParameter {
			t.Errorf("Parse(%s) = %v; want %s", src, es, CodeUnknownParameter)
		}
	}
}

// SPEC 1.5 quotas: rules per group per direction per family (prefix lists count by their
// entries), groups per interface.
func TestValidateQuotas(t *testing.T) {
	// rules builds a group sg-a with n4 IPv4 and n6 IPv6 ingress rules plus extra lines.
	rules := func(n4, n6 int, extra ...string) string {
		var b strings.Builder
		b.WriteString("security_groups:\n  - group_id: sg-a\n    ingress:\n")
		for i := range n4 {
			fmt.Fprintf(&b, "      - {ip_protocol: tcp, from_port: %d, to_port: %d, cidr_ipv4: 10.0.0.0/8}\n", i, i)
		}
		for i := range n6 {
			fmt.Fprintf(&b, "      - {ip_protocol: tcp, from_port: %d, to_port: %d, cidr_ipv6: \"2001:db8::/32\"}\n", i, i)
		}
		for _, e := range extra {
			b.WriteString("      - " + e + "\n")
		}
		b.WriteString("prefix_lists:\n  - {prefix_list_id: pl-2v4, entries: [192.0.2.0/25, 192.0.2.128/25]}\n")
		b.WriteString("  - {prefix_list_id: pl-1v6, entries: [\"2001:db8::/48\"]}\n")
		return b.String()
	}
	const pl2 = "{ip_protocol: udp, from_port: 1, to_port: 1, prefix_list_id: pl-2v4}"
	const pl6 = "{ip_protocol: udp, from_port: 1, to_port: 1, prefix_list_id: pl-1v6}"
	const ref = "{ip_protocol: udp, from_port: 1, to_port: 1, referenced_group_id: sg-a}"
	for _, tt := range []struct {
		name string
		src  string
		q    Quotas   // daemon.rules_per_group_quota (internal/settings)
		want []string // codes; nil = valid
	}{
		{"60 IPv4 rules", rules(60, 0), Quotas{}, nil},
		{"61 IPv4 rules", rules(61, 0), Quotas{}, []string{CodeRulesLimit}},
		{"60 of each family", rules(60, 60), Quotas{}, nil},
		{"61 IPv6 rules", rules(0, 61), Quotas{}, []string{CodeRulesLimit}},
		{"58 + a 2-entry prefix list", rules(58, 0, pl2), Quotas{}, nil},
		{"59 + a 2-entry prefix list", rules(59, 0, pl2), Quotas{}, []string{CodeRulesLimit}},
		{"59 + an IPv6 prefix list", rules(59, 59, pl6), Quotas{}, nil},
		{"60 + a group reference", rules(60, 0, ref), Quotas{}, []string{CodeRulesLimit}},
		{"59 + a group reference, both families", rules(59, 59, ref), Quotas{}, nil},
		{"62 with quota 62", rules(62, 0), Quotas{RulesPerGroup: 62}, nil},
		{"63 with quota 62", rules(63, 0), Quotas{RulesPerGroup: 62}, []string{CodeRulesLimit}},
		{"2 with quota 1", rules(2, 0), Quotas{RulesPerGroup: 1}, []string{CodeRulesLimit}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := Parse("q.yaml", []byte(tt.src))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Validate(doc, Options{Quotas: tt.q})
			var got []string
			if err != nil {
				got = asErrors(t, err).Codes()
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Validate codes = %v; want %v\n%v", got, tt.want, err)
			}
			if err != nil && tt.want != nil {
				e := asErrors(t, err)[0]
				if e.Where != "group sg-a" || e.Field != "ingress" || e.Line != 4 {
					t.Errorf("Validate = %q; want it at group sg-a ingress, line 4 (the list)", e)
				}
			}
			if _, err := Validate(doc, Options{Unlimited: true}); err != nil {
				t.Errorf("Validate(Unlimited) = %v; want no error", err)
			}
		})
	}
	// The egress count is its own.
	egress := strings.Replace(strings.Replace(rules(60, 0), "prefix_lists:", "", 1), "    ingress:", "    egress:", 1)
	egress = egress[strings.Index(egress, "    egress:") : strings.Index(egress, "\n  - {prefix_list_id")+1]
	m := model(t, strings.Replace(rules(60, 0), "prefix_lists:", egress+"prefix_lists:", 1), Options{})
	if g := m.Group("sg-a"); len(g.Ingress) != 60 || len(g.Egress) != 60 {
		t.Errorf("60 ingress + 60 egress rules: model has %d and %d", len(g.Ingress), len(g.Egress))
	}

	// Groups per interface: 5 by default, configurable up to 16.
	groups := func(n int) string {
		var b strings.Builder
		b.WriteString("security_groups:\n")
		var ids []string
		for i := range n {
			fmt.Fprintf(&b, "  - group_id: sg-%d\n", i)
			ids = append(ids, fmt.Sprintf("sg-%d", i))
		}
		fmt.Fprintf(&b, "interfaces:\n  - name: eth0\n    security_groups: [%s]\n", strings.Join(ids, ", "))
		return b.String()
	}
	// A quota out of range (17 groups) is the daemon settings' to refuse (internal/settings,
	// and internal/controller TestFileQuotas for the whole file).
	for _, tt := range []struct {
		name string
		src  string
		q    Quotas // daemon.groups_per_interface_quota
		want []string
	}{
		{"5 groups", groups(5), Quotas{}, nil},
		{"6 groups", groups(6), Quotas{}, []string{CodeGroupsLimit}},
		{"16 groups with quota 16", groups(16), Quotas{GroupsPerInterface: 16}, nil},
		{"17 groups with quota 16", groups(17), Quotas{GroupsPerInterface: 16}, []string{CodeGroupsLimit}},
		{"3 groups with quota 2", groups(3), Quotas{GroupsPerInterface: 2}, []string{CodeGroupsLimit}},
		{"17 groups with quota 17", groups(17), Quotas{GroupsPerInterface: 17}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := Parse("q.yaml", []byte(tt.src))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Validate(doc, Options{Quotas: tt.q})
			var got []string
			if err != nil {
				got = asErrors(t, err).Codes()
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Validate codes = %v; want %v\n%v", got, tt.want, err)
			}
			if err != nil && tt.want[len(tt.want)-1] == CodeGroupsLimit {
				e := asErrors(t, err)[len(tt.want)-1]
				if e.Where != "interface eth0" || e.Field != "security_groups" || e.Line == 0 {
					t.Errorf("Validate = %q; want it at interface eth0 security_groups with a line", e)
				}
			}
			if _, err := Validate(doc, Options{Unlimited: true}); err != nil && !strings.Contains(err.Error(), "groups_per_interface_quota") {
				t.Errorf("Validate(Unlimited) = %v; want no error", err)
			}
		})
	}
}

// Prefix-list entries are canonicalised and deduplicated; a short IPv4-mapped prefix
// stays the IPv6 prefix it is (mapped ones, ::ffff:0:0/96 and longer, are refused:
// TestValidateMappedAddresses); no entry is ever lost.
func TestValidatePrefixListEntries(t *testing.T) {
	m := model(t, lines(
		"prefix_lists:",
		"  - prefix_list_id: pl-a",
		"    entries: [\"::ffff:0:0/80\", \" 10.1.2.3/8 \", 10.0.0.0/8, \"2001:db8::1/32\"]",
	), Options{})
	got := fmt.Sprint(m.PrefixLists["pl-a"])
	want := "[::/80 10.0.0.0/8 2001:db8::/32]"
	if got != want {
		t.Errorf("PrefixLists[pl-a] = %v; want %v", got, want)
	}
}

// An IPv4-mapped IPv6 prefix (::ffff:0:0/96 and longer) never becomes an IPv4 prefix:
// ::ffff:0.0.0.0/96 in a prefix list used to widen a rule to all of IPv4. In a prefix list
// (either family) it is refused; as cidr_ipv6 it is what it says, an IPv6 prefix that no
// IPv4 packet matches; as a member address it is refused.
func TestValidateMappedAddresses(t *testing.T) {
	for _, tt := range []struct {
		name, src, where, field, code string
	}{
		{"prefix list ::ffff:0.0.0.0/96", lines("prefix_lists:", `  - {prefix_list_id: pl-a, entries: [10.0.0.0/8, "::ffff:0.0.0.0/96"]}`),
			"prefix list pl-a", "entries[1]", CodeParameterValue},
		{"prefix list ::ffff:0:0/96", lines("prefix_lists:", `  - {prefix_list_id: pl-a, entries: ["::ffff:0:0/96"]}`),
			"prefix list pl-a", "entries[0]", CodeParameterValue},
		{"prefix list ::ffff:192.0.2.0/120", lines("prefix_lists:", `  - {prefix_list_id: pl-a, entries: ["::ffff:192.0.2.0/120"]}`),
			"prefix list pl-a", "entries[0]", CodeParameterValue},
		{"prefix list ::ffff:192.0.2.1/128", lines("prefix_lists:", `  - {prefix_list_id: pl-a, entries: ["::ffff:192.0.2.1/128"]}`),
			"prefix list pl-a", "entries[0]", CodeParameterValue},
		{"member ::ffff:203.0.113.9", lines("security_groups: [{group_id: sg-a}]", `members: [{address: "::ffff:203.0.113.9", security_groups: [sg-a]}]`),
			"members[0]", "address", CodeMemberAddrMalformed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			es := configErrors(t, "c.yaml", tt.src, Options{})
			if e := es[0]; len(es) != 1 || e.Code != tt.code || e.Where != tt.where || e.Field != tt.field || e.Line != 2 {
				t.Errorf("Validate(%q) = %v; want one %s at line 2, %s %s", tt.src, es, tt.code, tt.where, tt.field)
			}
		})
	}
	p := policy(t, group(`
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv6: "::ffff:0.0.0.0/96"}
      - {ip_protocol: tcp, from_port: 23, to_port: 23, prefix_list_id: pl-a}
`, "")+lines("prefix_lists:", `  - {prefix_list_id: pl-a, entries: ["::ffff:0:0/80"]}`), Env{})
	check(t, p, Env{}, "eth0", []row{
		{tcp("192.0.2.1", 22), deny},
		{tcp("::ffff:192.0.2.1", 22), allow("sg-a/ingress/0")},
		{tcp("192.0.2.1", 23), deny}, // ::ffff:0:0/80 is the IPv6 prefix ::/80
		{tcp("::1", 23), allow("sg-a/ingress/1")},
	})
}

// Every code sgd can report (the Code constants of errors.go) says where it comes from.
func TestEveryCodeHasASource(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !strings.HasPrefix(name.Name, "Code") || !ok {
					continue
				}
				n++
				if code, _ := strconv.Unquote(lit.Value); ec2Source[code] == "" {
					t.Errorf("%s (%s) has no source in ec2Source", name.Name, code)
				}
			}
		}
	}
	if n != len(ec2Source) {
		t.Errorf("errors.go has %d codes, ec2Source %d", n, len(ec2Source))
	}
}
