package ec2api

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// awsCLI is AWS CLI v2 as Debian's awscli package installs it. It is called by path: a v1
// `aws` may come first on PATH.
const awsCLI = "/usr/bin/aws"

// cli runs the real AWS CLI v2 against the rig's endpoint, with credentials and config in
// temp files, and returns stdout, stderr and whether it exited 0.
type cli struct {
	t   *testing.T
	url string
	env []string
}

func newCLI(t *testing.T, r *rig) *cli {
	t.Helper()
	if _, err := os.Stat(awsCLI); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed, and CI must run this test (.ci/run installs awscli): %v", awsCLI, err)
		}
		t.Skipf("%s is not installed (Debian: apt-get install awscli, AWS CLI v2): %v", awsCLI, err)
	}
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	conf := filepath.Join(dir, "config")
	os.WriteFile(creds, []byte("[default]\naws_access_key_id = "+testKeyID+"\naws_secret_access_key = "+testSecret+"\n"), 0o600)
	os.WriteFile(conf, []byte("[default]\nregion = us-east-1\noutput = json\n"), 0o600)
	return &cli{t: t, url: r.srv.URL, env: []string{"HOME=" + dir, "PATH=/usr/bin:/bin", "AWS_SHARED_CREDENTIALS_FILE=" + creds,
		"AWS_CONFIG_FILE=" + conf, "AWS_PAGER=", "AWS_EC2_METADATA_DISABLED=true", "AWS_MAX_ATTEMPTS=1"}}
}

func (c *cli) run(args ...string) (string, string, bool) {
	c.t.Helper()
	cmd := exec.Command(awsCLI, append([]string{"--endpoint-url", c.url, "--output", "json", "ec2"}, args...)...)
	cmd.Env = c.env
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err == nil
}

// ok runs a command that must succeed and decodes its JSON output.
func (c *cli) ok(v any, args ...string) {
	c.t.Helper()
	out, errOut, ok := c.run(args...)
	if !ok {
		c.t.Fatalf("aws ec2 %s failed: %s", strings.Join(args, " "), errOut)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			c.t.Fatalf("aws ec2 %s printed %q: %v", strings.Join(args, " "), out, err)
		}
	}
}

// fails runs a command that must fail with the AWS error code (the CLI prints it in
// parentheses: "An error occurred (InvalidPermission.Duplicate) when calling …").
func (c *cli) fails(code string, args ...string) {
	c.t.Helper()
	_, errOut, ok := c.run(args...)
	if ok || !strings.Contains(errOut, "("+code+")") {
		c.t.Errorf("aws ec2 %s: ok=%v, stderr %q; want the error %s", strings.Join(args, " "), ok, errOut, code)
	}
}

