package ec2api

import (
	"strings"
	"testing"
)

// The rest of SPEC 4.4's calls through the real CLI: egress authorize and revoke, rule
// modification and descriptions, tags on groups and rules, the interfaces.
func TestAWSCLIRulesAndTags(t *testing.T) {
	r := newRig(t)
	c := newCLI(t, r)
	var cg struct{ GroupId string }
	c.ok(&cg, "create-security-group", "--group-name", "cli-more", "--description", "egress and tags")
	var au struct {
		Return             bool
		SecurityGroupRules []struct {
			SecurityGroupRuleId string
			IsEgress            bool
		}
	}
	c.ok(&au, "authorize-security-group-egress", "--group-id", cg.GroupId, "--ip-permissions",
		`[{"IpProtocol":"tcp","FromPort":5432,"ToPort":5432,"IpRanges":[{"CidrIp":"198.51.100.0/24"}]}]`)
	if !au.Return || len(au.SecurityGroupRules) != 1 || !au.SecurityGroupRules[0].IsEgress {
		t.Fatalf("authorize-security-group-egress printed %+v", au)
	}
	egress := au.SecurityGroupRules[0].SecurityGroupRuleId
	c.ok(&au, "authorize-security-group-ingress", "--group-id", cg.GroupId, "--protocol", "tcp", "--port", "80", "--cidr", "0.0.0.0/0")
	ingress := au.SecurityGroupRules[0].SecurityGroupRuleId

	c.ok(nil, "modify-security-group-rules", "--group-id", cg.GroupId, "--security-group-rules",
		`[{"SecurityGroupRuleId":"`+ingress+`","SecurityGroupRule":{"IpProtocol":"tcp","FromPort":8080,"ToPort":8080,"CidrIpv4":"0.0.0.0/0","Description":"moved"}}]`)
	c.ok(nil, "update-security-group-rule-descriptions-egress", "--group-id", cg.GroupId, "--ip-permissions",
		`[{"IpProtocol":"tcp","FromPort":5432,"ToPort":5432,"IpRanges":[{"CidrIp":"198.51.100.0/24","Description":"to the database"}]}]`)
	c.ok(nil, "update-security-group-rule-descriptions-ingress", "--group-id", cg.GroupId, "--security-group-rule-descriptions",
		`[{"SecurityGroupRuleId":"`+ingress+`","Description":"web"}]`)
	c.ok(nil, "create-tags", "--resources", cg.GroupId, ingress, "--tags", "Key=team,Value=blue")

	var rules struct {
		SecurityGroupRules []struct {
			SecurityGroupRuleId, Description string
			FromPort                         int
			Tags                             []struct{ Key, Value string }
		}
	}
	c.ok(&rules, "describe-security-group-rules", "--security-group-rule-ids", ingress, egress)
	byID := map[string]int{}
	for i, ru := range rules.SecurityGroupRules {
		byID[ru.SecurityGroupRuleId] = i
	}
	in, out := rules.SecurityGroupRules[byID[ingress]], rules.SecurityGroupRules[byID[egress]]
	if len(rules.SecurityGroupRules) != 2 || in.FromPort != 8080 || in.Description != "web" || len(in.Tags) != 1 || out.Description != "to the database" {
		t.Errorf("describe-security-group-rules printed %+v; want the ingress rule on 8080 described web and tagged, the egress one described", rules)
	}
	// r.allows judges ingress on eth0: attach the group to it.
	var enis struct {
		NetworkInterfaces []struct{ NetworkInterfaceId string }
	}
	c.ok(&enis, "describe-network-interfaces")
	c.ok(nil, "modify-network-interface-attribute", "--network-interface-id", enis.NetworkInterfaces[0].NetworkInterfaceId, "--groups", cg.GroupId)
	if !r.allows("203.0.113.9", 8080) || r.allows("203.0.113.9", 80) {
		t.Error("after modify-security-group-rules the packet path does not allow 8080 instead of 80")
	}
	c.ok(nil, "delete-tags", "--resources", ingress, "--tags", "Key=team")
	c.ok(&rules, "describe-security-group-rules", "--security-group-rule-ids", ingress)
	if len(rules.SecurityGroupRules) != 1 || len(rules.SecurityGroupRules[0].Tags) != 0 {
		t.Errorf("after delete-tags the rule has tags %+v", rules.SecurityGroupRules)
	}
	c.ok(nil, "revoke-security-group-egress", "--group-id", cg.GroupId, "--security-group-rule-ids", egress)
	c.fails("InvalidSecurityGroupRuleId.NotFound", "revoke-security-group-egress", "--group-id", cg.GroupId, "--security-group-rule-ids", egress)
	var groups struct {
		SecurityGroups []struct {
			IpPermissionsEgress []any
			Tags                []struct{ Key, Value string }
		}
	}
	c.ok(&groups, "describe-security-groups", "--group-ids", cg.GroupId)
	if len(groups.SecurityGroups) != 1 || len(groups.SecurityGroups[0].Tags) != 1 || !strings.Contains(groups.SecurityGroups[0].Tags[0].Value, "blue") {
		t.Errorf("describe-security-groups printed %+v; want the group's tag", groups)
	}
}
