package awsjson

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// importOne imports one group whose IpPermissions (ingress) or IpPermissionsEgress are
// the JSON list perms, and returns the printed YAML's lines for that direction.
func importOne(t *testing.T, egress bool, perms string) (lines []string, im *Imported) {
	t.Helper()
	in, eg := perms, "[]"
	if egress {
		in, eg = "[]", perms
	}
	doc := fmt.Sprintf(`{"SecurityGroups": [{"GroupId": "sg-1", "GroupName": "one", "Description": "d", "OwnerId": "123456789012",
		"IpPermissions": %s, "IpPermissionsEgress": %s}, {"GroupId": "sg-2", "IpPermissions": [], "IpPermissionsEgress": []}]}`, in, eg)
	gs, _, err := ReadSecurityGroups("in.json", []byte(doc))
	if err != nil {
		t.Fatalf("ReadSecurityGroups(%s) = %v", perms, err)
	}
	im = Import(Sources{File: "in.json", Groups: gs})
	key := "    ingress:"
	if egress {
		key = "    egress:"
	}
	text := string(im.YAML())
	text, _, _ = strings.Cut(text, "  - group_id: sg-2")
	in1 := false
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(l, key):
			in1 = true
			lines = append(lines, strings.TrimPrefix(l, "    "))
		case in1 && strings.HasPrefix(l, "      - "):
			lines = append(lines, strings.TrimPrefix(l, "      - "))
		case strings.HasPrefix(l, "    "):
			in1 = false
			if egress && strings.HasPrefix(l, "    # egress omitted") {
				lines = append(lines, strings.TrimPrefix(l, "    "))
			}
		}
	}
	return lines, im
}

