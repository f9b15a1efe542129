package ec2api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/sgd-firewall/sgd/internal/store"
)

// post sends body to the rig, signed with key/secret at the given time unless key is "";
// tamper changes the body after signing.
func (r *rig) post(t *testing.T, key, secret string, at time.Time, body string, tamper func(string) string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	if key != "" {
		sum := sha256.Sum256([]byte(body))
		if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: key, SecretAccessKey: secret}, req,
			hex.EncodeToString(sum[:]), "ec2", "us-east-1", at); err != nil {
			t.Fatal(err)
		}
	}
	if tamper != nil {
		b := tamper(body)
		req.Body, req.ContentLength = io.NopCloser(strings.NewReader(b)), int64(len(b))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

func TestAuth(t *testing.T) {
	r := newRig(t)
	create := url.Values{"Action": {"CreateSecurityGroup"}, "Version": {APIVersion}, "GroupName": {"evil"}, "GroupDescription": {"x"}}.Encode()
	now := time.Now()
	for _, tt := range []struct {
		name        string
		key, secret string
		at          time.Time
		tamper      func(string) string
	}{
		{"unsigned", "", "", now, nil},
		{"unknown key", "AKIDNOTKNOWN00000000", testSecret, now, nil},
		{"wrong secret", testKeyID, testSecret + "x", now, nil},
		{"tampered body", testKeyID, testSecret, now, func(b string) string { return strings.Replace(b, "evil", "evi1", 1) }},
		{"stale date", testKeyID, testSecret, now.Add(-6 * time.Minute), nil},
		{"future date", testKeyID, testSecret, now.Add(6 * time.Minute), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := r.src.Snapshot().Revision
			st, body := r.post(t, tt.key, tt.secret, tt.at, create, tt.tamper)
			if st != http.StatusUnauthorized || !strings.Contains(body, "<Code>AuthFailure</Code>") || !strings.Contains(body, "<RequestID>") {
				t.Errorf("%s: status %d, body %s; want 401 AuthFailure with a RequestID", tt.name, st, body)
			}
			if strings.Contains(body, testSecret) || tt.key != "" && strings.Contains(body, tt.key) {
				t.Errorf("%s: the error quotes a key or a secret: %s", tt.name, body)
			}
			if r.src.Snapshot().Revision != before || r.ctl.Running().Model.Group("sg-evil") != nil {
				t.Errorf("%s: a refused request changed the store", tt.name)
			}
			for _, g := range r.ctl.Running().Model.Groups {
				if g.Name == "evil" || g.Name == "evi1" {
					t.Errorf("%s: the group was created", tt.name)
				}
			}
		})
	}
	// The same request, signed properly, works: the refusals above were the signature's.
	if st, body := r.post(t, testKeyID, testSecret, now, create, nil); st != http.StatusOK || !strings.Contains(body, "<groupId>sg-") {
		t.Errorf("a well-signed request: status %d, %s", st, body)
	}
	// An SDK client with an unknown key gets AuthFailure too.
	other := ec2.New(ec2.Options{Region: "eu-west-1", BaseEndpoint: aws.String(r.srv.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDOTHER", "s", "")})
	if _, err := other.DescribeSecurityGroups(r.ctx(), &ec2.DescribeSecurityGroupsInput{}); code(err) != "AuthFailure" {
		t.Errorf("DescribeSecurityGroups with an unknown key = %v; want AuthFailure", err)
	}
}

func TestProtocolErrors(t *testing.T) {
	r := newRig(t)
	now := time.Now()
	for _, tt := range []struct{ body, want string }{
		{"Action=RunInstances&Version=2016-11-15", "<Code>UnsupportedOperation</Code>"},
		{"Action=Frobnicate&Version=2016-11-15", "<Code>InvalidAction</Code>"},
		{"Version=2016-11-15", "<Code>MissingParameter</Code>"},
		{"Action=DescribeSecurityGroups&Version=2016-11-15&Bogus=1", "<Code>UnknownParameter</Code>"},
		{"Action=CreateSecurityGroup&Version=2016-11-15&GroupName=x", "<Code>MissingParameter</Code>"},
		{"Action=DescribeSecurityGroups&Version=2016-11-15&DryRun=true", "<Code>DryRunOperation</Code>"},
		{"Action=AuthorizeSecurityGroupIngress&Version=2016-11-15&GroupId=sg-file&IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=1&IpPermissions.1.ToPort=1&IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0/8&IpPermissions.1.IpRanges.1.Bogus=x", "<Code>UnknownParameter</Code>"},
	} {
		_, body := r.post(t, testKeyID, testSecret, now, tt.body, nil)
		if !strings.Contains(body, tt.want) {
			t.Errorf("%s = %s; want %s", tt.body, body, tt.want)
		}
	}
}

// Groups created through the API are there, and enforced, after a restart.
func TestRestartPersists(t *testing.T) {
	r := newRig(t)
	ctx := r.ctx()
	cg, err := r.client.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("ssh"), Description: aws.String("ssh")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: cg.GroupId,
		IpPermissions: []types.IpPermission{ipPerm("tcp", 22, 22, "203.0.113.42/32")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(store.InterfaceENI("", "eth0")), Groups: []string{*cg.GroupId}}); err != nil {
		t.Fatal(err)
	}
	r.restart()
	d, err := r.client.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{*cg.GroupId}})
	if err != nil || len(d.SecurityGroups) != 1 || len(d.SecurityGroups[0].IpPermissions) != 1 {
		t.Fatalf("after a restart DescribeSecurityGroups = %+v, %v", d, err)
	}
	if !r.allows("203.0.113.42", 22) {
		t.Error("after a restart the rule is not enforced")
	}
}
