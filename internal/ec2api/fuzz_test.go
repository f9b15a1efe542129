package ec2api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// FuzzQuery sends any body, properly signed, through the whole handler — the parameter
// parser, every action's reading of it, the change through the controller — and holds it
// to: no panic, an XML answer with a status EC2 uses, and a running state that is still
// valid (the controller refuses what the validator refuses).
func FuzzQuery(f *testing.F) {
	for _, s := range []string{
		"Action=DescribeSecurityGroups&Version=2016-11-15",
		"Action=CreateSecurityGroup&Version=2016-11-15&GroupName=a&GroupDescription=b",
		"Action=AuthorizeSecurityGroupIngress&Version=2016-11-15&GroupName=a&IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=22&IpPermissions.1.ToPort=22&IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0/8",
		"Action=AuthorizeSecurityGroupEgress&Version=2016-11-15&GroupName=a&IpPermissions.2.IpProtocol=-1&IpPermissions.2.Groups.1.GroupName=a",
		"Action=RevokeSecurityGroupIngress&Version=2016-11-15&GroupName=a&SecurityGroupRuleId.1=sgr-0123456789abcdef0",
		"Action=DescribeSecurityGroups&Filter.1.Name=tag:x&Filter.1.Value.1=*a?&MaxResults=5&NextToken=sg-file",
		"Action=CreateTags&ResourceId.1=sg-file&Tag.1.Key=k&Tag.1.Value=v",
		"Action=ModifyNetworkInterfaceAttribute&NetworkInterfaceId=eni-x&SecurityGroupId.1=sg-file",
		"Action=DescribeSecurityGroups&GroupId.01=sg-file&GroupId.1=sg-file",
		"Action=DeleteSecurityGroup&GroupName=a&DryRun=true",
	} {
		f.Add(s)
	}
	r := newRig(f)
	h := r.srv.Config.Handler
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1/", bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		sum := sha256.Sum256([]byte(body))
		if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: testKeyID, SecretAccessKey: testSecret}, req,
			hex.EncodeToString(sum[:]), "ec2", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case 200, 400, 412:
		default:
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
		if err := xml.Unmarshal(w.Body.Bytes(), new(struct{})); err != nil {
			t.Fatalf("the answer to %q is not XML: %v\n%s", body, err, w.Body)
		}
		if bytes.Contains(w.Body.Bytes(), []byte("AuthFailure")) {
			t.Fatalf("a signed request was refused: %s", w.Body)
		}
		if _, err := r.ctl.Load(context.Background()); err != nil {
			t.Fatalf("after %q the sources propose an invalid state: %v", body, err)
		}
	})
}
