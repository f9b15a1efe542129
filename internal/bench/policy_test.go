package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// The lab's subnet: no rule in front may match anything in it.
var labNet = netip.MustParsePrefix("192.0.2.0/24")

func TestKernelRulesLinearChain(t *testing.T) {
	// With none in front, the chain the README documents.
	want0 := `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i eth0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i eth0 -s 192.0.2.2/32 -p tcp -m tcp --dport 5201 -j ACCEPT
-A INPUT -i eth0 -s 192.0.2.2/32 -p udp -m udp --dport 5202 -j ACCEPT
-A INPUT -i eth0 -s 192.0.2.2/32 -p tcp -m tcp --dport 5203 -j ACCEPT
-A INPUT -i eth0 -j DROP
COMMIT
`
	if got := kernelRules(false, 0); got != want0 {
		t.Errorf("kernelRules(veth, 0) =\n%s\nwant\n%s", got, want0)
	}
	// With 3 in front: after the ESTABLISHED accept (established packets skip them; new
	// connections and unreplied UDP walk them), before the real accepts.
	lines := strings.Split(kernelRules(false, 3), "\n")
	for i, want := range map[int]string{
		4:  "-A INPUT -i eth0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		5:  "-A INPUT -i eth0 -s 198.51.100.1/32 -p tcp -m tcp --dport 10000 -j ACCEPT",
		6:  "-A INPUT -i eth0 -s 198.51.100.2/32 -p tcp -m tcp --dport 10001 -j ACCEPT",
		7:  "-A INPUT -i eth0 -s 198.51.100.3/32 -p tcp -m tcp --dport 10002 -j ACCEPT",
		8:  "-A INPUT -i eth0 -s 192.0.2.2/32 -p tcp -m tcp --dport 5201 -j ACCEPT",
		11: "-A INPUT -i eth0 -j DROP",
	} {
		if lines[i] != want {
			t.Errorf("kernelRules(veth, 3) line %d = %q; want %q", i, lines[i], want)
		}
	}
	for _, n := range []int{0, 100, 990} {
		if got, want := countRules(kernelRules(false, n)), n+5; got != want {
			t.Errorf("countRules(kernelRules(veth, %d)) = %d; want %d", n, got, want)
		}
		if got, want := countRules(kernelRules(true, n)), n+7; got != want {
			t.Errorf("countRules(kernelRules(bridge, %d)) = %d; want %d", n, got, want)
		}
	}
}

func TestKernelForwardedRules(t *testing.T) {
	text := kernelRules(true, 2)
	for _, want := range []string{
		"-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n" +
			"-A FORWARD -m physdev --physdev-in vclient --physdev-is-bridged ! -d 192.0.2.1/32 -j DROP\n" +
			"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -s 198.51.100.1/32 -p tcp -m tcp --dport 10000 -j ACCEPT\n" +
			"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -s 198.51.100.2/32 -p tcp -m tcp --dport 10001 -j ACCEPT\n" +
			"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -s 192.0.2.2/32 -p tcp -m tcp --dport 5201 -j ACCEPT\n",
		"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -s 192.0.2.2/32 -p udp -m udp --dport 5202 -j ACCEPT\n",
		"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -s 192.0.2.2/32 -p tcp -m tcp --dport 5203 -j ACCEPT\n" +
			"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -j DROP\n" +
			"-A FORWARD -m physdev --physdev-out vclient --physdev-is-bridged -j DROP\nCOMMIT\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("kernelRules(bridge, 2) lacks\n%s\nin\n%s", want, text)
		}
	}
	if strings.Contains(text, "-A INPUT") {
		t.Errorf("kernelRules(bridge) filters INPUT; the hypervisor judges FORWARD only:\n%s", text)
	}
}

