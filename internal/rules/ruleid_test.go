package rules

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// ruleIDs validates a config and returns each rule's id by "group/direction/index".
func ruleIDs(t *testing.T, src string) map[string]string {
	t.Helper()
	doc, err := Parse("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Validate(doc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range m.Groups {
		for _, list := range [2][]NRule{g.Ingress, g.Egress} {
			for _, r := range list {
				out[g.ID+"/"+r.Direction.String()+"/"+strconv.Itoa(r.Index)] = r.ID
			}
		}
	}
	return out
}

func groupYAML(ingress ...string) string {
	return "security_groups:\n  - group_id: sg-a\n    ingress:\n" +
		"      - " + strings.Join(ingress, "\n      - ") + "\n  - group_id: sg-b\n    ingress:\n      - " + ingress[0] + "\n"
}

// Ids are derived from the rule (SPEC 4.1): other rules coming, going or moving leave a
// rule's id alone; changing the rule itself changes it; its description does not.
func TestRuleIDsStable(t *testing.T) {
	const (
		ssh  = "{ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 203.0.113.42/32}"
		web  = "{ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}"
		dns  = "{ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 10.0.0.0/8}"
		dns2 = "{ip_protocol: udp, from_port: 53, to_port: 53, cidr_ipv4: 10.9.9.9/8, description: resolvers}" // same rule, canonicalised
	)
	base := ruleIDs(t, groupYAML(ssh, web, dns))
	sshID, dnsID := base["sg-a/ingress/0"], base["sg-a/ingress/2"]
	re := regexp.MustCompile(`^sgr-[0-9a-f]{17}$`)
	seen := map[string]bool{}
	for k, id := range base {
		if !re.MatchString(id) {
			t.Errorf("%s: id %q is not sgr- + 17 hex digits", k, id)
		}
		if seen[id] {
			t.Errorf("%s: id %s given twice", k, id)
		}
		seen[id] = true
	}
	if base["sg-b/ingress/0"] == sshID {
		t.Errorf("the same rule in two groups has one id %s; want one per group", sshID)
	}
	for _, tc := range []struct {
		name     string
		src      string
		ssh, dns string // where the SSH and DNS rules are now
	}{
		{"reordered", groupYAML(dns, ssh, web), "sg-a/ingress/1", "sg-a/ingress/0"},
		{"earlier rule removed", groupYAML(ssh, dns), "sg-a/ingress/0", "sg-a/ingress/1"},
		{"rule added before", groupYAML(web, ssh, "{ip_protocol: tcp, from_port: 443, to_port: 443, cidr_ipv4: 0.0.0.0/0}", dns), "sg-a/ingress/1", "sg-a/ingress/3"},
		{"description and non-canonical CIDR", groupYAML(ssh, web, dns2), "sg-a/ingress/0", "sg-a/ingress/2"},
	} {
		got := ruleIDs(t, tc.src)
		if got[tc.ssh] != sshID || got[tc.dns] != dnsID {
			t.Errorf("%s: ids %s, %s; want %s, %s (unchanged)", tc.name, got[tc.ssh], got[tc.dns], sshID, dnsID)
		}
	}
	for _, changed := range []string{
		"{ip_protocol: tcp, from_port: 22, to_port: 23, cidr_ipv4: 203.0.113.42/32}",
		"{ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 203.0.113.43/32}",
		"{ip_protocol: udp, from_port: 22, to_port: 22, cidr_ipv4: 203.0.113.42/32}",
	} {
		if got := ruleIDs(t, groupYAML(changed, web, dns)); got["sg-a/ingress/0"] == sshID {
			t.Errorf("changed rule %s kept id %s; want a new one", changed, sshID)
		}
	}
	egress := ruleIDs(t, "security_groups:\n  - group_id: sg-a\n    egress:\n      - "+ssh+"\n    ingress:\n      - "+ssh+"\n")
	if egress["sg-a/egress/0"] == egress["sg-a/ingress/0"] {
		t.Errorf("the same rule in both directions has one id; want one per direction")
	}
}

// An explicit security_group_rule_id is the rule's id; a malformed or repeated one is
// refused with an AWS code.
func TestRuleIDsExplicit(t *testing.T) {
	got := ruleIDs(t, "security_groups:\n  - group_id: sg-a\n    ingress:\n      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 0.0.0.0/0, security_group_rule_id: sgr-0123456789abcdef0}\n")
	if got["sg-a/ingress/0"] != "sgr-0123456789abcdef0" {
		t.Errorf("explicit id = %q; want sgr-0123456789abcdef0", got["sg-a/ingress/0"])
	}
	for _, tc := range []struct {
		name, src, code string
		line            int
	}{
		{"malformed", lines("security_groups:", "  - group_id: sg-a", "    ingress:",
			"      - ip_protocol: tcp", "        from_port: 22", "        to_port: 22", "        cidr_ipv4: 0.0.0.0/0",
			"        security_group_rule_id: sgr-XYZ"), CodeRuleIDMalformed, 8},
		{"upper-case hex", lines("security_groups:", "  - group_id: sg-a", "    ingress:",
			"      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 0.0.0.0/0, security_group_rule_id: sgr-0123456789ABCDEF0}"), CodeRuleIDMalformed, 4},
		{"repeated", lines("security_groups:", "  - group_id: sg-a", "    ingress:",
			"      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 0.0.0.0/0, security_group_rule_id: sgr-0123456789abcdef0}",
			"  - group_id: sg-b", "    ingress:",
			"      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 0.0.0.0/0, security_group_rule_id: sgr-0123456789abcdef0}"), CodeParameterValue, 7},
	} {
		es := configErrors(t, "t.yaml", tc.src, Options{})
		if len(es) != 1 || es[0].Code != tc.code || es[0].Line != tc.line || es[0].Field != "security_group_rule_id" {
			t.Errorf("%s: Validate = %v; want one %s on line %d, field security_group_rule_id", tc.name, es, tc.code, tc.line)
		}
	}
}
