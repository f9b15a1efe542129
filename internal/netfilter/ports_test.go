package netfilter

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Ports (SPEC 4.3): sgd's FORWARD chain, and the ports' traffic with the host.

func TestRulesPorts(t *testing.T) {
	s := Spec{Interfaces: []string{"eth0"}, Ports: []string{"vweb0", "vdb0"}, QueueNum: 4, QueueCount: 1}
	v4 := `*mangle
:SGD-INPUT - [0:0]
:SGD-OUTPUT - [0:0]
:SGD-FORWARD - [0:0]
-A SGD-INPUT -i lo -j RETURN
-A SGD-INPUT -i eth0 -j NFQUEUE --queue-num 4
-A SGD-INPUT -m physdev --physdev-in vweb0 -j NFQUEUE --queue-num 4
-A SGD-INPUT -i vweb0 -j NFQUEUE --queue-num 4
-A SGD-INPUT -m physdev --physdev-in vdb0 -j NFQUEUE --queue-num 4
-A SGD-INPUT -i vdb0 -j NFQUEUE --queue-num 4
-A SGD-OUTPUT -o lo -j RETURN
-A SGD-OUTPUT -o eth0 -j NFQUEUE --queue-num 4
-A SGD-OUTPUT -o vweb0 -j NFQUEUE --queue-num 4
-A SGD-OUTPUT -o vdb0 -j NFQUEUE --queue-num 4
-A SGD-FORWARD -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED
-A SGD-FORWARD -m physdev --physdev-in vweb0 --physdev-is-bridged -j NFQUEUE --queue-num 4
-A SGD-FORWARD -m physdev --physdev-out vweb0 --physdev-is-bridged -j NFQUEUE --queue-num 4
-A SGD-FORWARD -i vweb0 -j NFQUEUE --queue-num 4
-A SGD-FORWARD -o vweb0 -j NFQUEUE --queue-num 4
-A SGD-FORWARD -m physdev --physdev-in vdb0 --physdev-is-bridged -j NFQUEUE --queue-num 4
-A SGD-FORWARD -m physdev --physdev-out vdb0 --physdev-is-bridged -j NFQUEUE --queue-num 4
-A SGD-FORWARD -i vdb0 -j NFQUEUE --queue-num 4
-A SGD-FORWARD -o vdb0 -j NFQUEUE --queue-num 4
COMMIT
`
	if got := string(rules(s, ipv4)); got != v4 {
		t.Errorf("rules(%+v, ipv4) =\n%s\nwant\n%s", s, got, v4)
	}
	v6 := string(rules(s, ipv6))
	for _, want := range []string{
		// NDP passes on the forwarding path too: the fabric's, never the groups' (SPEC 1.2).
		"-A SGD-FORWARD -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED\n" +
			"-A SGD-FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN\n",
		"-A SGD-FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type 137 -j RETURN\n" +
			"-A SGD-FORWARD -m physdev --physdev-in vweb0 --physdev-is-bridged -j NFQUEUE --queue-num 4\n",
	} {
		if !strings.Contains(v6, want) {
			t.Errorf("rules(%+v, ipv6) =\n%s\nwant it to contain\n%s", s, v6, want)
		}
	}
	if strings.Contains(v6, "SGD-FORWARD -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED\n-A SGD-FORWARD -m conntrack") {
		t.Errorf("rules(ipv6): the conntrack match twice in SGD-FORWARD")
	}
	// Without ports, nothing of the forwarding path (the rules of a host without ports
	// are what they were before ports existed: TestRules).
	if got := string(rules(Spec{Interfaces: []string{"eth0"}, QueueCount: 1}, ipv4)); strings.Contains(got, "FORWARD") || strings.Contains(got, "physdev") {
		t.Errorf("rules without ports =\n%s\nwant no FORWARD chain", got)
	}
}

func TestValidatePorts(t *testing.T) {
	for _, tt := range []struct {
		spec Spec
		bad  string
	}{
		{Spec{Ports: []string{"vweb0"}, QueueCount: 1}, ""},
		{Spec{Interfaces: []string{"eth0"}, Ports: []string{"eth0"}, QueueCount: 1}, `port "eth0" listed twice, or also as an interface`},
		{Spec{Ports: []string{"v0", "v0"}, QueueCount: 1}, `port "v0" listed twice`},
		{Spec{Ports: []string{"v+"}, QueueCount: 1}, "wildcard"},
		{Spec{Ports: []string{"lo"}, QueueCount: 1}, "loopback"},
	} {
		err := tt.spec.Validate()
		switch {
		case tt.bad == "" && err != nil:
			t.Errorf("Validate(%+v) = %v; want nil", tt.spec, err)
		case tt.bad != "" && (err == nil || !strings.Contains(err.Error(), tt.bad)):
			t.Errorf("Validate(%+v) = %v; want an error with %q", tt.spec, err, tt.bad)
		}
	}
}