func TestAWSCLI(t *testing.T) {
	r := newRig(t)
	c := newCLI(t, r)

	var cg struct{ GroupId string }
	c.ok(&cg, "create-security-group", "--group-name", "cli-web", "--description", "made by the aws CLI",
		"--tag-specifications", "ResourceType=security-group,Tags=[{Key=env,Value=lab}]")
	if !strings.HasPrefix(cg.GroupId, "sg-") || len(cg.GroupId) != 20 {
		t.Fatalf("create-security-group printed GroupId %q", cg.GroupId)
	}
	c.fails("InvalidGroup.Duplicate", "create-security-group", "--group-name", "cli-web", "--description", "again")

	var au struct {
		Return             bool
		SecurityGroupRules []struct{ SecurityGroupRuleId, CidrIpv4 string }
	}
	c.ok(&au, "authorize-security-group-ingress", "--group-id", cg.GroupId, "--protocol", "tcp", "--port", "22", "--cidr", "203.0.113.42/32")
	if !au.Return || len(au.SecurityGroupRules) != 1 || au.SecurityGroupRules[0].CidrIpv4 != "203.0.113.42/32" {
		t.Fatalf("authorize (shorthand) printed %+v", au)
	}
	sshRule := au.SecurityGroupRules[0].SecurityGroupRuleId
	c.fails("InvalidPermission.Duplicate", "authorize-security-group-ingress", "--group-id", cg.GroupId, "--protocol", "tcp", "--port", "22", "--cidr", "203.0.113.42/32")
	c.ok(&au, "authorize-security-group-ingress", "--group-id", cg.GroupId, "--ip-permissions",
		`[{"IpProtocol":"tcp","FromPort":443,"ToPort":443,"IpRanges":[{"CidrIp":"0.0.0.0/0","Description":"HTTPS"}],"Ipv6Ranges":[{"CidrIpv6":"::/0"}]},`+
			`{"IpProtocol":"icmp","FromPort":8,"ToPort":-1,"UserIdGroupPairs":[{"GroupId":"sg-file"}]}]`)
	if len(au.SecurityGroupRules) != 3 {
		t.Errorf("authorize (--ip-permissions) made %d rules; want 3", len(au.SecurityGroupRules))
	}
	c.fails("InvalidPermission.Malformed", "authorize-security-group-ingress", "--group-id", cg.GroupId, "--protocol", "tcp", "--port", "30-20", "--cidr", "10.0.0.0/8")
	c.fails("DryRunOperation", "authorize-security-group-ingress", "--dry-run", "--group-id", cg.GroupId, "--protocol", "udp", "--port", "53", "--cidr", "10.0.0.0/8")
	c.fails("OperationNotPermitted", "authorize-security-group-ingress", "--group-id", "sg-file", "--protocol", "tcp", "--port", "22", "--cidr", "10.0.0.0/8")

	var dg struct {
		SecurityGroups []struct {
			GroupId, GroupName, Description, VpcId, OwnerId string
			IpPermissions                                   []struct {
				IpProtocol       string
				FromPort, ToPort *int
				IpRanges         []struct{ CidrIp, Description string }
				Ipv6Ranges       []struct{ CidrIpv6 string }
				UserIdGroupPairs []struct{ GroupId, UserId string }
				PrefixListIds    []struct{ PrefixListId string }
			}
			IpPermissionsEgress []struct{ IpProtocol string }
			Tags                []struct{ Key, Value string }
		}
	}
	c.ok(&dg, "describe-security-groups", "--group-ids", cg.GroupId)
	if len(dg.SecurityGroups) != 1 {
		t.Fatalf("describe-security-groups printed %+v", dg)
	}
	g := dg.SecurityGroups[0]
	if g.GroupName != "cli-web" || g.Description != "made by the aws CLI" || len(g.IpPermissions) != 3 || len(g.Tags) != 1 ||
		g.IpPermissions[1].IpRanges[0].Description != "HTTPS" || g.IpPermissions[2].UserIdGroupPairs[0].GroupId != "sg-file" ||
		g.IpPermissions[0].IpRanges == nil || g.IpPermissions[0].UserIdGroupPairs == nil || g.IpPermissions[0].PrefixListIds == nil ||
		len(g.IpPermissionsEgress) != 1 || g.IpPermissionsEgress[0].IpProtocol != "-1" || g.OwnerId == "" || g.VpcId == "" {
		t.Errorf("describe-security-groups printed %+v", g)
	}
	c.ok(&dg, "describe-security-groups", "--filters", "Name=tag:env,Values=lab")
	if len(dg.SecurityGroups) != 1 {
		t.Errorf("describe-security-groups --filters tag:env=lab printed %d groups; want 1", len(dg.SecurityGroups))
	}
	c.ok(&dg, "describe-security-groups")
	if len(dg.SecurityGroups) != 2 {
		t.Errorf("describe-security-groups printed %d groups; want the file's and the CLI's", len(dg.SecurityGroups))
	}
	c.fails("InvalidGroup.NotFound", "describe-security-groups", "--group-ids", "sg-0123456789abcdef0")
	c.fails("InvalidGroupId.Malformed", "describe-security-groups", "--group-ids", "nonsense")

	var dr struct {
		SecurityGroupRules []struct {
			SecurityGroupRuleId, GroupId, IpProtocol string
			IsEgress                                 bool
			FromPort, ToPort                         int
		}
	}
	c.ok(&dr, "describe-security-group-rules", "--filters", "Name=group-id,Values="+cg.GroupId)
	if len(dr.SecurityGroupRules) != 6 { // 4 ingress, 2 default egress
		t.Errorf("describe-security-group-rules printed %d rules; want 6: %+v", len(dr.SecurityGroupRules), dr)
	}
	c.ok(&dr, "describe-security-group-rules", "--security-group-rule-ids", sshRule)
	if len(dr.SecurityGroupRules) != 1 || dr.SecurityGroupRules[0].FromPort != 22 || dr.SecurityGroupRules[0].IsEgress {
		t.Errorf("describe-security-group-rules --security-group-rule-ids printed %+v", dr)
	}

	var rv struct {
		Return                    bool
		RevokedSecurityGroupRules []struct{ SecurityGroupRuleId string }
	}
	c.ok(&rv, "revoke-security-group-ingress", "--group-id", cg.GroupId, "--security-group-rule-ids", sshRule)
	if !rv.Return {
		t.Errorf("revoke printed %+v", rv)
	}
	c.fails("InvalidSecurityGroupRuleId.NotFound", "revoke-security-group-ingress", "--group-id", cg.GroupId, "--security-group-rule-ids", sshRule)
	c.fails("InvalidPermission.NotFound", "revoke-security-group-ingress", "--group-id", cg.GroupId, "--protocol", "tcp", "--port", "22", "--cidr", "203.0.113.42/32")
	c.fails("OperationNotPermitted", "delete-security-group", "--group-id", "sg-file")
	var db struct{ GroupId string }
	c.ok(&db, "create-security-group", "--group-name", "cli-db", "--description", "db")
	c.ok(nil, "authorize-security-group-ingress", "--group-id", db.GroupId, "--protocol", "tcp", "--port", "5432", "--source-group", cg.GroupId)
	c.fails("DependencyViolation", "delete-security-group", "--group-id", cg.GroupId)
	c.ok(nil, "delete-security-group", "--group-id", db.GroupId)
	c.ok(nil, "delete-security-group", "--group-id", cg.GroupId)
	c.fails("InvalidGroup.NotFound", "delete-security-group", "--group-id", cg.GroupId)

	// A bad secret: AuthFailure, as AWS prints it.
	bad := *c
	bad.env = append(append([]string{}, c.env...), "AWS_ACCESS_KEY_ID="+testKeyID, "AWS_SECRET_ACCESS_KEY=wrong")
	bad.fails("AuthFailure", "describe-security-groups")
}
