package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestCheckExplainExitCodes holds SPEC 2.2's contract at the command line: check exits 0
// or non-zero with the AWS code; explain prints ALLOW or DENY first and exits 0, 1, or 2.
func TestCheckExplainExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string { return writeFile(t, dir, name, body) }
	spec := "../../internal/rules/testdata/spec-example.yaml"
	bad := write("bad.yaml", "security_groups:\n  - group_id: sg-a\n    ingress:\n      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 10.0.0.300/8}\n")
	unknown := write("unknown.yaml", "security_groups:\n  - group_id: sg-a\n    colour: blue\n")
	explain := func(src string, extra ...string) []string {
		return append([]string{"explain", "--config", spec, "--interface", "eth0", "--direction", "ingress",
			"--protocol", "tcp", "--source", src, "--destination", "10.0.0.5", "--port", "22"}, extra...)
	}
	for _, c := range []struct {
		args      []string
		code      int
		stdout    string // prefix of stdout
		stderrHas string
	}{
		{[]string{"check", "--config", spec}, 0, spec + ": OK", ""},
		{[]string{"check", "--config", "../../examples/sgd.yaml"}, 0, "../../examples/sgd.yaml: OK", ""},
		{[]string{"check", "--config", bad}, 1, "", "InvalidPermission.Malformed"},
		{[]string{"check", "--config", unknown}, 1, "", "UnknownParameter"},
		{[]string{"check"}, 2, "", "--config is required"},
		{[]string{"check", "--help"}, 0, "", "Usage: sgd check"},
		{explain("203.0.113.42"), 0, "ALLOW ", ""},
		{explain("192.0.2.9"), 1, "DENY ", ""},
		{explain("192.0.2.9", "--icmp-type", "8"), 2, "", "--icmp-type and --icmp-code are for icmp"},
		{[]string{"explain", "--config", bad, "--interface", "eth0", "--direction", "ingress", "--protocol", "tcp",
			"--source", "192.0.2.9", "--destination", "10.0.0.5", "--port", "22"}, 2, "", "InvalidPermission.Malformed"},
		{[]string{"explain", "--config", spec}, 2, "", "is required"},
		{[]string{"nonsense"}, 2, "", "unknown command"},
		{[]string{"version"}, 0, "sgd ", ""},
	} {
		var stdout, stderr bytes.Buffer
		code := dispatch(c.args, &stdout, &stderr)
		if code != c.code || !strings.HasPrefix(stdout.String(), c.stdout) || !strings.Contains(stderr.String(), c.stderrHas) {
			t.Errorf("sgd %s = exit %d, stdout %q, stderr %q; want exit %d, stdout starting %q, stderr containing %q",
				strings.Join(c.args, " "), code, stdout.String(), stderr.String(), c.code, c.stdout, c.stderrHas)
		}
	}
}