// Ports added install the FORWARD chain and its jump once; ports all removed take both
// away and leave others' FORWARD rules alone; Remove takes everything.
func TestApplyPortsOnOff(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.table("ipv4", "mangle")["FORWARD"] = []string{"-s 192.0.2.9/32 -j MARK --set-xmark 0x3/0xffffffff"}
	opts := DefaultOptions()
	opts.Runner = f
	m := New(opts)
	with := Spec{Interfaces: []string{"eth0"}, Ports: []string{"vweb0"}, QueueCount: 1}
	for range 2 {
		if err := m.Apply(ctx, with); err != nil {
			t.Fatalf("Apply(%+v) = %v", with, err)
		}
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		fw := f.state[fam]["mangle"]["FORWARD"]
		if len(fw) == 0 || fw[0] != "-j "+ChainForward {
			t.Errorf("%s mangle FORWARD = %q; want sgd's jump first", fam, fw)
		}
		n := 0
		for _, r := range fw {
			if strings.HasSuffix(r, "-j "+ChainForward) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s mangle FORWARD has %d jumps to %s after two Applies; want 1", fam, n, ChainForward)
		}
	}
	without := with
	without.Ports = nil
	if err := m.Apply(ctx, without); err != nil {
		t.Fatal(err)
	}
	dump := f.dump()
	if strings.Contains(dump, ChainForward) {
		t.Errorf("after Apply without ports, ruleset still has %s:\n%s", ChainForward, dump)
	}
	if !strings.Contains(dump, "ipv4 mangle -A FORWARD -s 192.0.2.9/32 -j MARK --set-xmark 0x3/0xffffffff\n") {
		t.Errorf("after Apply without ports, a foreign FORWARD rule is gone:\n%s", dump)
	}
	if err := m.Apply(ctx, with); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.Installed(ctx); !ok || err != nil {
		t.Errorf("Installed() = %v, %v; want true", ok, err)
	}
	if err := m.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if dump := f.dump(); strings.Contains(strings.ToUpper(dump), "SGD") {
		t.Errorf("after Remove, ruleset =\n%s\nwant nothing of sgd's", dump)
	}
}

// The real iptables takes the ports' rules and prints them as sgd writes them (so a
// restart compares and replaces them), and removal leaves others' FORWARD rules alone.
func TestNetnsPorts(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNetns(t)
	nsSh(t, ns, "iptables", "-t", "mangle", "-A", "FORWARD", "-s", "192.0.2.99", "-j", "MARK", "--set-mark", "7")
	nsSh(t, ns, "ip6tables", "-t", "mangle", "-A", "FORWARD", "-s", "2001:db8::99", "-j", "MARK", "--set-mark", "7")
	before := saved(t, ns)
	opts := DefaultOptions()
	opts.Netns = ns
	m := New(opts)
	s := Spec{Interfaces: []string{"sgd-a"}, Ports: []string{"vweb0", "vdb0"}, QueueNum: 3, QueueCount: 1}
	for _, mm := range []*Manager{m, New(opts)} { // again after a "crash": one copy
		if err := mm.Apply(ctx, s); err != nil {
			t.Fatalf("Apply(%+v) = %v", s, err)
		}
	}
	own, rest := owned(saved(t, ns))
	var forward, foreign []string
	for _, l := range own {
		if strings.Contains(l, "FORWARD") {
			forward = append(forward, l)
		}
	}
	foreign = rest
	var want []string
	for _, l := range wantOwned(m, s) {
		if strings.Contains(l, "FORWARD") {
			want = append(want, l)
		}
	}
	if !sameLines(forward, want) {
		t.Errorf("sgd's FORWARD rules =\n%s\nwant\n%s", strings.Join(forward, "\n"), strings.Join(want, "\n"))
	}
	if strings.Join(foreign, "\n") != strings.Join(before, "\n") {
		t.Errorf("foreign rules changed:\n%s\nwant\n%s", strings.Join(foreign, "\n"), strings.Join(before, "\n"))
	}
	s.Ports = nil
	if err := m.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if now := strings.Join(saved(t, ns), "\n"); strings.Contains(now, "FORWARD -j SGD") || strings.Contains(now, ChainForward) {
		t.Errorf("after Apply without ports:\n%s\nwant no FORWARD hook", now)
	}
	if err := m.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if now := saved(t, ns); strings.Join(now, "\n") != strings.Join(before, "\n") {
		t.Errorf("after Remove:\n%s\nwant\n%s", strings.Join(now, "\n"), strings.Join(before, "\n"))
	}
}

func TestBridgeEnableRestore(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	write("bridge-nf-call-iptables", "0\n")
	write("bridge-nf-call-ip6tables", "1\n")
	b := &Bridge{Dir: dir}
	changed, err := b.Enable()
	if err != nil || len(changed) != 1 || changed[0] != "bridge-nf-call-iptables=0→1" {
		t.Fatalf("Enable() = %q, %v; want [bridge-nf-call-iptables=0→1]", changed, err)
	}
	if again, err := b.Enable(); err != nil || len(again) != 0 {
		t.Errorf("Enable() again = %q, %v; want nothing changed", again, err)
	}
	if read("bridge-nf-call-iptables") != "1" || read("bridge-nf-call-ip6tables") != "1" {
		t.Errorf("after Enable: iptables %s, ip6tables %s; want 1 and 1", read("bridge-nf-call-iptables"), read("bridge-nf-call-ip6tables"))
	}
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	if read("bridge-nf-call-iptables") != "0" || read("bridge-nf-call-ip6tables") != "1" {
		t.Errorf("after Restore: iptables %s, ip6tables %s; want 0 and 1 (as found)", read("bridge-nf-call-iptables"), read("bridge-nf-call-ip6tables"))
	}
	if _, err := (&Bridge{Dir: filepath.Join(dir, "absent")}).Enable(); !errors.Is(err, ErrNoBridgeNetfilter) {
		t.Errorf("Enable() without br_netfilter = %v; want ErrNoBridgeNetfilter", err)
	}
}
