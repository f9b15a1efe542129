package netns

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ifaceConfig protects the listed interfaces (YAML flow list) with a group that allows
// only tcp/8080 from the client.
const ifaceConfig = `
security_groups:
  - group_id: sg-if
    ingress:
      - {ip_protocol: tcp, from_port: 8080, to_port: 8080, cidr_ipv4: 192.0.2.20/32}
interfaces: [%s]
`

// TestReloadAddsAndRemovesInterfaces checks the issue's "interfaces added or removed by the
// config get their netfilter hooks added or removed in the same reload": removing eth0 from
// the config stops filtering it at once (a blocked port now answers "refused" from the
// host's stack), adding it back filters it again (silent drop), with exactly one queue rule.
func TestReloadAddsAndRemovesInterfaces(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	h, c := tp.host.ns, tp.client.ns
	listenEcho(t, h, ":8080", peerFirst)
	cfg := writeConfig(t, fmt.Sprintf(ifaceConfig, "{name: eth0, security_groups: [sg-if]}"))
	d := startSGD(t, h, cfg, nextQueue())
	blocked := netip.AddrPortFrom(tp.host.v4, 9) // nothing listens there
	queued := func() int {
		return strings.Count(nsExec(t, h, "iptables", "-t", "mangle", "-S", "SGD-INPUT"), "-i eth0 -j NFQUEUE")
	}

	checkTCP(t, c, netip.AddrPortFrom(tp.host.v4, 8080), works)
	checkTCP(t, c, blocked, timeout)

	// Atomic rewrites (temp file + rename): the file watcher reloads once per change.
	rewrite := func(ifaces string) {
		tmp := filepath.Join(filepath.Dir(cfg), ".sgd.yaml.new")
		if err := os.WriteFile(tmp, []byte(fmt.Sprintf(ifaceConfig, ifaces)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfg); err != nil {
			t.Fatal(err)
		}
	}
	rewrite("{name: eth7, security_groups: [sg-if]}") // eth0 out, a not-yet-existing eth7 in
	waitReloads(t, d, 1, 0)
	if n := queued(); n != 0 {
		t.Fatalf("eth0 still queued %d times after the reload removed it", n)
	}
	if rs := nsExec(t, h, "iptables", "-t", "mangle", "-S", "SGD-INPUT"); !strings.Contains(rs, "-i eth7 -j NFQUEUE") {
		t.Fatalf("eth7 not hooked after the reload added it:\n%s", rs)
	}
	checkTCP(t, c, blocked, refused) // unfiltered now: the host's own stack answers

	rewrite("{name: eth0, security_groups: [sg-if]}")
	waitReloads(t, d, 2, 0)
	if n := queued(); n != 1 {
		t.Fatalf("eth0 queued %d times after the reload added it back; want 1", n)
	}
	checkTCP(t, c, blocked, timeout)
	checkTCP(t, c, netip.AddrPortFrom(tp.host.v4, 8080), works)
}