func TestImportRules(t *testing.T) {
	for _, c := range []struct {
		perms string
		want  []string
	}{
		// One rule per peer, each with its own description, in the order IpRanges,
		// Ipv6Ranges, PrefixListIds, UserIdGroupPairs.
		{`[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
			"UserIdGroupPairs": [{"GroupId": "sg-2", "UserId": "123456789012", "Description": "from two"}],
			"IpRanges": [{"CidrIp": "203.0.113.0/24", "Description": "office"}, {"CidrIp": "198.51.100.1/32"}],
			"Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32", "Description": "office, v6"}],
			"PrefixListIds": [{"PrefixListId": "pl-1", "Description": "corp"}]}]`, []string{
			"ingress:",
			"{ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 203.0.113.0/24, description: office}",
			"{ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 198.51.100.1/32}",
			`{ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv6: "2001:db8::/32", description: "office, v6"}`,
			"{ip_protocol: tcp, from_port: 22, to_port: 22, prefix_list_id: pl-1, description: corp}  # the entries of pl-1 were not given: sgd check says InvalidPrefixListID.NotFound until they are (--entries pl-1=FILE)",
			"{ip_protocol: tcp, from_port: 22, to_port: 22, referenced_group_id: sg-2, description: from two}",
		}},
		// All traffic: no ports. A protocol number other than tcp/udp/icmp/icmpv6: none either.
		{`[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}, {"IpProtocol": "50", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}]`, []string{
			"ingress:", "{ip_protocol: -1, cidr_ipv4: 10.0.0.0/8}", "{ip_protocol: 50, cidr_ipv4: 10.0.0.0/8}",
		}},
		// ICMP: type and code as AWS gives them (8/-1 is echo request, any code; 3/4 is one code).
		{`[{"IpProtocol": "icmp", "FromPort": 8, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
		   {"IpProtocol": "icmp", "FromPort": 3, "ToPort": 4, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
		   {"IpProtocol": "icmpv6", "FromPort": -1, "ToPort": -1, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]`, []string{
			"ingress:",
			"{ip_protocol: icmp, from_port: 8, to_port: -1, cidr_ipv4: 0.0.0.0/0}",
			"{ip_protocol: icmp, from_port: 3, to_port: 4, cidr_ipv4: 0.0.0.0/0}",
			`{ip_protocol: icmpv6, from_port: -1, to_port: -1, cidr_ipv6: "::/0"}`,
		}},
		// A port range; a self-reference.
		{`[{"IpProtocol": "udp", "FromPort": 1024, "ToPort": 65535, "UserIdGroupPairs": [{"GroupId": "sg-1"}]}]`, []string{
			"ingress:", "{ip_protocol: udp, from_port: 1024, to_port: 65535, referenced_group_id: sg-1}",
		}},
		// A group not in the file: kept, with a note.
		{`[{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "UserIdGroupPairs": [{"GroupId": "sg-elsewhere", "UserId": "210987654321", "VpcPeeringConnectionId": "pcx-1"}]}]`, []string{
			"ingress:",
			"{ip_protocol: tcp, from_port: 5432, to_port: 5432, referenced_group_id: sg-elsewhere}  # sg-elsewhere is not in in.json: sgd check says InvalidGroup.NotFound until it is added (aws ec2 describe-security-groups --group-ids sg-elsewhere); a group of account 210987654321; across VPC peering pcx-1",
		}},
		// A pair named by GroupName only (a default VPC) is resolved within the file.
		{`[{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1, "UserIdGroupPairs": [{"GroupName": "one"}]}]`, []string{
			"ingress:", "{ip_protocol: tcp, from_port: 1, to_port: 1, referenced_group_id: sg-1}",
		}},
		{`[]`, []string{"ingress: []"}},
	} {
		got, _ := importOne(t, false, c.perms)
		if !slices.Equal(got, c.want) {
			t.Errorf("Import(%s) =\n  %s\nwant\n  %s", c.perms, strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
		}
	}
}

// Egress is omitted only where sgd's default means what AWS lists (SPEC 1.3).
func TestImportEgress(t *testing.T) {
	const all4 = `{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}`
	const all6 = `{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}`
	for _, c := range []struct {
		perms string
		want  []string
	}{
		{`[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]`,
			[]string{"# egress omitted: sgd's default, all traffic to 0.0.0.0/0 and ::/0, which is what AWS lists"}},
		{"[" + all6 + ", " + all4 + "]", // however AWS groups them
			[]string{"# egress omitted: sgd's default, all traffic to 0.0.0.0/0 and ::/0, which is what AWS lists"}},
		{"[" + all4 + "]", []string{
			"egress:  # AWS's default egress without IPv6 (0.0.0.0/0 only), kept as AWS has it; delete the egress key for sgd's default, which adds ::/0",
			"{ip_protocol: -1, cidr_ipv4: 0.0.0.0/0}"}},
		{`[]`, []string{"egress: []  # AWS lists no egress rules: nothing out (replies to allowed inbound flows still pass)"}},
		// A description makes it a rule of the user's, not the default.
		{`[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "all out"}], "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]`, []string{
			"egress:", "{ip_protocol: -1, cidr_ipv4: 0.0.0.0/0, description: all out}", `{ip_protocol: -1, cidr_ipv6: "::/0"}`}},
		{`[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]`, []string{
			"egress:", "{ip_protocol: tcp, from_port: 443, to_port: 443, cidr_ipv4: 0.0.0.0/0}"}},
	} {
		got, _ := importOne(t, true, c.perms)
		if !slices.Equal(got, c.want) {
			t.Errorf("Import(egress %s) =\n  %s\nwant\n  %s", c.perms, strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
		}
	}
}

func TestImportWarnings(t *testing.T) {
	for _, c := range []struct {
		doc  string
		want []string
	}{
		{`{"GroupId": "sg-1", "IpPermissions": []}`,
			[]string{"sg-1: no IpPermissionsEgress (describe-security-groups always lists it): imported as egress: [], nothing out"}},
		{`{"GroupId": "sg-1", "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1}], "IpPermissionsEgress": []}`,
			[]string{"sg-1 IpPermissions[0]: a permission with no peer (no IpRanges, Ipv6Ranges, PrefixListIds or UserIdGroupPairs) allows nothing; left out"}},
		{`{"GroupId": "sg-1", "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1, "UserIdGroupPairs": [{"GroupName": "gone"}]}], "IpPermissionsEgress": []}`,
			[]string{`sg-1 IpPermissions[0]: a group pair without a GroupId (GroupName "gone" names no group of the input) cannot be referenced; left out`}},
		{`[{"GroupId": "sg-1", "OwnerId": "111111111111", "IpPermissionsEgress": []}, {"GroupId": "sg-2", "OwnerId": "222222222222", "IpPermissionsEgress": []}]`,
			[]string{"the groups belong to several accounts (111111111111, 222222222222): daemon.account_id is 111111111111, and sgd export aws prints every group with it"}},
	} {
		gs, _, err := ReadSecurityGroups("in.json", []byte(c.doc))
		if err != nil {
			t.Fatalf("ReadSecurityGroups(%s) = %v", c.doc, err)
		}
		if got := Import(Sources{File: "in.json", Groups: gs}).Warnings; !slices.Equal(got, c.want) {
			t.Errorf("Import(%s).Warnings = %q; want %q", c.doc, got, c.want)
		}
	}
}

func TestImportPrefixLists(t *testing.T) {
	gs, _, _ := ReadSecurityGroups("in.json", []byte(`{"GroupId": "sg-1", "IpPermissionsEgress": [],
		"IpPermissions": [{"IpProtocol": "-1", "PrefixListIds": [{"PrefixListId": "pl-a"}, {"PrefixListId": "pl-b"}]}]}`))
	im := Import(Sources{File: "in.json", Groups: gs,
		PrefixLists: []ManagedPrefixList{{PrefixListId: "pl-a", PrefixListName: "corp"}, {PrefixListId: "pl-b", PrefixListName: "vpn"}, {PrefixListId: "pl-c", PrefixListName: "unused"}},
		Entries: []ListEntries{
			{PrefixListId: "pl-a", Entries: []PrefixListEntry{{Cidr: "192.0.2.0/24", Description: "hq"}, {Cidr: "2001:db8::/32"}}},
			{PrefixListId: "pl-d"},
		}})
	text := string(im.YAML())
	_, lists, _ := strings.Cut(text, "prefix_lists:\n")
	want := `  - prefix_list_id: pl-a
    prefix_list_name: corp
    entries:
      - 192.0.2.0/24  # hq
      - "2001:db8::/32"
  - prefix_list_id: pl-d
    entries: []
`
	if lists != want {
		t.Errorf("prefix lists printed as\n%s\nwant\n%s", lists, want)
	}
	wantWarn := []string{
		"prefix list pl-b (vpn) is referenced but its entries were not given: aws ec2 get-managed-prefix-list-entries --prefix-list-id pl-b > pl-b.json, then --entries pl-b=pl-b.json",
		"prefix list pl-c (unused) is used by no rule and its entries were not given; left out",
	}
	if !slices.Equal(im.Warnings, wantWarn) {
		t.Errorf("warnings %q; want %q", im.Warnings, wantWarn)
	}
}

func TestScalar(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"sg-0123", "sg-0123"},
		{"203.0.113.0/24", "203.0.113.0/24"},
		{"web servers", "web servers"},
		{"::/0", `"::/0"`},
		{"2001:db8::/32", `"2001:db8::/32"`},
		{"123456789012", `"123456789012"`},
		{"true", `"true"`},
		{"null", `"null"`},
		{"1e3", `"1e3"`},
		{"", `""`},
		{"a, b", `"a, b"`},
		{"x: y", `"x: y"`},
		{"#1", `"#1"`},
		{"trailing ", `"trailing "`},
		{"{json}", `"{json}"`},
		{`say "hi"`, `"say \"hi\""`},
	} {
		if got := scalar(c.in); got != c.want {
			t.Errorf("scalar(%q) = %s; want %s", c.in, got, c.want)
		}
	}
}
