package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// The policy, the same on every filtering path: the three benchmark ports from the client
// only; everything else that arrives is dropped; everything may leave (AWS's default
// egress). Peers are the client's /32, so sgd tracks the flows (a 0.0.0.0/0 peer with
// all egress would make them untracked).
//
// With N rules in front (Options.Rules), N allows that never match the benchmark's
// traffic come before the real ones, the same N on every filtering path:
//
//   - kernel: N lines `-s PEER/32 -p tcp -m tcp --dport PORT -j ACCEPT` as a user writes a
//     chain by hand, after the RELATED,ESTABLISHED accept (where every guide and
//     firewall front end puts it) and before the real accepts: the packets of established
//     flows skip them, the first packet of every TCP connection and every datagram of an
//     unreplied UDP flow (conntrack calls those NEW until a reply is seen) walk all N;
//   - kernel+ipset: the N peers and ports, and the three real ones, as entries of one
//     hash:ip,port set matched by one rule (`-m set --match-set sgd-bench src,dst`);
//   - sgd: the N rules in the server's group, before the real ones.
//
// The peers come from 198.51.100.0/24 and 203.0.113.0/24 (RFC 5737), never the lab's
// 192.0.2.0/24, so no rule can match the client; the ports count up from
// fillerPortBase, so every (peer, port) pair is a rule of its own.
//
// On the bridge the client is a port too, so sgd judges its egress first (SPEC 4.3, two
// points): its group allows all protocols to the server's /32 and nothing in (replies
// come back tracked), a peer that keeps its flows tracked too; the kernel's FORWARD rules
// say the same. The N rules are the server port's.

// MaxRules is the most rules Options.Rules may put in front: sgd holds a config to AWS's
// quota of 1000 rules per interface (rules per group × groups per interface), and the
// policy's own three come on top. SPEC 3.1 measures 990.
const MaxRules = rules.MaxRulesTimesGroups - 3

var errTooManyRules = fmt.Errorf("at most %d: sgd holds a config to AWS's quota of %d rules per interface, and the policy's own 3 come on top (SPEC 3.1 measures 990)",
	MaxRules, rules.MaxRulesTimesGroups)

// fillerPortBase is the first port of the non-matching rules.
const fillerPortBase = 10000

// ipsetName is the set of the kernel+ipset paths, in the namespace of the filter only:
// ipsets belong to a network namespace, and go with it.
const ipsetName = "sgd-bench"

// allow is one ingress rule of the server's: from peer/32, protocol proto, port.
type allow struct {
	peer  netip.Addr
	proto string // tcp or udp
	port  int
	desc  string // for sgd's config; "" for the non-matching ones
}

// policyAllows are the policy's real rules.
var policyAllows = []allow{
	{clientAddr, "tcp", portTCP, "iperf3"},
	{clientAddr, "udp", portUDP, "udp datagrams"},
	{clientAddr, "tcp", portConn, "new connections"},
}

// fillerPeers are the addresses the non-matching rules come from: 198.51.100.1–254 and
// 203.0.113.1–254.
var fillerPeers = func() []netip.Addr {
	var out []netip.Addr
	for _, net := range []string{"198.51.100.0", "203.0.113.0"} {
		a := netip.MustParseAddr(net).Next()
		for range 254 {
			out = append(out, a)
			a = a.Next()
		}
	}
	return out
}()

// allows returns the server's ingress rules with n non-matching rules in front.
func allows(n int) []allow {
	out := make([]allow, 0, n+len(policyAllows))
	for i := range n {
		out = append(out, allow{peer: fillerPeers[i%len(fillerPeers)], proto: "tcp", port: fillerPortBase + i})
	}
	return append(out, policyAllows...)
}

// match is the rule's iptables match.
func (a allow) match() string {
	return fmt.Sprintf("-s %s/32 -p %s -m %s --dport %d", a.peer, a.proto, a.proto, a.port)
}

// setEntry is the rule as an entry of a hash:ip,port set.
func (a allow) setEntry() string { return fmt.Sprintf("%s,%s:%d", a.peer, a.proto, a.port) }

// sgdRule is the rule as an ingress rule of sgd's config (one YAML flow mapping); open, it
// allows 0.0.0.0/0 instead of the peer's /32.
func (a allow) sgdRule(open bool) string {
	desc := ""
	if a.desc != "" {
		desc = ", description: " + a.desc
	}
	cidr := a.peer.String() + "/32"
	if open {
		cidr = "0.0.0.0/0"
	}
	return fmt.Sprintf("{ip_protocol: %s, from_port: %d, to_port: %d, cidr_ipv4: %s%s}", a.proto, a.port, a.port, cidr, desc)
}

