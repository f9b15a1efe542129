package ec2api

import (
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// code is the EC2 error code of err ("" for nil).
func code(err error) string {
	if err == nil {
		return ""
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return err.Error()
}

func ipPerm(proto string, from, to int32, cidr string) types.IpPermission {
	return types.IpPermission{IpProtocol: aws.String(proto), FromPort: aws.Int32(from), ToPort: aws.Int32(to),
		IpRanges: []types.IpRange{{CidrIp: aws.String(cidr), Description: aws.String("ssh from admin")}}}
}

// The whole path with the SDK: a group created, attached to eth0, a rule authorized — and
// the packet path allows what it did not; revoked, it denies again; deleted.
func TestSDKSession(t *testing.T) {
	r := newRig(t)
	ctx := r.ctx()
	c := r.client

	cg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("web"), Description: aws.String("web servers"),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSecurityGroup, Tags: []types.Tag{{Key: aws.String("env"), Value: aws.String("lab")}}}}})
	if err != nil {
		t.Fatalf("CreateSecurityGroup = %v", err)
	}
	id := aws.ToString(cg.GroupId)
	if len(id) != 20 || !strings.HasPrefix(id, "sg-") {
		t.Fatalf("GroupId = %q; want sg- and 17 hex digits", id)
	}
	if _, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("WEB"), Description: aws.String("x")}); code(err) != "InvalidGroup.Duplicate" {
		t.Errorf("CreateSecurityGroup(same name) = %v; want InvalidGroup.Duplicate", err)
	}

	enis, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
	if err != nil || len(enis.NetworkInterfaces) != 1 || aws.ToString(enis.NetworkInterfaces[0].Description) != "eth0" {
		t.Fatalf("DescribeNetworkInterfaces = %+v, %v; want eth0", enis, err)
	}
	eni := enis.NetworkInterfaces[0].NetworkInterfaceId
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: eni, Groups: []string{id}}); err != nil {
		t.Fatalf("ModifyNetworkInterfaceAttribute(--groups) = %v", err)
	}
	if r.allows("203.0.113.42", 22) {
		t.Fatal("tcp/22 is allowed before any rule")
	}

	au, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &id,
		IpPermissions: []types.IpPermission{ipPerm("tcp", 22, 22, "203.0.113.42/32")}})
	if err != nil || len(au.SecurityGroupRules) != 1 {
		t.Fatalf("AuthorizeSecurityGroupIngress = %+v, %v", au, err)
	}
	ruleID := aws.ToString(au.SecurityGroupRules[0].SecurityGroupRuleId)
	if !r.allows("203.0.113.42", 22) || r.allows("203.0.113.43", 22) {
		t.Fatal("after Authorize: tcp/22 from 203.0.113.42 not allowed, or allowed from another address")
	}
	_, err = c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &id,
		IpPermissions: []types.IpPermission{ipPerm("tcp", 22, 22, "203.0.113.42/32")}})
	if code(err) != "InvalidPermission.Duplicate" {
		t.Errorf("Authorize(the same rule) = %v; want InvalidPermission.Duplicate", err)
	}
	_, err = c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &id,
		IpPermissions: []types.IpPermission{ipPerm("tcp", 23, 22, "10.0.0.0/8")}})
	if code(err) != "InvalidPermission.Malformed" {
		t.Errorf("Authorize(from 23 to 22) = %v; want InvalidPermission.Malformed", err)
	}
	_, err = c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String("sg-file"),
		IpPermissions: []types.IpPermission{ipPerm("tcp", 22, 22, "10.0.0.0/8")}})
	if code(err) != "OperationNotPermitted" || !strings.Contains(err.Error(), "config file") {
		t.Errorf("Authorize(a file group) = %v; want OperationNotPermitted saying it is the config file's", err)
	}
	_, err = c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &id, DryRun: aws.Bool(true),
		IpPermissions: []types.IpPermission{ipPerm("tcp", 443, 443, "0.0.0.0/0")}})
	if code(err) != "DryRunOperation" || r.allows("198.51.100.1", 443) {
		t.Errorf("Authorize(DryRun) = %v; want DryRunOperation and nothing allowed", err)
	}
	// A rule referencing the file's group, and the file's group in Describe.
	if _, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &id,
		IpPermissions: []types.IpPermission{{IpProtocol: aws.String("-1"), UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String("sg-file")}}}}}); err != nil {
		t.Errorf("Authorize(from sg-file) = %v", err)
	}

	d, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
	if err != nil || len(d.SecurityGroups) != 1 {
		t.Fatalf("DescribeSecurityGroups = %+v, %v", d, err)
	}
	g := d.SecurityGroups[0]
	if aws.ToString(g.GroupName) != "web" || len(g.IpPermissions) != 2 || len(g.IpPermissionsEgress) != 1 || len(g.Tags) != 1 ||
		aws.ToString(g.IpPermissions[0].IpRanges[0].CidrIp) != "203.0.113.42/32" || aws.ToInt32(g.IpPermissions[0].FromPort) != 22 ||
		aws.ToString(g.IpPermissions[0].IpRanges[0].Description) != "ssh from admin" ||
		len(g.IpPermissionsEgress[0].IpRanges) != 1 || len(g.IpPermissionsEgress[0].Ipv6Ranges) != 1 {
		t.Errorf("DescribeSecurityGroups(%s) = %+v", id, g)
	}
	all, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{"file-*"}}}})
	if err != nil || len(all.SecurityGroups) != 1 || aws.ToString(all.SecurityGroups[0].GroupId) != "sg-file" {
		t.Errorf("DescribeSecurityGroups(group-name file-*) = %+v, %v; want sg-file", all, err)
	}
	tagged, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("tag:env"), Values: []string{"lab"}}}})
	if err != nil || len(tagged.SecurityGroups) != 1 {
		t.Errorf("DescribeSecurityGroups(tag:env=lab) = %+v, %v; want the one group", tagged, err)
	}
	// Pagination: 5 at a time over 7 groups.
	for i := range 5 {
		if _, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("page-" + string(rune('a'+i))), Description: aws.String("p")}); err != nil {
			t.Fatal(err)
		}
	}
	var seen int
	pages := ec2.NewDescribeSecurityGroupsPaginator(c, &ec2.DescribeSecurityGroupsInput{MaxResults: aws.Int32(5)})
	for n := 0; pages.HasMorePages(); n++ {
		p, err := pages.NextPage(ctx)
		if err != nil || n > 2 {
			t.Fatalf("page %d: %v", n, err)
		}
		seen += len(p.SecurityGroups)
	}
	if seen != 7 {
		t.Errorf("paginated DescribeSecurityGroups saw %d groups; want 7", seen)
	}
	if _, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{"sg-0000000000000dead"}}); code(err) != "InvalidGroup.NotFound" {
		t.Errorf("DescribeSecurityGroups(unknown) = %v; want InvalidGroup.NotFound", err)
	}
	if _, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{"web"}}); code(err) != "InvalidGroupId.Malformed" {
		t.Errorf("DescribeSecurityGroups(web) = %v; want InvalidGroupId.Malformed", err)
	}

	rs, err := c.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{SecurityGroupRuleIds: []string{ruleID}})
	if err != nil || len(rs.SecurityGroupRules) != 1 || aws.ToString(rs.SecurityGroupRules[0].CidrIpv4) != "203.0.113.42/32" || aws.ToBool(rs.SecurityGroupRules[0].IsEgress) {
		t.Errorf("DescribeSecurityGroupRules(%s) = %+v, %v", ruleID, rs, err)
	}
	byGroup, err := c.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{Filters: []types.Filter{{Name: aws.String("group-id"), Values: []string{id}}}})
	if err != nil || len(byGroup.SecurityGroupRules) != 4 {
		t.Errorf("DescribeSecurityGroupRules(group-id) = %d rules, %v; want 2 ingress + 2 egress", len(byGroup.SecurityGroupRules), err)
	}

	// Tags and descriptions on rules; a rule modified in place keeps its id.
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{ruleID}, Tags: []types.Tag{{Key: aws.String("who"), Value: aws.String("admin")}}}); err != nil {
		t.Errorf("CreateTags(rule) = %v", err)
	}
	if _, err := c.UpdateSecurityGroupRuleDescriptionsIngress(ctx, &ec2.UpdateSecurityGroupRuleDescriptionsIngressInput{GroupId: &id,
		SecurityGroupRuleDescriptions: []types.SecurityGroupRuleDescription{{SecurityGroupRuleId: &ruleID, Description: aws.String("admin desk")}}}); err != nil {
		t.Errorf("UpdateSecurityGroupRuleDescriptionsIngress = %v", err)
	}
	if _, err := c.ModifySecurityGroupRules(ctx, &ec2.ModifySecurityGroupRulesInput{GroupId: &id, SecurityGroupRules: []types.SecurityGroupRuleUpdate{{
		SecurityGroupRuleId: &ruleID, SecurityGroupRule: &types.SecurityGroupRuleRequest{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(2222), ToPort: aws.Int32(2222), CidrIpv4: aws.String("203.0.113.42/32"), Description: aws.String("moved")}}}}); err != nil {
		t.Errorf("ModifySecurityGroupRules = %v", err)
	}
	if r.allows("203.0.113.42", 22) || !r.allows("203.0.113.42", 2222) {
		t.Error("after ModifySecurityGroupRules the packet path does not have the moved port")
	}
	rs, _ = c.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{SecurityGroupRuleIds: []string{ruleID}})
	if got := rs.SecurityGroupRules[0]; aws.ToString(got.Description) != "moved" || len(got.Tags) != 1 || aws.ToInt32(got.FromPort) != 2222 {
		t.Errorf("the modified rule = %+v; want description moved, its tag, port 2222", got)
	}

	// Delete refuses a group in use, revoke by id, detach, delete.
	if _, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &id}); code(err) != "DependencyViolation" {
		t.Errorf("DeleteSecurityGroup(attached) = %v; want DependencyViolation", err)
	}
	if _, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String("sg-file")}); code(err) != "OperationNotPermitted" {
		t.Errorf("DeleteSecurityGroup(sg-file) = %v; want OperationNotPermitted", err)
	}
	rv, err := c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: &id, SecurityGroupRuleIds: []string{ruleID}})
	if err != nil || !aws.ToBool(rv.Return) || len(rv.RevokedSecurityGroupRules) != 1 {
		t.Fatalf("RevokeSecurityGroupIngress(%s) = %+v, %v", ruleID, rv, err)
	}
	if r.allows("203.0.113.42", 2222) {
		t.Error("the packet path still allows a revoked rule")
	}
	if _, err := c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: &id, IpPermissions: []types.IpPermission{ipPerm("tcp", 22, 22, "203.0.113.42/32")}}); code(err) != "InvalidPermission.NotFound" {
		t.Errorf("Revoke(a rule that is gone) = %v; want InvalidPermission.NotFound", err)
	}
	if _, err := c.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: &id, IpPermissions: []types.IpPermission{{IpProtocol: aws.String("-1"), IpRanges: []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}}); err != nil {
		t.Errorf("RevokeSecurityGroupEgress(the default egress, by permission) = %v", err)
	}
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: eni, Groups: []string{"sg-file"}}); err != nil {
		t.Fatalf("ModifyNetworkInterfaceAttribute(sg-file) = %v", err)
	}
	if !r.allows("198.51.100.1", 80) {
		t.Error("eth0 with sg-file does not allow the file's tcp/80")
	}
	if _, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &id}); err != nil {
		t.Errorf("DeleteSecurityGroup = %v", err)
	}
	if _, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &id}); code(err) != "InvalidGroup.NotFound" {
		t.Errorf("DeleteSecurityGroup(again) = %v; want InvalidGroup.NotFound", err)
	}

	if n := testutil.ToFloat64(r.metrics.requests.WithLabelValues("CreateSecurityGroup", "Success")); n != 6 {
		t.Errorf("sgd_api_requests_total{CreateSecurityGroup,Success} = %v; want 6", n)
	}
	if n := testutil.ToFloat64(r.metrics.requests.WithLabelValues("AuthorizeSecurityGroupIngress", "InvalidPermission.Duplicate")); n != 1 {
		t.Errorf("sgd_api_requests_total{AuthorizeSecurityGroupIngress,InvalidPermission.Duplicate} = %v; want 1", n)
	}
}