func TestKernelIPSetRules(t *testing.T) {
	for _, tc := range []struct {
		forwarded bool
		want      string
	}{
		{false, "-A INPUT -i eth0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n" +
			"-A INPUT -i eth0 -m set --match-set sgd-bench src,dst -j ACCEPT\n" +
			"-A INPUT -i eth0 -j DROP\nCOMMIT\n"},
		{true, "-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -m set --match-set sgd-bench src,dst -j ACCEPT\n" +
			"-A FORWARD -m physdev --physdev-out vserver --physdev-is-bridged -j DROP\n"},
	} {
		if got := kernelIPSetRules(tc.forwarded); !strings.Contains(got, tc.want) {
			t.Errorf("kernelIPSetRules(forwarded %v) lacks\n%s\nin\n%s", tc.forwarded, tc.want, got)
		}
	}
	in := ipsetRestore(2)
	want := `create sgd-bench hash:ip,port family inet hashsize 1024 maxelem 65536
add sgd-bench 198.51.100.1,tcp:10000
add sgd-bench 198.51.100.2,tcp:10001
add sgd-bench 192.0.2.2,tcp:5201
add sgd-bench 192.0.2.2,udp:5202
add sgd-bench 192.0.2.2,tcp:5203
`
	if in != want {
		t.Errorf("ipsetRestore(2) =\n%s\nwant\n%s", in, want)
	}
}

// TestFillersNeverMatch: every rule in front comes from outside the lab's subnet, and
// every one is a rule of its own (no two the same peer and port).
func TestFillersNeverMatch(t *testing.T) {
	as := allows(MaxRules)
	seen := map[string]bool{}
	for _, a := range as[:MaxRules] {
		if labNet.Contains(a.peer) || !a.peer.Is4() {
			t.Fatalf("a rule in front comes from %s, in the lab's %s: it could match the client", a.peer, labNet)
		}
		if a.port >= portTCP && a.port <= portClosed {
			t.Fatalf("a rule in front is for port %d, one of the benchmark's", a.port)
		}
		k := a.setEntry()
		if seen[k] {
			t.Fatalf("rule %s in front twice", k)
		}
		seen[k] = true
	}
	if got := as[MaxRules:]; len(got) != 3 || got[0] != policyAllows[0] {
		t.Errorf("allows(%d) ends with %v; want the policy's 3", MaxRules, got)
	}
}

// loadConfig writes text and loads it as `sgd run` does (the controller's own read,
// validation of the daemon: section and the SG model with its quotas, compile).
func loadConfig(t *testing.T, name, text string) (*controller.State, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return controller.Load(context.Background(), rules.Env{}, controller.NewFile(path))
}

func TestSGDConfigsValidate(t *testing.T) {
	for _, forwarded := range []bool{false, true} {
		base := 0
		for _, n := range []int{0, 1, 57, 58, 100, 990, MaxRules} {
			name := fmt.Sprintf("forwarded-%v-%d.yaml", forwarded, n)
			text := sgdConfig(forwarded, n, false)
			st, err := loadConfig(t, name, text)
			if err != nil {
				t.Errorf("%s does not load: %v\n%s", name, err, text)
				continue
			}
			m := st.Model
			g := m.Groups[0]
			if g.ID != "sg-bench" || len(g.Ingress) != n+3 {
				t.Errorf("%s: group %s has %d ingress rules; want sg-bench with %d", name, g.ID, len(g.Ingress), n+3)
			}
			compiled := len(st.Policy.Rules) - 1
			if n == 0 {
				base = compiled
			} else if compiled != base+n {
				t.Errorf("%s compiles to %d rules; want %d (%d with none in front, + %d)", name, compiled, base+n, base, n)
			}
			if quotas := strings.Contains(text, "rules_per_group_quota"); quotas != (n+3 > rules.DefaultRulesPerGroup) {
				t.Errorf("%s: raises the quota %v; want only past AWS's default of %d rules", name, quotas, rules.DefaultRulesPerGroup)
			}
			if forwarded && (len(m.Ports) != 2 || len(m.Interfaces) != 0) || !forwarded && (len(m.Ports) != 0 || len(m.Interfaces) != 1) {
				t.Errorf("%s: %d ports, %d interfaces", name, len(m.Ports), len(m.Interfaces))
			}
		}
		// One more is over AWS's quota of 1000 rules per interface: sgd refuses it, which
		// is why --rules stops at MaxRules.
		if _, err := loadConfig(t, "over.yaml", sgdConfig(forwarded, MaxRules+1, false)); err == nil || !strings.Contains(err.Error(), "quota") {
			t.Errorf("sgdConfig(forwarded %v, %d) loads (err %v); want sgd to refuse it over the quota", forwarded, MaxRules+1, err)
		}
	}
	for _, want := range []string{"name: vserver, addresses: [192.0.2.1], security_groups: [sg-bench]}",
		"name: vclient, addresses: [192.0.2.2], security_groups: [sg-bench-client]}",
		`{ip_protocol: "-1", cidr_ipv4: 192.0.2.1/32`} {
		if text := sgdConfig(true, 0, false); !strings.Contains(text, want) {
			t.Errorf("sgdConfig(bridge, 0) lacks %q:\n%s", want, text)
		}
	}
	if text := sgdConfig(false, 2, false); !strings.Contains(text, "      - {ip_protocol: tcp, from_port: 10001, to_port: 10001, cidr_ipv4: 198.51.100.2/32}\n"+
		"      - {ip_protocol: tcp, from_port: 5201, to_port: 5201, cidr_ipv4: 192.0.2.2/32, description: iperf3}\n") {
		t.Errorf("sgdConfig(veth, 2) does not put the rules in front of the real ones:\n%s", text)
	}
}

