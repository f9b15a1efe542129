package rules

import (
	"regexp"
	"strings"
	"testing"
)

// goType matches what a Go type name looks like in a message (rules.Config, []rules.Rule,
// *int, map[string]…, !!seq into …).
var goType = regexp.MustCompile(`rules\.|\[\]\w|\*int|map\[|!!\w+ into `)

// Files that do not parse, and values of the wrong kind, are reported in words a person
// can act on, at the line the mistake is on (issue 10): yaml.v3's own words and lines are
// not always either (a parser error's line is one short, and none on the first line).
func TestParseErrorsInPlainWords(t *testing.T) {
	for _, tt := range []struct {
		name, file, src string
		want            []string // every error's Error(), in order
	}{
		{"tab indentation", "c.yaml", lines("security_groups:", "\t- group_id: sg-a"),
			[]string{"c.yaml:2: MalformedConfig: a tab is used for indentation; YAML indents with spaces only: replace the tab with spaces"}},
		{"tab indentation under a key", "c.yaml", lines("interfaces:", "  - name: eth0", "\tsecurity_groups: [sg-a]"),
			[]string{"c.yaml:3: MalformedConfig: a tab is used for indentation; YAML indents with spaces only: replace the tab with spaces"}},
		{"top-level list", "c.yaml", lines("- group_id: sg-a", "  ingress: []"),
			[]string{`c.yaml:1: MalformedConfig: the file is a list (it starts with "- "); an sgd config is a mapping with the keys security_groups, prefix_lists, interfaces, ports, members: write security_groups: on a line of its own and indent the list of groups under it`}},
		{"top-level text", "c.yaml", "hello\n",
			[]string{`c.yaml:1: MalformedConfig: the file is the text "hello"; an sgd config is a mapping with the keys security_groups, prefix_lists, interfaces, ports, members`}},
		{"unquoted ::/0 in flow style", "c.yaml", rule1("{ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv6: ::/0}"),
			[]string{`c.yaml:4: MalformedConfig: the value ::/0 starts with ':', which in flow style ({…} or […]) separates a key from its value; quote it: "::/0"`}},
		{"unquoted ::/0 on the first line", "c.yaml", `prefix_lists: [{prefix_list_id: pl-a, entries: [::/0]}]`,
			[]string{`c.yaml:1: MalformedConfig: the value ::/0 starts with ':', which in flow style ({…} or […]) separates a key from its value; quote it: "::/0"`}},
		{"unquoted ::1/128 in a flow mapping over lines", "c.yaml", lines("security_groups:", "  - group_id: sg-a", "    ingress:", "      - {ip_protocol: -1,", "         cidr_ipv6: ::1/128}"),
			[]string{`c.yaml:5: MalformedConfig: the value ::1/128 starts with ':', which in flow style ({…} or […]) separates a key from its value; quote it: "::1/128"`}},
		{"a quoted ::/0 is fine, the next line is not", "c.yaml", lines(`prefix_lists: [{prefix_list_id: pl-a, entries: ["::/0",`, `  ::/0]}]`),
			[]string{`c.yaml:2: MalformedConfig: the value ::/0 starts with ':', which in flow style ({…} or […]) separates a key from its value; quote it: "::/0"`}},
		{"indentation between levels", "c.yaml", lines("security_groups:", "  - group_id: sg-a", "   group_name: web"),
			[]string{"c.yaml:3: MalformedConfig: this line is indented to none of the levels of the lines above it: line it up with the keys or list items it belongs to"}},
		{"flow mapping without a comma", "c.yaml", rule1("{ip_protocol: tcp, from_port: 22 to_port: 22, cidr_ipv4: 10.0.0.0/8}"),
			[]string{"c.yaml:4: MalformedConfig: the flow mapping {…} that starts on this line is not closed with '}', or two of its entries have no ',' between them"}},
		{"reserved character", "c.yaml", lines("security_groups:", "  - {group_id: sg-a, description: @home}"),
			[]string{`c.yaml:2: MalformedConfig: a value cannot start with "@" in YAML (it is reserved): quote the value`}},
		{"type mismatches name the rule and the field, all of them", "c.yaml", lines(
			"security_groups:",
			"  - group_id: sg-a",
			"    ingress:",
			"      - {ip_protocol: tcp, from_port: ssh, to_port: [22], cidr_ipv4: 10.0.0.0/8}",
			"  - group_id: sg-b",
			"    egress: {ip_protocol: -1}",
			"interfaces:",
			"  - {name: eth0, connection_tracking: {udp_timeout: 30s}}",
			"  - {security_groups: sg-a}"),
			[]string{
				`c.yaml:4: group sg-a ingress[0] from_port: MalformedConfig: want a whole number, not the text "ssh"`,
				`c.yaml:4: group sg-a ingress[0] to_port: MalformedConfig: want a whole number, not a list`,
				`c.yaml:6: group sg-b egress: MalformedConfig: want a list, not a mapping`,
				`c.yaml:8: interface eth0 connection_tracking.udp_timeout: MalformedConfig: want a whole number, not the text "30s"`,
				`c.yaml:9: interfaces[1] security_groups: MalformedConfig: want a list, not the text "sg-a"`,
			}},
		{"JSON type mismatches too", "c.json", lines(
			`{"security_groups": [{"group_id": "sg-a", "ingress": [`,
			`  {"ip_protocol": "tcp", "from_port": "22", "to_port": 22, "cidr_ipv4": "10.0.0.0/8"},`,
			`  {"ip_protocol": "udp", "from_port": 53, "to_port": 53.5, "cidr_ipv4": "10.0.0.0/8"}]}],`,
			` "prefix_lists": [{"prefix_list_id": "pl-a", "entries": "10.0.0.0/8"}]}`),
			[]string{
				`c.json:2: group sg-a ingress[0] from_port: MalformedConfig: want a whole number, not the text "22"`,
				`c.json:3: group sg-a ingress[1] to_port: MalformedConfig: want a whole number, not the number 53.5`,
				`c.json:4: prefix list pl-a entries: MalformedConfig: want a list, not the text "10.0.0.0/8"`,
			}},
		{"unknown fields name their place", "c.yaml", lines("security_groups:", "  - {group_id: sg-a, ingress: [{ip_protocol: -1, cidr_ipv4: 0.0.0.0/0, port: 22}]}"),
			[]string{`c.yaml:2: group sg-a ingress[0]: UnknownParameter: unknown field "port"`}},
		{"describe-security-groups output", "sg.json", lines(
			`{`,
			`    "SecurityGroups": [{"GroupId": "sg-0123", "IpPermissions": [{"IpProtocol": "-1"}]}]`,
			`}`),
			[]string{"sg.json:2: MalformedConfig: this is describe-security-groups output (AWS's JSON, with SecurityGroups), not an sgd config; run sgd import aws sg.json to turn it into one"}},
		{"one group of it", "sg.json", `{"GroupId": "sg-0123", "IpPermissions": []}`,
			[]string{"sg.json:1: MalformedConfig: this is a security group as describe-security-groups prints it (AWS's JSON, with IpPermissions), not an sgd config; run sgd import aws sg.json to turn it into one"}},
		{"control character", "c.yaml", "security_groups: []\ninterfaces: [{name: \"eth\x01\"}]\n",
			[]string{"c.yaml:2: MalformedConfig: a control character (not a tab or a line break) is in the file: YAML text cannot hold one"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			es := configErrors(t, tt.file, tt.src, Options{})
			var got []string
			for _, e := range es {
				got = append(got, e.Error())
				if goType.MatchString(e.Msg) {
					t.Errorf("message %q names a Go type", e.Msg)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Parse =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// misindented finds the line whose indentation opens no level, and nothing in files
// that are indented right.
func TestMisindented(t *testing.T) {
	for _, tt := range []struct {
		src  string
		want int
	}{
		{lines("a:", "  b: 1", " c: 2"), 3},
		{lines("a:", "  - b: 1", "   c: 2"), 3},
		{lines("a:", "  - b: 1", "    c: 2", "  - d", "e:", "- f"), 0},
		{lines("a: 1", "  b: 2"), 2},
		{lines("a: [1,", "      2]", "b:", "  - {x: 1,", "     y: 2}"), 0},
		{lines("a: |", "  text", "b: 1"), 0},
	} {
		if got := misindented(splitLines([]byte(tt.src)), 1); got != tt.want {
			t.Errorf("misindented(%q) = %d; want %d", tt.src, got, tt.want)
		}
	}
}
