package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// One exit-code rule for every verb (config.go): 0 yes; 1 no — rejected, denied, failed;
// 2 the question could not be asked — a bad flag or a --config that cannot be read. And
// the first line a person reads says what was wrong, in words (issue 10).
func TestExitCodesAndFirstLines(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string { return writeFile(t, dir, name, body) }
	missing := filepath.Join(dir, "missing.yaml")
	// Under a file, not a directory: unreadable even for root, who reads any mode.
	unreadable := filepath.Join(write("plain", ""), "sgd.yaml")
	empty := write("empty.yaml", "")
	comments := write("comments.yaml", "# sgd config\n\n# nothing yet\n")
	daemonOnly := write("daemon-only.yaml", "daemon: {log_level: debug}\n")
	noIfaces := write("no-ifaces.yaml", "security_groups:\n  - {group_id: sg-a, ingress: [{ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 192.0.2.0/24}]}\n")
	ghost := write("ghost.yaml", "security_groups: [{group_id: sg-a}]\ninterfaces:\n  - {name: sgdghost0, security_groups: [sg-a]}\n  - {name: sgdghost1, security_groups: [sg-a]}\n")
	oneGhost := write("ghost1.yaml", "security_groups: [{group_id: sg-a}]\ninterfaces: [{name: sgdghost0, security_groups: [sg-a]}]\n")
	tab := write("tab.yaml", "security_groups:\n\t- group_id: sg-a\n")
	list := write("list.yaml", "- group_id: sg-a\n")
	v6 := write("v6.yaml", "security_groups:\n  - group_id: sg-a\n    ingress:\n      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv6: ::/0}\n")
	types := write("types.json", `{"security_groups": [{"group_id": "sg-a", "ingress": [{"ip_protocol": "tcp", "from_port": "22", "to_port": 22, "cidr_ipv4": "10.0.0.0/8"}]}]}`)
	aws := write("aws.json", "{\n  \"SecurityGroups\": [{\"GroupId\": \"sg-0123\", \"IpPermissions\": []}]\n}\n")
	noPeer := write("nopeer.yaml", "security_groups:\n  - group_id: sg-a\n    ingress:\n      - {ip_protocol: tcp, from_port: 22, to_port: 22}\n")
	explain := func(config string) []string {
		return []string{"explain", "--config", config, "--interface", "eth0", "--direction", "ingress",
			"--protocol", "tcp", "--source", "192.0.2.9", "--destination", "10.0.0.5", "--port", "22"}
	}
	spec := "../../internal/rules/testdata/spec-example.yaml"
	for _, c := range []struct {
		args   []string
		code   int
		stdout string // first line, exactly ("" for none)
		stderr string // first line, exactly ("" for none)
	}{
		// A --config that cannot be read: usage, for every verb.
		{[]string{"check", "--config", missing}, 2, "", "sgd check: --config " + missing + ": no such file or directory"},
		{explain(missing), 2, "", "sgd explain: --config " + missing + ": no such file or directory"},
		{[]string{"run", "--config", missing}, 2, "", "sgd run: --config " + missing + ": no such file or directory"},
		{[]string{"check", "--config", unreadable}, 2, "", "sgd check: --config " + unreadable + ": not a directory"},
		// A bad flag is the flag's fault, not the file's.
		{[]string{"run", "--config", spec, "--log-level", "verbose"}, 2, "", `sgd run: --log-level: "verbose" is not debug, info, warn or error`},
		{[]string{"run", "--config", spec, "--queue-num", "70000"}, 2, "", "sgd run: --queue-num: 70000 is outside 0–65535"},
		// A config read and rejected: 1 for check and run, 2 for explain (its 1 is DENY).
		{[]string{"check", "--config", list}, 1, "", list + `:1: MalformedConfig: the file is a list (it starts with "- "); an sgd config is a mapping with the keys security_groups, prefix_lists, interfaces, ports, members, daemon: write security_groups: on a line of its own and indent the list of groups under it`},
		{explain(list), 2, "", list + `:1: MalformedConfig: the file is a list (it starts with "- "); an sgd config is a mapping with the keys security_groups, prefix_lists, interfaces, ports, members, daemon: write security_groups: on a line of its own and indent the list of groups under it`},
		{[]string{"run", "--config", list}, 1, "", list + `:1: MalformedConfig: the file is a list (it starts with "- "); an sgd config is a mapping with the keys security_groups, prefix_lists, interfaces, ports, members, daemon: write security_groups: on a line of its own and indent the list of groups under it`},
		{[]string{"check", "--config", tab}, 1, "", tab + ":2: MalformedConfig: a tab is used for indentation; YAML indents with spaces only: replace the tab with spaces"},
		{[]string{"check", "--config", v6}, 1, "", v6 + `:4: MalformedConfig: the value ::/0 starts with ':', which in flow style ({…} or […]) separates a key from its value; quote it: "::/0"`},
		{[]string{"check", "--config", types}, 1, "", types + `:1: group sg-a ingress[0] from_port: MalformedConfig: want a whole number, not the text "22"`},
		{[]string{"check", "--config", aws}, 1, "", aws + ":2: MalformedConfig: this is describe-security-groups output (AWS's JSON, with SecurityGroups), not an sgd config; run sgd import aws " + aws + " to turn it into one"},
		{[]string{"check", "--config", noPeer}, 1, "", noPeer + ":4: group sg-a ingress[0]: MissingParameter: a rule needs exactly one peer: cidr_ipv4, cidr_ipv6, prefix_list_id or referenced_group_id"},
		// What filters nothing: an empty file is refused, the rest warned about.
		{[]string{"check", "--config", empty}, 1, "", "sgd check: " + empty + " is empty (no security_groups, no interfaces): it would filter nothing"},
		{[]string{"check", "--config", comments}, 1, "", "sgd check: " + comments + " is empty (no security_groups, no interfaces): it would filter nothing"},
		{[]string{"check", "--config", daemonOnly}, 1, "", "sgd check: " + daemonOnly + " is empty (no security_groups, no interfaces): it would filter nothing"},
		{[]string{"check", "--config", noIfaces}, 0, noIfaces + ": OK: 1 group, 3 rules, 0 interfaces, 0 prefix lists, 0 members",
			"warning: no interfaces: this config filters nothing (sgd run refuses it); list this host's interfaces under interfaces:"},
		{[]string{"check", "--config", ghost}, 0, ghost + ": OK: 1 group, 2 rules, 2 interfaces, 0 prefix lists, 0 members",
			"warning: interfaces sgdghost0, sgdghost1 do not exist on this host: nothing is filtered there (sgd run refuses to start unless daemon.allow_missing_interfaces is true; then it hooks each one when it appears)"},
		{[]string{"check", "--config", oneGhost}, 0, oneGhost + ": OK: 1 group, 2 rules, 1 interface, 0 prefix lists, 0 members",
			"warning: interface sgdghost0 does not exist on this host: nothing is filtered there (sgd run refuses to start unless daemon.allow_missing_interfaces is true; then it hooks each one when it appears)"},
	} {
		t.Setenv("SSH_CONNECTION", "")
		var stdout, stderr bytes.Buffer
		code := dispatch(c.args, &stdout, &stderr)
		out, _, _ := strings.Cut(stdout.String(), "\n")
		errLine, _, _ := strings.Cut(stderr.String(), "\n")
		if code != c.code || out != c.stdout || errLine != c.stderr {
			t.Errorf("sgd %s = exit %d\n  stdout %q\n  stderr %q\nwant exit %d\n  stdout %q\n  stderr %q",
				strings.Join(c.args, " "), code, out, errLine, c.code, c.stdout, c.stderr)
		}
	}
}

