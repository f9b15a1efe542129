package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// apiSource stands in for the EC2 API store of the next issue: desired state that is no
// file, placed by request parameters.
type apiSource struct {
	cfg rules.Config
	ver string
}

func (a apiSource) Name() string { return "api" }
func (a apiSource) Propose(context.Context) (Proposal, error) {
	return Proposal{Config: a.cfg, Locator: apiLocator{}, Version: a.ver}, nil
}

// apiLocator names a rule's field as the API's parameters do: IpPermissions.N.FromPort.
type apiLocator struct{}

func (apiLocator) Locate(path ...any) rules.Location {
	if len(path) >= 5 {
		if ri, ok := path[3].(int); ok {
			field := map[string]string{"from_port": "FromPort", "to_port": "ToPort", "ip_protocol": "IpProtocol"}[fmt.Sprint(path[4])]
			return rules.Location{File: fmt.Sprintf("IpPermissions.%d.%s", ri+1, field)}
		}
	}
	return rules.Location{File: "api"}
}

func writeFile(t *testing.T, name, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func loadErrors(t *testing.T, srcs ...Source) rules.Errors {
	t.Helper()
	_, err := Load(context.Background(), rules.Env{}, srcs...)
	var es rules.Errors
	if !errors.As(err, &es) {
		t.Fatalf("Load = %v (%T); want rules.Errors", err, err)
	}
	return es
}

// Two sources are merged into one config and validated as one whole: a rule of one may
// reference the other's group, and each error is placed in its own source's terms.
func TestLoadMerges(t *testing.T) {
	file := NewFile(writeFile(t, "sgd.yaml", strings.Join([]string{
		"security_groups:",
		"  - group_id: sg-file",
		"    ingress:",
		"      - {ip_protocol: tcp, from_port: 22, to_port: 22, referenced_group_id: sg-api}",
		"interfaces:",
		"  - {name: eth0, security_groups: [sg-file, sg-api]}",
	}, "\n")+"\n"))
	port := func(p int) *int { return &p }
	api := apiSource{ver: "rev-7", cfg: rules.Config{SecurityGroups: []rules.Group{{GroupID: "sg-api",
		Ingress: []rules.Rule{{IPProtocol: "tcp", FromPort: port(80), ToPort: port(80), CidrIPv4: "0.0.0.0/0"}}}}}}
	st, err := Load(context.Background(), rules.Env{}, file, api)
	if err != nil {
		t.Fatalf("Load(file, api) = %v", err)
	}
	if g := st.Model.Group("sg-api"); g == nil || len(st.Model.Interfaces[0].Groups) != 2 {
		t.Errorf("merged model lacks the API's group on eth0: %+v", st.Model.Interfaces)
	}
	if one, _ := Load(context.Background(), rules.Env{}, file, apiSource{ver: "rev-8", cfg: api.cfg}); one.Version == st.Version {
		t.Errorf("Version did not change with a source's version: %s", st.Version)
	}

	// A bad rule in each: the file's error cites its line, the API's its parameter.
	bad := writeFile(t, "bad.yaml", "security_groups:\n  - group_id: sg-file\n    ingress:\n      - {ip_protocol: tcp, from_port: 23, to_port: 22, cidr_ipv4: 0.0.0.0/0}\n")
	api.cfg.SecurityGroups[0].Ingress[0].ToPort = port(70000)
	es := loadErrors(t, NewFile(bad), api)
	if len(es) != 2 {
		t.Fatalf("Load = %v; want 2 errors", es)
	}
	if got, want := es[0].Error(), bad+":4: group sg-file ingress[0] from_port: InvalidPermission.Malformed: from_port 23 is greater than to_port 22"; got != want {
		t.Errorf("file error = %q; want %q", got, want)
	}
	if got, want := es[1].Error(), "IpPermissions.1.ToPort: group sg-api ingress[0] to_port: InvalidPermission.Malformed: 70000 is not a port (0–65535)"; got != want {
		t.Errorf("API error = %q; want %q", got, want)
	}
}

// The file's daemon: section and its SG model are one document: unknown fields are
// reported in both, in order, with their lines.
func TestFileUnknownFields(t *testing.T) {
	es := loadErrors(t, NewFile(writeFile(t, "test.yaml", strings.Join([]string{
		"bogus: 1",
		"security_groups:",
		"  - {group_id: sg-a, bogus: 2, ingress: [{ip_protocol: -1, cidr_ipv4: 0.0.0.0/0, bogus: 3}]}",
		"interfaces: [{name: eth0, bogus: 4}]",
		"daemon: {bogus: 5}",
	}, "\n")+"\n")))
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%s@%d", e.Code, e.Line))
	}
	want := "[UnknownParameter@1 UnknownParameter@3 UnknownParameter@3 UnknownParameter@4 UnknownParameter@5]"
	if fmt.Sprint(got) != want {
		t.Errorf("Load codes = %v; want %s\n%v", got, want, es)
	}
}

