package netns

import (
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// awsCLI is Debian's AWS CLI v2, by path: another (v1) aws may come first on PATH.
const awsCLI = "/usr/bin/aws"

// awsSession runs the real AWS CLI against sgd's EC2 API inside a namespace, with keys
// from a shared-credentials file only this test knows.
type awsSession struct {
	t       *testing.T
	ns, url string
	env     []string
	creds   string // the credentials file sgd reads too
}

func newAWSSession(t *testing.T, ns string) *awsSession {
	t.Helper()
	if _, err := os.Stat(awsCLI); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed, and CI must run this test (.ci/run installs awscli): %v", awsCLI, err)
		}
		t.Skipf("%s is not installed (Debian: apt-get install awscli, AWS CLI v2): %v", awsCLI, err)
	}
	dir := t.TempDir()
	s := &awsSession{t: t, ns: ns, creds: filepath.Join(dir, "credentials")}
	write := func(path, body string) {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(s.creds, "[lab]\naws_access_key_id = AKIDSGDNETNSTEST0001\naws_secret_access_key = netns-test-secret-not-a-real-key\n")
	write(filepath.Join(dir, "config"), "[profile lab]\nregion = us-east-1\noutput = json\n")
	s.url = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t, ns)))
	s.env = append(os.Environ(), "AWS_SHARED_CREDENTIALS_FILE="+s.creds, "AWS_CONFIG_FILE="+filepath.Join(dir, "config"),
		"AWS_PROFILE=lab", "AWS_PAGER=", "AWS_EC2_METADATA_DISABLED=true")
	return s
}

// ec2 runs `aws ec2 ARGS…` in the namespace and decodes its JSON output into v (nil: any).
func (s *awsSession) ec2(v any, args ...string) {
	s.t.Helper()
	out, err := s.try(args...)
	if err != nil {
		s.t.Fatalf("aws ec2 %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			s.t.Fatalf("aws ec2 %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func (s *awsSession) try(args ...string) ([]byte, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", s.ns, awsCLI, "--endpoint-url", s.url, "ec2"}, args...)...)
	cmd.Env = s.env
	return cmd.CombinedOutput()
}

// The README's aws CLI session, end to end with real sockets: a group created through the
// API, SSH from the client authorized, the group attached to the host's interface — the
// client connects; the rule revoked — its next connection times out. The API's objects
// survive a restart of sgd, enforced.
func TestAWSCLISession(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	tp := newTopology(t)
	s := newAWSSession(t, tp.host.ns)
	state := t.TempDir()
	// The file lists the interface without groups: AWS's default group until the API
	// attaches one (an interface the file gives groups is the file's).
	queue := nextQueue()
	apiFlags := []string{"--api-listen", strings.TrimPrefix(s.url, "http://"), "--state-dir", state}
	cfgAPI := writeConfig(t, "interfaces:\n  - name: "+hostIf+"\ndaemon:\n  api_credentials_file: "+s.creds+"\n")
	d := startSGD(t, tp.host.ns, cfgAPI, queue, apiFlags...)
	ln := listenEcho(t, tp.host.ns, ":0", peerFirst)
	ssh := netip.AddrPortFrom(tp.host.v4, ln.port())
	checkTCP(t, tp.client.ns, ssh, timeout) // the default group allows only itself

	var created struct{ GroupId string }
	s.ec2(&created, "create-security-group", "--group-name", "lab-ssh", "--description", "ssh from the client")
	if !strings.HasPrefix(created.GroupId, "sg-") || len(created.GroupId) != 3+17 {
		t.Fatalf("create-security-group gave GroupId %q; want sg- and 17 hex digits", created.GroupId)
	}
	var auth struct {
		Return             bool
		SecurityGroupRules []struct{ SecurityGroupRuleId string }
	}
	s.ec2(&auth, "authorize-security-group-ingress", "--group-id", created.GroupId, "--protocol", "tcp",
		"--port", strconv.Itoa(int(ssh.Port())), "--cidr", tp.client.v4.String()+"/32")
	if !auth.Return || len(auth.SecurityGroupRules) != 1 || !strings.HasPrefix(auth.SecurityGroupRules[0].SecurityGroupRuleId, "sgr-") {
		t.Fatalf("authorize-security-group-ingress = %+v; want one sgr- rule", auth)
	}
	var enis struct {
		NetworkInterfaces []struct{ NetworkInterfaceId, Description string }
	}
	s.ec2(&enis, "describe-network-interfaces")
	eni := ""
	for _, n := range enis.NetworkInterfaces {
		if n.Description == hostIf {
			eni = n.NetworkInterfaceId
		}
	}
	if eni == "" {
		t.Fatalf("describe-network-interfaces = %+v; want %s", enis, hostIf)
	}
	s.ec2(nil, "modify-network-interface-attribute", "--network-interface-id", eni, "--groups", created.GroupId)
	time.Sleep(100 * time.Millisecond) // SPEC 4.4 promises new flows see it within 1 s of the response
	checkTCP(t, tp.client.ns, ssh, works)
	checkTCP(t, tp.stranger.ns, ssh, timeout) // only the client's address was authorized

	// A restart: the API's objects are in the state directory, enforced again.
	if code := d.stop(); code != 0 {
		t.Fatalf("sgd stop: exit %d", code)
	}
	startSGD(t, tp.host.ns, cfgAPI, queue, apiFlags...)
	checkTCP(t, tp.client.ns, ssh, works)

	s.ec2(nil, "revoke-security-group-ingress", "--group-id", created.GroupId, "--security-group-rule-ids", auth.SecurityGroupRules[0].SecurityGroupRuleId)
	time.Sleep(100 * time.Millisecond)
	checkTCP(t, tp.client.ns, ssh, timeout)

	// Errors print the AWS code; a request signed with an unknown key changes nothing.
	if out, err := s.try("delete-security-group", "--group-id", "sg-0123456789abcdef0"); err == nil || !strings.Contains(string(out), "InvalidGroup.NotFound") {
		t.Errorf("delete of an unknown group: err %v, output %s; want InvalidGroup.NotFound", err, out)
	}
	bad := *s
	bad.env = append(append([]string(nil), s.env...), "AWS_ACCESS_KEY_ID=AKIDUNKNOWN000000000", "AWS_SECRET_ACCESS_KEY=whatever")
	if out, err := bad.try("create-security-group", "--group-name", "intruder", "--description", "x"); err == nil || !strings.Contains(string(out), "AuthFailure") {
		t.Errorf("a request with an unknown key: err %v, output %s; want AuthFailure", err, out)
	}
	var groups struct{ SecurityGroups []struct{ GroupName string } }
	s.ec2(&groups, "describe-security-groups")
	for _, g := range groups.SecurityGroups {
		if g.GroupName == "intruder" {
			t.Error("a request with an unknown key created a group")
		}
	}
}