// kernelTable is the filter table of the kernel paths, for iptables-restore in the
// namespace of the filter (its own, otherwise empty, table), with accepts (iptables
// matches) as the server's ingress accepts.
//
// On the veth pair it is what a user would otherwise write in the server's INPUT: one
// conntrack rule for replies, the accepts, a DROP. On the bridge it is the policy of both
// ports in the hypervisor's FORWARD chain, as a hypervisor's own iptables firewall would
// write it (libvirt's nwfilter, Neutron's iptables driver): one conntrack rule for
// replies, the client port's egress (only to the server), the server port's ingress, the
// client port's ingress (nothing new).
func kernelTable(forwarded bool, accepts []string) string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	chain, sel := "INPUT", "-i "+serverDev
	if forwarded {
		chain, sel = "FORWARD", "-m physdev --physdev-out "+serverPort+" --physdev-is-bridged"
		b.WriteString("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n")
		fmt.Fprintf(&b, "-A FORWARD -m physdev --physdev-in %s --physdev-is-bridged ! -d %s/32 -j DROP\n", clientPort, serverAddr)
	} else {
		fmt.Fprintf(&b, "-A INPUT %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n", sel)
	}
	for _, a := range accepts {
		fmt.Fprintf(&b, "-A %s %s %s -j ACCEPT\n", chain, sel, a)
	}
	fmt.Fprintf(&b, "-A %s %s -j DROP\n", chain, sel)
	if forwarded {
		fmt.Fprintf(&b, "-A FORWARD -m physdev --physdev-out %s --physdev-is-bridged -j DROP\n", clientPort)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// kernelRules is the kernel path's table: the policy as a linear chain with n
// non-matching rules in front of the real ones.
func kernelRules(forwarded bool, n int) string {
	as := allows(n)
	ms := make([]string, len(as))
	for i, a := range as {
		ms[i] = a.match()
	}
	return kernelTable(forwarded, ms)
}

// kernelIPSetRules is the kernel+ipset path's table: the same chain with every accept in
// the one set (ipsetRestore).
func kernelIPSetRules(forwarded bool) string {
	return kernelTable(forwarded, []string{"-m set --match-set " + ipsetName + " src,dst"})
}

// ipsetRestore is the input of `ipset restore` that creates the kernel+ipset path's set:
// the policy's rules, with n non-matching ones, as hash:ip,port entries (the source
// address, the protocol and destination port: exactly what each iptables rule of the
// linear chain matches).
func ipsetRestore(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "create %s hash:ip,port family inet hashsize 1024 maxelem 65536\n", ipsetName)
	for _, a := range allows(n) {
		fmt.Fprintf(&b, "add %s %s\n", ipsetName, a.setEntry())
	}
	return b.String()
}

// serverGroup is the server's group for sgd, with n non-matching rules in front; with
// untracked, the policy's own rules are open to 0.0.0.0/0 (sgd-untracked), so that with
// all egress allowed SPEC 1.4 leaves their flows untracked.
func serverGroup(n int, untracked bool) string {
	var b strings.Builder
	desc := "the benchmark ports from the client only"
	if untracked {
		desc = "the benchmark ports from anywhere (with all egress allowed, their flows are untracked)"
	}
	fmt.Fprintf(&b, `  - group_id: sg-bench
    group_name: bench-server
    description: %s
    ingress:
`, desc)
	for i, a := range allows(n) {
		b.WriteString("      - " + a.sgdRule(untracked && i >= n) + "\n")
	}
	b.WriteString("    # egress omitted: all traffic out\n")
	return b.String()
}

// sgdQuotas is the daemon: section that lets the server's group hold n+3 rules: AWS's
// highest rules-per-group quota goes with one group per interface (1000 in all), the
// default (60 rules, 5 groups) is kept while it suffices.
func sgdQuotas(n int) string {
	if n+len(policyAllows) <= rules.DefaultRulesPerGroup {
		return ""
	}
	return fmt.Sprintf(`daemon:
  # %d rules in the server's group: AWS's quota of %d rules per interface, in one group.
  rules_per_group_quota: %d
  groups_per_interface_quota: 1
`, n+len(policyAllows), rules.MaxRulesTimesGroups, rules.MaxRulesTimesGroups)
}

// sgdConfig is the policy for sgd with n non-matching rules in front: on the veth pair the
// server's interface, on the bridge both ports. untracked (the veth pair only) opens the
// policy's rules to 0.0.0.0/0, for sgd-untracked.
func sgdConfig(forwarded bool, n int, untracked bool) string {
	if !forwarded {
		what := "the same policy as the kernel path's iptables rules"
		if untracked {
			what = "the kernel path's policy open to 0.0.0.0/0, its flows untracked (SPEC 1.4)"
		}
		return fmt.Sprintf(`# sgd bench: %s, %s in front.
%ssecurity_groups:
%sinterfaces:
  - name: %s
    security_groups: [sg-bench]
`, what, plural(n, "non-matching rule"), sgdQuotas(n), serverGroup(n, untracked), serverDev)
	}
	return fmt.Sprintf(`# sgd bench, forwarded: the same policy as the fwd-kernel path's iptables rules, %[1]s in front.
%[2]ssecurity_groups:
%[3]s  - group_id: sg-bench-client
    group_name: bench-client
    description: the client may send anything to the server; nothing comes in but replies
    egress:
      - {ip_protocol: "-1", cidr_ipv4: %[4]s/32, description: the server}
ports:
  - {name: %[5]s, addresses: [%[4]s], security_groups: [sg-bench]}
  - {name: %[6]s, addresses: [%[7]s], security_groups: [sg-bench-client]}
`, plural(n, "non-matching rule"), sgdQuotas(n), serverGroup(n, false), serverAddr, serverPort, clientPort, clientAddr)
}

// emptyRules resets the filter table of the namespace the filter ran in.
const emptyRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
`

// countRules counts the rules (-A lines) of an iptables-restore or iptables -S text.
func countRules(text string) int {
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "-A ") {
			n++
		}
	}
	return n
}

// setEntries reads "Number of entries: N" from `ipset list -terse`.
func setEntries(out string) (int, error) {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Number of entries:"); ok {
			var n int
			_, err := fmt.Sscan(strings.TrimSpace(v), &n)
			return n, err
		}
	}
	return 0, errors.New("ipset list: no \"Number of entries\" line")
}