// sgd check warns when the SSH session it runs in would be cut: a new connection like it
// would be dropped on the interface it crosses. The session here is a documentation
// address talking to another; the kernel would route it over whatever the test host has
// (lo, most likely), and lo is never filtered, so routeInterface is made to answer the
// configured interface, as it would on a VM whose eth0 carries the session.
func TestCheckLockoutWarning(t *testing.T) {
	dir := t.TempDir()
	// SSH allowed from 203.0.113.42 only (the README's first config).
	config := writeFile(t, dir, "sgd.yaml", "security_groups:\n  - group_id: sg-web\n    ingress:\n"+
		"      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 203.0.113.42/32}\n"+
		"interfaces: [{name: sgdtest0, security_groups: [sg-web]}]\n")
	var asked [2]netip.Addr
	saved := routeInterface
	routeInterface = func(src, dst netip.Addr) (string, error) {
		asked = [2]netip.Addr{src, dst}
		return "sgdtest0", nil
	}
	t.Cleanup(func() { routeInterface = saved })
	for _, c := range []struct {
		session, want string // want: the warning's first line; "" for none
	}{
		{"198.51.100.7 50022 192.0.2.10 22", "LOCK-OUT WARNING: you are connected over SSH from 198.51.100.7 to 192.0.2.10:22 on sgdtest0, and this config does not allow that: " +
			"a new SSH connection from 198.51.100.7 would be dropped (no ingress rule of sg-web allows it)."},
		{"203.0.113.42 50022 192.0.2.10 22", ""},
		{"", ""},
		{"not a session", ""},
	} {
		t.Setenv("SSH_CONNECTION", c.session)
		var stdout, stderr bytes.Buffer
		if code := dispatch([]string{"check", "--config", config}, &stdout, &stderr); code != 0 {
			t.Errorf("SSH_CONNECTION=%q: sgd check = exit %d; want 0 (a warning, not a rejection)\n%s", c.session, code, stderr.String())
		}
		var got string
		for _, l := range strings.Split(stderr.String(), "\n") {
			if strings.HasPrefix(l, "LOCK-OUT") {
				got = l
			}
		}
		if got != c.want {
			t.Errorf("SSH_CONNECTION=%q: sgd check's lock-out line = %q; want %q\nstderr:\n%s", c.session, got, c.want, stderr.String())
		}
	}
	if want := [2]netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("203.0.113.42")}; asked != want {
		t.Errorf("routeInterface(%v); want the route from the server to the client, %v", asked, want)
	}
}

// writeFile writes body to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