// The SG quotas come from the daemon: section: the SG model is held to them; one out of
// range is refused by the settings (and the model is held to it as written).
func TestFileQuotas(t *testing.T) {
	rulesN := func(n int) string {
		var b strings.Builder
		b.WriteString("security_groups:\n  - group_id: sg-a\n    ingress:\n")
		for i := range n {
			fmt.Fprintf(&b, "      - {ip_protocol: tcp, from_port: %d, to_port: %d, cidr_ipv4: 10.0.0.0/8}\n", i, i)
		}
		return b.String()
	}
	groupsN := func(n int) string {
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
	for _, tt := range []struct {
		name, src string
		want      []string
	}{
		{"62 with quota 62", rulesN(62) + "daemon: {rules_per_group_quota: 62}\n", nil},
		{"63 with quota 62", rulesN(63) + "daemon: {rules_per_group_quota: 62}\n", []string{rules.CodeRulesLimit}},
		{"2 with quota 1", rulesN(2) + "daemon: {rules_per_group_quota: 1}\n", []string{rules.CodeRulesLimit}},
		{"61 by default", rulesN(61), []string{rules.CodeRulesLimit}},
		{"16 groups with quota 16", groupsN(16) + "daemon: {groups_per_interface_quota: 16}\n", nil},
		{"17 groups with quota 16", groupsN(17) + "daemon: {groups_per_interface_quota: 16}\n", []string{rules.CodeGroupsLimit}},
		{"3 groups with quota 2", groupsN(3) + "daemon: {groups_per_interface_quota: 2}\n", []string{rules.CodeGroupsLimit}},
		{"17 groups with quota 17", groupsN(17) + "daemon: {groups_per_interface_quota: 17}\n", []string{rules.CodeParameterValue}},
		// The section's problems come first, as the file's validation always listed them.
		{"bad settings and a bad rule", "security_groups:\n  - {group_id: sg-a, ingress: [{ip_protocol: tcp, cidr_ipv4: 10.0.0.0/8}]}\ndaemon: {queue_count: 0}\n",
			[]string{rules.CodeParameterValue, rules.CodeParameterValue}}, // tcp without ports: InvalidParameterValue, as EC2 (internal/rules ec2Source)
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(context.Background(), rules.Env{}, NewFile(writeFile(t, "q.yaml", tt.src)))
			var got []string
			var es rules.Errors
			if errors.As(err, &es) {
				got = es.Codes()
			} else if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Load codes = %v; want %v\n%v", got, tt.want, err)
			}
		})
	}
}