// TestUntrackedConfig: sgd-untracked's config is the sgd path's with the policy's own
// rules open to 0.0.0.0/0, so that the benchmark's three flows are allowed and untracked
// (SPEC 1.4), where the sgd path's are tracked; the rules in front stay as they are.
func TestUntrackedConfig(t *testing.T) {
	for _, n := range []int{0, 990} {
		tracked, err := loadConfig(t, fmt.Sprintf("tracked-%d.yaml", n), sgdConfig(false, n, false))
		if err != nil {
			t.Fatal(err)
		}
		untracked, err := loadConfig(t, fmt.Sprintf("untracked-%d.yaml", n), sgdConfig(false, n, true))
		if err != nil {
			t.Fatal(err)
		}
		if a, b := len(tracked.Policy.Rules), len(untracked.Policy.Rules); a != b {
			t.Errorf("N=%d: the untracked config compiles to %d rules, the tracked one to %d; want the same", n, b, a)
		}
		for _, a := range policyAllows {
			proto := map[string]uint8{"tcp": 6, "udp": 17}[a.proto]
			q := rules.Query{Iface: serverDev, Direction: rules.Ingress, Proto: proto, Src: clientAddr, Dst: serverAddr, SrcPort: 40000, Port: uint16(a.port)}
			if ex := tracked.Policy.Explain(q); !ex.Allowed || ex.Untracked {
				t.Errorf("N=%d, sgd's config: %s/%d from the client: allowed %v, untracked %v; want allowed and tracked", n, a.proto, a.port, ex.Allowed, ex.Untracked)
			}
			if ex := untracked.Policy.Explain(q); !ex.Allowed || !ex.Untracked {
				t.Errorf("N=%d, sgd-untracked's config: %s/%d from the client: allowed %v, untracked %v; want allowed and untracked", n, a.proto, a.port, ex.Allowed, ex.Untracked)
			}
		}
		q := rules.Query{Iface: serverDev, Direction: rules.Ingress, Proto: 6, Src: clientAddr, Dst: serverAddr, SrcPort: 40000, Port: 5209}
		if ex := untracked.Policy.Explain(q); ex.Allowed {
			t.Errorf("N=%d, sgd-untracked's config allows tcp/5209, the policy check's denied port", n)
		}
	}
}

func TestPathKinds(t *testing.T) {
	for _, tc := range []struct {
		p                                Path
		forwarded, filters, isSGD, ipset bool
		base                             Path
	}{
		{Raw, false, false, false, false, Raw},
		{Kernel, false, true, false, false, Kernel},
		{KernelIPSet, false, true, false, true, KernelIPSet},
		{SGD, false, true, true, false, SGD},
		{SGDUserspace, false, true, true, false, SGDUserspace},
		{SGDUntracked, false, true, true, false, SGDUntracked},
		{FwdRaw, true, false, false, false, Raw},
		{FwdKernel, true, true, false, false, Kernel},
		{FwdKernelIPSet, true, true, false, true, KernelIPSet},
		{FwdSGD, true, true, true, false, SGD},
		{FwdSGDUserspace, true, true, true, false, SGDUserspace},
	} {
		if f, fl, s, i, b := tc.p.Forwarded(), tc.p.filters(), tc.p.runsSGD(), tc.p.usesIPSet(), tc.p.Base(); f != tc.forwarded || fl != tc.filters || s != tc.isSGD || i != tc.ipset || b != tc.base {
			t.Errorf("%s: Forwarded, filters, runsSGD, usesIPSet, Base = %v, %v, %v, %v, %s; want %v, %v, %v, %v, %s",
				tc.p, f, fl, s, i, b, tc.forwarded, tc.filters, tc.isSGD, tc.ipset, tc.base)
		}
		if got := tc.p.Base().fwd(tc.forwarded); got != tc.p {
			t.Errorf("%s.Base().fwd(%v) = %s", tc.p, tc.forwarded, got)
		}
	}
	if len(AllPaths) != len(DefaultPaths)+len(OptionalPaths)+len(ForwardedPaths) {
		t.Errorf("AllPaths has %d; want the %d direct, %d optional and %d forwarded", len(AllPaths), len(DefaultPaths), len(OptionalPaths), len(ForwardedPaths))
	}
}

