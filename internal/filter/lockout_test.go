package filter

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseSSHConnection(t *testing.T) {
	for _, c := range []struct {
		env  string
		want SSHSession
		ok   bool
	}{
		{"198.51.100.7 50000 192.0.2.10 22", SSHSession{netip.MustParseAddrPort("198.51.100.7:50000"), netip.MustParseAddrPort("192.0.2.10:22")}, true},
		{"2001:db8::7 50000 2001:db8::10 2222", SSHSession{netip.MustParseAddrPort("[2001:db8::7]:50000"), netip.MustParseAddrPort("[2001:db8::10]:2222")}, true},
		{"::ffff:198.51.100.7 50000 ::ffff:192.0.2.10 22", SSHSession{netip.MustParseAddrPort("198.51.100.7:50000"), netip.MustParseAddrPort("192.0.2.10:22")}, true},
		{"", SSHSession{}, false},
		{"198.51.100.7 50000 192.0.2.10", SSHSession{}, false},
		{"not an address 192.0.2.10 22", SSHSession{}, false},
	} {
		got, ok := ParseSSHConnection(c.env)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseSSHConnection(%q) = %+v, %v; want %+v, %v", c.env, got, ok, c.want, c.ok)
		}
	}
}

func TestLockout(t *testing.T) {
	const sshFromOne = `
security_groups:
  - group_id: sg-web
    ingress:
      - {ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 198.51.100.7/32}
interfaces:
  - {name: eth0, security_groups: [sg-web]}
`
	e, _, _ := newTestEngine(t, sshFromOne, 0)
	session := func(client string) SSHSession {
		return SSHSession{Client: netip.MustParseAddrPort(client), Server: netip.MustParseAddrPort("192.0.2.10:22")}
	}
	if w := Lockout(e.Policy(), testHost(), true, session("198.51.100.7:50000"), "eth0", true); w != "" {
		t.Errorf("an allowed session warned: %s", w)
	}
	if w := Lockout(e.Policy(), testHost(), true, session("203.0.113.9:50000"), "eth9", true); w != "" {
		t.Errorf("a session on an interface sgd does not filter warned: %s", w)
	}
	w := Lockout(e.Policy(), testHost(), true, session("203.0.113.9:50000"), "eth0", true)
	for _, want := range []string{"LOCK-OUT WARNING", "from 203.0.113.9 to 192.0.2.10:22 on eth0", "sgd adopts it", "{ip_protocol: tcp, from_port: 22, to_port: 22, cidr_ipv4: 203.0.113.9/32}", "--audit"} {
		if !strings.Contains(w, want) {
			t.Errorf("warning lacks %q:\n%s", want, w)
		}
	}
	if w := Lockout(e.Policy(), testHost(), true, session("203.0.113.9:50000"), "eth0", false); !strings.Contains(w, "hangs as soon as sgd starts") {
		t.Errorf("without adoption the warning should say the session hangs:\n%s", w)
	}
}