// An interface the file lists without groups takes its groups from a later source (the
// API attaching groups to it); one the file gives groups stays the file's, and the
// duplicate is reported at the later source's entry.
func TestLoadMergesInterfaceGroups(t *testing.T) {
	file := NewFile(writeFile(t, "sgd.yaml", strings.Join([]string{
		"security_groups:",
		"  - group_id: sg-file",
		"interfaces:",
		"  - {name: eth0}",
		"  - {name: eth1, security_groups: [sg-file]}",
	}, "\n")+"\n"))
	api := apiSource{ver: "1", cfg: rules.Config{SecurityGroups: []rules.Group{{GroupID: "sg-api"}},
		Interfaces: []rules.Interface{{Name: "eth0", SecurityGroups: []string{"sg-api"}}}}}
	st, err := Load(context.Background(), rules.Env{}, file, api)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if len(st.Model.Interfaces) != 2 || st.Model.Interfaces[0].Name != "eth0" || fmt.Sprint(st.Model.Interfaces[0].Groups) != "[sg-api]" {
		t.Errorf("interfaces = %+v; want eth0 with sg-api (from the API), then eth1", st.Model.Interfaces)
	}
	api.cfg.Interfaces = []rules.Interface{{Name: "eth1", SecurityGroups: []string{"sg-api"}}}
	es := loadErrors(t, file, api)
	if len(es) != 1 || es[0].Code != rules.CodeInterfaceDuplicate || es[0].File != "api" {
		t.Errorf("Load = %v; want one %s located at the API's entry", es, rules.CodeInterfaceDuplicate)
	}
}

// memberSource proposes members that may carry groups no source defines, as fleet mode's
// members do (DropUnknownMemberGroups).
type memberSource struct {
	members []rules.Member
	drop    bool
}

func (memberSource) Name() string { return "members" }
func (m memberSource) Propose(context.Context) (Proposal, error) {
	return Proposal{Config: rules.Config{Members: m.members}, Locator: memberLocator{}, Version: "m", DropUnknownMemberGroups: m.drop}, nil
}

// memberLocator names a member by its index in the source's own list.
type memberLocator struct{}

func (memberLocator) Locate(path ...any) rules.Location {
	if len(path) >= 2 {
		return rules.Location{File: fmt.Sprintf("member %v", path[1])}
	}
	return rules.Location{File: "members"}
}

// With DropUnknownMemberGroups, a member's groups that no source defines are left out (a
// member left with none is left out), rather than failing the load; the rest is still
// validated, each error at the member's own index in its source.
func TestDropUnknownMemberGroups(t *testing.T) {
	file := NewFile(writeFile(t, "sgd.yaml", "security_groups:\n  - group_id: sg-web\n  - group_id: sg-db\n"))
	members := []rules.Member{
		{Address: "192.0.2.1", SecurityGroups: []string{"sg-elsewhere"}},          // dropped whole
		{Address: "192.0.2.2", SecurityGroups: []string{"sg-other", "sg-web"}},    // keeps sg-web
		{Address: "192.0.2.3", SecurityGroups: []string{"sg-db", "default", "x"}}, // keeps sg-db: "default" is a name, not an id here
	}
	if _, err := Load(context.Background(), rules.Env{}, file, memberSource{members: members}); err == nil {
		t.Fatal("Load without DropUnknownMemberGroups accepted unknown groups")
	}
	st, err := Load(context.Background(), rules.Env{}, file, memberSource{members: members, drop: true})
	if err != nil {
		t.Fatalf("Load with DropUnknownMemberGroups = %v", err)
	}
	got := fmt.Sprint(st.Model.Members)
	if want := "[{192.0.2.2 [sg-web]} {192.0.2.3 [sg-db]}]"; got != want {
		t.Errorf("members = %s; want %s", got, want)
	}
	// Errors other than unknown groups still reject, placed at the source's own index.
	members = append(members, rules.Member{Address: "not-an-address", SecurityGroups: []string{"sg-web"}})
	es := loadErrors(t, file, memberSource{members: members, drop: true})
	if len(es) != 1 || es[0].Code != rules.CodeMemberAddrMalformed || es[0].File != "member 3" {
		t.Errorf("errors = %v; want one InvalidAddress.Malformed at member 3", es)
	}
}
