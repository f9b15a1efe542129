package awsjson

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
)

// load validates a printed config as the config file is validated (the daemon: section
// and the SG model with its quotas) and returns the model and the section.
func load(t testing.TB, name string, data []byte) (*rules.Model, settings.Section) {
	t.Helper()
	var sec settings.Section
	doc, err := rules.Parse(name, data, sec.Of())
	if err != nil {
		t.Fatalf("rules.Parse(imported config) = %v\n%s", err, data)
	}
	if errs := sec.Validate(doc); len(errs) > 0 {
		t.Fatalf("daemon: section of the imported config: %v\n%s", errs, data)
	}
	m, err := rules.ValidateConfig(&doc.Config, doc, rules.Options{Quotas: sec.Quotas()})
	if err != nil {
		t.Fatalf("rules.ValidateConfig(imported config) = %v\n%s", err, data)
	}
	return m, sec
}

// permissions lists a group's permissions one peer a line, protocols and ports in EC2's
// canonical form, so that two listings compare as sets whatever the grouping and order.
func permissions(gs []SecurityGroup) []string {
	var out []string
	for _, g := range gs {
		out = append(out, fmt.Sprintf("%s name=%q description=%q owner=%s", g.GroupId, g.GroupName, g.Description, g.OwnerId))
		for _, d := range []struct {
			dir string
			ps  []IpPermission
		}{{"ingress", g.IpPermissions}, {"egress", g.IpPermissionsEgress}} {
			for _, p := range d.ps {
				n, _ := ipproto.Number(p.IpProtocol)
				ports := ""
				switch n {
				case ipproto.TCP, ipproto.UDP, ipproto.ICMP, ipproto.ICMPv6:
					from, to := -1, -1
					if p.FromPort != nil {
						from = *p.FromPort
					}
					if p.ToPort != nil {
						to = *p.ToPort
					}
					ports = fmt.Sprintf(" %d-%d", from, to)
				}
				head := fmt.Sprintf("%s %s %s%s", g.GroupId, d.dir, ProtocolName(n), ports)
				for _, r := range p.IpRanges {
					out = append(out, fmt.Sprintf("%s %s %q", head, r.CidrIp, r.Description))
				}
				for _, r := range p.Ipv6Ranges {
					out = append(out, fmt.Sprintf("%s %s %q", head, r.CidrIpv6, r.Description))
				}
				for _, r := range p.PrefixListIds {
					out = append(out, fmt.Sprintf("%s %s %q", head, r.PrefixListId, r.Description))
				}
				for _, r := range p.UserIdGroupPairs {
					out = append(out, fmt.Sprintf("%s %s/%s %q", head, r.UserId, r.GroupId, r.Description))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// SPEC 4.5: import then export gives back the same permissions, on fixtures in the shape
// the CLI prints (IPv4 and IPv6 ranges, a prefix list, group references, ICMP, all
// traffic, descriptions, both of AWS's default egress rules, no egress).
func TestRoundTrip(t *testing.T) {
	for _, c := range []struct {
		file    string
		entries map[string]string // prefix list id → entries fixture
	}{
		{"describe-security-groups.json", map[string]string{"pl-0123456789abcdef0": "entries-pl-0123456789abcdef0.json"}},
		{"cli-example-vpc.json", nil},
	} {
		t.Run(c.file, func(t *testing.T) {
			groups, warnings, err := ReadSecurityGroups(c.file, readFixture(t, c.file))
			if err != nil || len(warnings) > 0 {
				t.Fatalf("ReadSecurityGroups = %v, warnings %q", err, warnings)
			}
			src := Sources{File: c.file, Groups: groups}
			for id, f := range c.entries {
				es, _, err := ReadEntries(f, readFixture(t, f))
				if err != nil {
					t.Fatal(err)
				}
				src.Entries = append(src.Entries, ListEntries{PrefixListId: id, File: f, Entries: es})
			}
			im := Import(src)
			if len(im.Warnings) > 0 {
				t.Errorf("Import warnings %q", im.Warnings)
			}
			printed := im.YAML()
			m, sec := load(t, "imported.yaml", printed)
			out := Export(m, sec.AccountID)

			want, got := permissions(groups), permissions(out.SecurityGroups)
			if !slices.Equal(got, want) {
				t.Errorf("import then export changed the permissions:\n got  %q\n want %q\nprinted config:\n%s", got, want, printed)
			}
			for _, g := range out.SecurityGroups {
				if g.VpcId != VpcID {
					t.Errorf("exported %s VpcId %q; want %q", g.GroupId, g.VpcId, VpcID)
				}
			}
			// And once more: the export imports to the same config (ids, rules, prefix lists).
			js, err := JSON(out)
			if err != nil {
				t.Fatal(err)
			}
			again, _, err := ReadSecurityGroups("exported.json", js)
			if err != nil {
				t.Fatal(err)
			}
			src.Groups = again
			m2, _ := load(t, "again.yaml", Import(src).YAML())
			if a, b := ruleIDs(m), ruleIDs(m2); !slices.Equal(a, b) {
				t.Errorf("rule ids after export and import again: %q; want %q", b, a)
			}
		})
	}
}

// The main fixture is in the CLI's member order and EC2's grouping: the export prints it
// back byte for byte, but for what sgd's config does not hold (tags) or sets (VpcId).
func TestExportPrintsTheFixture(t *testing.T) {
	const file = "describe-security-groups.json"
	groups, _, err := ReadSecurityGroups(file, readFixture(t, file))
	if err != nil {
		t.Fatal(err)
	}
	es, _, _ := ReadEntries("entries.json", readFixture(t, "entries-pl-0123456789abcdef0.json"))
	m, sec := load(t, "imported.yaml", Import(Sources{File: file, Groups: groups,
		Entries: []ListEntries{{PrefixListId: "pl-0123456789abcdef0", Entries: es}}}).YAML())
	got, err := JSON(Export(m, sec.AccountID))
	if err != nil {
		t.Fatal(err)
	}
	var want DescribeSecurityGroups
	if err := json.Unmarshal(readFixture(t, file), &want); err != nil {
		t.Fatal(err)
	}
	for i := range want.SecurityGroups {
		want.SecurityGroups[i].Tags, want.SecurityGroups[i].VpcId = nil, VpcID
	}
	wantJSON, _ := JSON(want)
	if string(got) != string(wantJSON) {
		t.Errorf("export printed\n%s\nwant\n%s", got, wantJSON)
	}
}

// ruleIDs are the model's rule ids (content-derived: they name group, direction and rule).
func ruleIDs(m *rules.Model) []string {
	var ids []string
	for _, g := range m.Groups {
		for _, r := range slices.Concat(g.Ingress, g.Egress) {
			ids = append(ids, r.ID+" "+r.Description)
		}
	}
	slices.Sort(ids)
	return ids
}

// Export groups rules as EC2 does, prints ports only where the protocol has them, and
// shows the model's defaults: sgd's default egress, AWS's default group.
func TestExport(t *testing.T) {
	m, _ := load(t, "c.yaml", []byte(`security_groups:
  - group_id: sg-a
    group_name: a
    description: A
    ingress:
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 10.0.0.0/8, description: ten}
      - {ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 10.0.0.0/8}
      - {ip_protocol: 6, from_port: 22, to_port: 22, referenced_group_id: sg-a}
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv6: "2001:db8::/32"}
      - {ip_protocol: all, prefix_list_id: pl-a}
      - {ip_protocol: 47, cidr_ipv4: 192.0.2.1/32}
      - {ip_protocol: icmpv6, cidr_ipv6: "::/0"}
    egress: []
  - group_id: sg-b
prefix_lists:
  - {prefix_list_id: pl-a, entries: [192.0.2.0/24]}
interfaces:
  - name: eth0
`))
	js, err := JSON(Export(m, ""))
	if err != nil {
		t.Fatal(err)
	}
	var got DescribeSecurityGroups
	if err := json.Unmarshal(js, &got); err != nil {
		t.Fatal(err)
	}
	compact := func(ps []IpPermission) []string {
		var out []string
		for _, p := range ps {
			b, _ := json.Marshal(p)
			out = append(out, string(b))
		}
		return out
	}
	want := map[string][]string{
		"sg-a ingress": {
			`{"FromPort":22,"IpProtocol":"tcp","IpRanges":[{"CidrIp":"10.0.0.0/8","Description":"ten"}],"Ipv6Ranges":[{"CidrIpv6":"2001:db8::/32"}],"PrefixListIds":[],"ToPort":22,"UserIdGroupPairs":[{"GroupId":"sg-a","UserId":"000000000000"}]}`,
			`{"FromPort":53,"IpProtocol":"udp","IpRanges":[{"CidrIp":"10.0.0.0/8"}],"Ipv6Ranges":[],"PrefixListIds":[],"ToPort":53,"UserIdGroupPairs":[]}`,
			`{"IpProtocol":"-1","IpRanges":[],"Ipv6Ranges":[],"PrefixListIds":[{"PrefixListId":"pl-a"}],"UserIdGroupPairs":[]}`,
			`{"IpProtocol":"47","IpRanges":[{"CidrIp":"192.0.2.1/32"}],"Ipv6Ranges":[],"PrefixListIds":[],"UserIdGroupPairs":[]}`,
			`{"FromPort":-1,"IpProtocol":"icmpv6","IpRanges":[],"Ipv6Ranges":[{"CidrIpv6":"::/0"}],"PrefixListIds":[],"ToPort":-1,"UserIdGroupPairs":[]}`,
		},
		"sg-a egress":  nil,
		"sg-b ingress": nil,
		"sg-b egress": {
			`{"IpProtocol":"-1","IpRanges":[{"CidrIp":"0.0.0.0/0"}],"Ipv6Ranges":[{"CidrIpv6":"::/0"}],"PrefixListIds":[],"UserIdGroupPairs":[]}`,
		},
		"sg-default ingress": {
			`{"IpProtocol":"-1","IpRanges":[],"Ipv6Ranges":[],"PrefixListIds":[],"UserIdGroupPairs":[{"GroupId":"sg-default","UserId":"000000000000"}]}`,
		},
		"sg-default egress": {
			`{"IpProtocol":"-1","IpRanges":[{"CidrIp":"0.0.0.0/0"}],"Ipv6Ranges":[{"CidrIpv6":"::/0"}],"PrefixListIds":[],"UserIdGroupPairs":[]}`,
		},
	}
	var ids []string
	for _, g := range got.SecurityGroups {
		ids = append(ids, g.GroupId)
		if g.OwnerId != DefaultOwnerID || g.VpcId != VpcID {
			t.Errorf("%s: OwnerId %q, VpcId %q; want %q, %q", g.GroupId, g.OwnerId, g.VpcId, DefaultOwnerID, VpcID)
		}
		for dir, ps := range map[string][]IpPermission{"ingress": g.IpPermissions, "egress": g.IpPermissionsEgress} {
			if ps == nil {
				t.Errorf("%s %s: null; want a list ([] when empty), as the CLI prints it", g.GroupId, dir)
			}
			if c := compact(ps); !slices.Equal(c, want[g.GroupId+" "+dir]) {
				t.Errorf("%s %s =\n  %s\nwant\n  %s", g.GroupId, dir, c, want[g.GroupId+" "+dir])
			}
		}
	}
	if !slices.Equal(ids, []string{"sg-a", "sg-b", "sg-default"}) {
		t.Errorf("exported groups %q; want sg-a, sg-b and AWS's default group, which eth0 gets", ids)
	}
	if got.SecurityGroups[1].GroupName != "sg-b" || got.SecurityGroups[2].GroupName != "default" {
		t.Errorf("group names %q, %q; want sg-b (its id: the config names none) and default", got.SecurityGroups[1].GroupName, got.SecurityGroups[2].GroupName)
	}
}