func TestParsers(t *testing.T) {
	if got := countRules("-P INPUT ACCEPT\n-A INPUT -j DROP\n-A INPUT -i eth0 -j ACCEPT\n-N X\n"); got != 2 {
		t.Errorf("countRules = %d; want 2", got)
	}
	out := "Name: sgd-bench\nType: hash:ip,port\nRevision: 7\nHeader: family inet hashsize 1024 maxelem 65536\nSize in memory: 8600\nReferences: 1\nNumber of entries: 103\n"
	if n, err := setEntries(out); n != 103 || err != nil {
		t.Errorf("setEntries = %d, %v; want 103", n, err)
	}
	if _, err := setEntries("Name: x\n"); err == nil {
		t.Errorf("setEntries without the line = nil error")
	}
	log := `{"level":"info","msg":"config loaded"}` + "\n" +
		`{"level":"info","msg":"started","version":"dev","rules":105,"fast_path":false,"queue_num":100}` + "\n"
	st, err := parseStarted(log)
	if err != nil || st.Rules == nil || *st.Rules != 105 || st.FastPath == nil || *st.FastPath {
		t.Errorf("parseStarted = %+v, %v; want 105 rules, fast_path false", st, err)
	}
	if _, err := parseStarted(`{"msg":"config loaded"}`); err == nil {
		t.Errorf("parseStarted without a started line = nil error")
	}
}

// TestKernelRulesLoad loads every kernel path's rules into a namespace of its own with
// the real iptables-restore and ipset, and checks that the set stays in that namespace.
func TestKernelRulesLoad(t *testing.T) {
	needTools(t, "ipset", "iptables-restore")
	ns := fmt.Sprintf("sgd-bench-test-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	in := func(input string, argv ...string) string {
		t.Helper()
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
		cmd.Stdin = strings.NewReader(input)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
		return string(out)
	}
	for _, n := range []int{0, 990} {
		in(kernelRules(false, n), "iptables-restore")
		if got := countRules(in("", "iptables", "-S", "INPUT")); got != n+5 {
			t.Errorf("INPUT holds %d rules after kernelRules(veth, %d); want %d", got, n, n+5)
		}
		in(ipsetRestore(n), "ipset", "restore")
		in(kernelIPSetRules(false), "iptables-restore")
		if got, err := setEntries(in("", "ipset", "list", ipsetName, "-terse")); got != n+3 || err != nil {
			t.Errorf("set holds %d entries (%v) after ipsetRestore(%d); want %d", got, err, n, n+3)
		}
		in(emptyRules, "iptables-restore")
		in("", "ipset", "destroy", ipsetName)
	}
	if _, err := os.Stat("/proc/sys/net/bridge"); err == nil {
		in(kernelRules(true, 100), "iptables-restore")
		in(ipsetRestore(100), "ipset", "restore")
		in(kernelIPSetRules(true), "iptables-restore")
	}
	// The set is the namespace's own: the host's namespace has none of that name (the
	// test's namespace still holds one on the bridge's branch).
	if out, err := exec.Command("ipset", "list", "-n").CombinedOutput(); err == nil && strings.Contains(string(out), ipsetName+"\n") {
		t.Errorf("the host's namespace lists an ipset %s:\n%s", ipsetName, out)
	}
}

// needTools skips a test that needs root and tools.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, iptables); run the tests as root to include it")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: %v", tool, err)
		}
	}
}
