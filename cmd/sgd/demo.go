package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/lab"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// demoConfig is the classic web-server group (README "A config") on the lab's addresses,
// enforced in hypervisor mode (SPEC 4.3): HTTP and HTTPS from anywhere, SSH from the admin
// client's /32 and from the management group, ping from a prefix list; egress omitted
// (AWS's default: everything out). The instance and the member are ports of the
// hypervisor's bridge; the member's address is in sg-mgmt because its port carries the
// group, with no members: entry. sg-mgmt keeps the default egress: port to port, AWS
// judges the sender's egress too.
const demoConfig = `# sgd demo: the classic web-server security group, enforced by the hypervisor at the instance's port.
security_groups:
  - group_id: sg-web
    group_name: web-server-sg
    description: Security group for web servers
    ingress:
      - {ip_protocol: tcp, from_port: 80,  to_port: 80,  cidr_ipv4: 0.0.0.0/0, description: HTTP}
      - {ip_protocol: tcp, from_port: 443, to_port: 443, cidr_ipv4: 0.0.0.0/0, description: HTTPS}
      - {ip_protocol: tcp, from_port: 22,  to_port: 22,  cidr_ipv4: 192.0.2.20/32, description: SSH from the admin client}
      - {ip_protocol: tcp, from_port: 22,  to_port: 22,  referenced_group_id: sg-mgmt, description: SSH from management}
      - {ip_protocol: icmp, from_port: 8,  to_port: -1,  prefix_list_id: pl-corp, description: ping from corp}
    # egress omitted: AWS default, all traffic to 0.0.0.0/0 and ::/0
  - group_id: sg-mgmt
    group_name: management-sg
    # egress omitted: port to port, the member's egress is judged too (then the instance's ingress)
prefix_lists:
  - prefix_list_id: pl-corp
    entries: [192.0.2.16/28]
ports:                            # the instances' devices on the hypervisor's bridge
  - {name: vinstance, instance_id: i-instance, addresses: [192.0.2.10, "2001:db8::10"], security_groups: [sg-web]}
  - {name: vmember, instance_id: i-member, addresses: [192.0.2.40], security_groups: [sg-mgmt]}
# vclient and vstranger are bridge ports sgd does not list: hosts outside, judged by the instance's rules alone
`

// The lab's hosts: addresses from the documentation ranges (RFC 5737, RFC 3849).
var (
	demoInstance4 = netip.MustParseAddr("192.0.2.10")
	demoInstance6 = netip.MustParseAddr("2001:db8::10")
	demoClient4   = netip.MustParseAddr("192.0.2.20")
	demoMember4   = netip.MustParseAddr("192.0.2.40")
	demoStranger4 = netip.MustParseAddr("192.0.2.99")
	demoStranger6 = netip.MustParseAddr("2001:db8::99")
)

const (
	demoPrefix    = "sgd-demo"  // namespace names: sgd-demo-PID-role
	demoServeVerb = "__serve"   // internal: `sgd demo __serve KIND=ADDR...` runs the lab's servers
	demoIface     = "eth0"      // every host's interface, inside its namespace
	demoPort      = "vinstance" // the instance's port on the hypervisor's bridge
	demoPeerPort  = "vmember"   // the member's port
)

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == demoServeVerb {
		return demoServe(args[1:], stdout, stderr)
	}
	fs := newFlags("demo", "[--fleet] [--timeout D] [--pcap DIR] [--keep]",
		`Show, live, what a Security Group does to traffic, from outside the instance. Builds five network
namespaces (192.0.2.0/24, 2001:db8::/64): a "hypervisor" with a bridge, where sgd (this
binary, as `+"`sgd run`"+`) judges the bridge ports listed under ports:, and on the bridge an
"instance" with the classic web-server group (it runs nothing of sgd), a "member" of the
management group (a port too), an admin "client" and a "stranger" (ports sgd does not
list). Then it tries connections and pings and prints, for each, what happened
(connected, refused at once, timed out), the rule that explains it, as `+"`sgd explain`"+`
would, and what packet captures inside the namespaces saw: for a blocked case, that
nothing reached the instance; for the TCP cases that did not connect, the client's SYNs
against the instance's single RST. With --pcap, each case's captures go to a pcapng file
for Wireshark. Everything is removed at the end, also on Ctrl-C. Needs root, iproute2,
iptables and br_netfilter; nothing is changed outside the namespaces. Exit 0 when every
case behaved as an AWS Security Group would, 1 otherwise.

`+demoFleetHelp, stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "how long a blocked connection or ping is given before it counts as timed out")
	keep := fs.Bool("keep", false, "leave the namespaces and sgd running for exploring, and print how to remove them")
	pcapDir := fs.String("pcap", "", "write one pcapng file per case into `DIR` (created if needed): the sender's and the receiver's eth0")
	fleet := fs.Bool("fleet", false, "the fleet-mode scenario: three hosts and an etcd, a group reference following its members across hosts (needs etcd)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "sgd demo: --timeout must be positive")
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "sgd demo: cannot find my own binary to run as the daemon:", err)
		return 1
	}
	if *fleet && *pcapDir != "" {
		fmt.Fprintln(stderr, "sgd demo: --pcap is for the single-host demo; --fleet captures nothing")
		return 2
	}
	if *fleet {
		return runFleetDemo(demoOptions{sgd: exe, timeout: *timeout, keep: *keep}, lab.FindEtcd, stdout, stderr)
	}
	if *pcapDir != "" {
		if err := os.MkdirAll(*pcapDir, 0o755); err != nil {
			fmt.Fprintln(stderr, "sgd demo: --pcap:", err)
			return 2
		}
	}
	return runDemo(demoOptions{sgd: exe, timeout: *timeout, keep: *keep, pcapDir: *pcapDir}, stdout, stderr)
}

type demoOptions struct {
	sgd     string // the sgd binary run as the daemon and the servers
	timeout time.Duration
	keep    bool
	pcapDir string // one pcapng per case when set
}

// outcome is what a connection attempt or ping came to.
type outcome int

const (
	connected outcome = iota // TCP handshake completed (or an echo reply came back)
	refused                  // the host's stack answered with RST: allowed, nothing listening
	timedOut                 // nothing came back: the packet was dropped silently
	failed                   // anything else (unreachable, local error)
)

func (o outcome) String() string {
	return [...]string{"connected", "refused", "timed out", "failed"}[o]
}

// demoCase is one attempt of the walk-through.
type demoCase struct {
	title     string // "stranger → instance tcp/80 (HTTP)"
	fromRole  string // "stranger"
	fromNS    string
	toRole    string // "instance"
	toNS      string
	from      netip.Addr
	to        netip.AddrPort // port 0 with ping
	ping      bool
	proto     string // "http" or "ssh": what to say once connected
	expect    outcome
	lesson    string       // one line on why, printed after the result
	query     rules.Query  // what Explain judges: the first packet, at the instance's port
	senderQ   *rules.Query // port to port: the first packet at the sender's port, judged first
	replyQ    bool         // also explain the reply direction (the stateful case)
	outcome   outcome
	took      time.Duration
	detail    string
	localPort uint16 // the connecting socket's port, once connected
	wire      wire   // what the captures and the receiver's counters saw
}

func runDemo(o demoOptions, stdout, stderr io.Writer) (code int) {
	d := openDemo("sgd demo", []string{"ip", "iptables", "ip6tables", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save"}, o.keep, stderr)
	if d == nil {
		return 1
	}
	defer d.finish(&code)
	l, ctx := d.l, d.ctx

	w := func(format string, a ...any) { fmt.Fprintf(stdout, format, a...) }
	w("sgd demo — a web server behind a Security Group enforced outside it, live, in network namespaces\n\n")

	inst := &lab.Host{Role: "instance", Dev: demoIface, Port: demoPort, Addrs: []netip.Prefix{prefix(demoInstance4, 24)}}
	client := &lab.Host{Role: "client", Dev: demoIface, Port: "vclient", Addrs: []netip.Prefix{prefix(demoClient4, 24)}}
	member := &lab.Host{Role: "member", Dev: demoIface, Port: demoPeerPort, Addrs: []netip.Prefix{prefix(demoMember4, 24)}}
	stranger := &lab.Host{Role: "stranger", Dev: demoIface, Port: "vstranger", Addrs: []netip.Prefix{prefix(demoStranger4, 24)}}
	setupCtx, cancelSetup := context.WithTimeout(ctx, 60*time.Second)
	defer cancelSetup()
	if err := l.Star(setupCtx, "hypervisor", inst, client, member, stranger); err != nil {
		return demoFail(ctx, stderr, "build the namespaces", err)
	}
	hv := l.Name("hypervisor")
	// IPv6 is optional: a host booted with IPv6 disabled still gets the IPv4 cases.
	ipv6 := true
	for _, h := range []struct {
		host *lab.Host
		addr netip.Addr
	}{{inst, demoInstance6}, {stranger, demoStranger6}} {
		if err := l.AddAddr(setupCtx, h.host.NS, h.host.Dev, prefix(h.addr, 64)); err != nil {
			if ctx.Err() != nil {
				return demoFail(ctx, stderr, "build the namespaces", err)
			}
			fmt.Fprintf(stderr, "sgd demo: no IPv6 here (%v); skipping the IPv6 case\n", err)
			ipv6 = false
			break
		}
	}
	instAddrs, strangerAddrs := demoInstance4.String(), demoStranger4.String()
	if ipv6 {
		instAddrs += ", " + demoInstance6.String()
		strangerAddrs += ", " + demoStranger6.String()
	}
	w("  hypervisor %-26s a bridge, br0; sgd runs here and judges the ports it lists\n", "")
	w("  instance   %-26s port %s (sg-web); listens on tcp/80 and tcp/22, nothing on tcp/443; runs nothing of sgd\n", instAddrs, demoPort)
	w("  member     %-26s port %s (sg-mgmt, the management group): a member by its port, no members: entry\n", demoMember4, demoPeerPort)
	w("  client     %-26s port vclient, not listed: the admin's workstation, SSH allowed from its /32, in pl-corp\n", demoClient4)
	w("  stranger   %-26s port vstranger, not listed: anyone else on the internet\n", strangerAddrs)
	w("  (namespaces %s; every host's eth0 is a veth whose other end is a port of br0)\n\n", l.Name("*"))

	cfgPath := filepath.Join(l.Dir(), "sgd-demo.yaml")
	if err := os.WriteFile(cfgPath, []byte(demoConfig), 0o600); err != nil {
		return demoFail(ctx, stderr, "write the config", err)
	}
	st, err := controller.Load(ctx, rules.Env{}, controller.NewFile(cfgPath))
	if err != nil {
		return demoFail(ctx, stderr, "load the built-in config", err)
	}
	pol := st.Policy
	w("The config sgd enforces on the hypervisor (%s):\n", cfgPath)
	for _, line := range strings.Split(strings.TrimRight(demoConfig, "\n"), "\n") {
		w("  │ %s\n", line)
	}
	w("\n")

	// The servers: the instance's HTTP and "SSH" (a banner), and a service on the client
	// for the outbound case. Real processes, so that --keep leaves them running.
	servers, err := l.Start(inst.NS, "servers on the instance", o.sgd, "demo", demoServeVerb, "http=:80", "ssh=:22")
	if err == nil {
		err = servers.WaitFor(setupCtx, "ready")
	}
	if err != nil {
		return demoFail(ctx, stderr, "start the instance's servers", err)
	}
	clientSrv, err := l.Start(client.NS, "server on the client", o.sgd, "demo", demoServeVerb, "http=:8080")
	if err == nil {
		err = clientSrv.WaitFor(setupCtx, "ready")
	}
	if err != nil {
		return demoFail(ctx, stderr, "start the client's server", err)
	}

	statusSock := filepath.Join(l.Dir(), "sgd.sock")
	sgd, err := l.Start(hv, "sgd", o.sgd, "run", "--config", cfgPath, "--metrics-listen", "127.0.0.1:9640",
		"--status-socket", statusSock, "--log-format", "json", "--log-level", "info")
	if err == nil {
		err = sgd.WaitFor(setupCtx, `"msg":"started"`)
	}
	if err != nil {
		return demoFail(ctx, stderr, "start sgd on the hypervisor", err)
	}
	w("sgd runs on the hypervisor (pid %d): its SGD-FORWARD chain queues what passes the listed ports; what no rule allows is dropped silently.\n", sgd.PID())
	w("%s\n\n", instanceRules(setupCtx, l, inst.NS))

	cases := demoCases(inst, client, member, stranger, o.timeout, ipv6)
	good := 0
	for i := range cases {
		c := &cases[i]
		if ctx.Err() != nil {
			break
		}
		w("%2d  %s\n", i+1, c.title)
		observeCase(ctx, c, o.timeout)
		if ctx.Err() != nil {
			w("    (interrupted)\n")
			break
		}
		w("    %s\n", c.detail)
		for _, line := range explainLines(pol, c) {
			w("    %s\n", line)
		}
		blocked := c.expect == timedOut
		if c.toRole == inst.Role && (blocked || c.expect == refused) {
			w("    %s\n", c.insideLine())
		}
		if !c.ping && c.outcome != connected {
			for _, line := range c.timeline() {
				w("    %s\n", line)
			}
		}
		if o.pcapDir != "" {
			path := pcapPath(o.pcapDir, i+1, c.title)
			if err := c.writePcap(path); err != nil {
				w("    pcap: %v\n", err)
			} else {
				w("    pcap: %s\n", path)
			}
		}
		seen, _ := c.flowCount(c.wire.recv)
		switch {
		case c.outcome != c.expect:
			w("    ✗ UNEXPECTED: a Security Group would give %q here — %s\n\n", c.expect, c.lesson)
		case blocked && seen > 0:
			w("    ✗ UNEXPECTED: %s of a blocked flow reached the %s: a Security Group drops them before the instance\n\n", plural(seen, "packet"), c.toRole)
		default:
			good++
			w("    ✓ %s\n\n", c.lesson)
		}
	}
	if ctx.Err() != nil {
		w("\nInterrupted: removing the namespaces and stopping sgd.\n")
		return 130
	}

	w("Summary: %d of %d cases behaved as an AWS Security Group would.\n", good, len(cases))
	counts := map[outcome]int{}
	for _, c := range cases {
		counts[c.outcome]++
	}
	w("  connected/answered %d · refused %d · timed out %d", counts[connected], counts[refused], counts[timedOut])
	if counts[failed] > 0 {
		w(" · failed %d", counts[failed])
	}
	w("\n")
	if line := demoCounters(ctx, hv); line != "" {
		w("  %s\n", line)
	}
	if good != len(cases) {
		code = 1
		w("\nsgd's log ends:\n%s\n", indentText(sgd.Tail(20), "  "))
	}
	if o.keep {
		w("\nThe lab is still up (--keep). Explore it, for example:\n")
		w("  ip netns exec %s bash                   # a shell on the stranger; the instance is 192.0.2.10\n", stranger.NS)
		w("  %s status --socket %s      # what sgd enforces, its ports\n", o.sgd, statusSock)
		w("  ip netns exec %s iptables -t mangle -S  # sgd's chains, on the hypervisor\n", hv)
		w("  config: %s (edit it: sgd reloads on save); sgd's log: %s\n", cfgPath, sgd.LogPath)
		w("Remove it with:\n")
		for _, c := range l.Keep() {
			w("  %s\n", c)
		}
		return code
	}
	w("\nCleaning up: stopping sgd (it removes its rules and restores br_netfilter's switches), deleting %d namespaces.\n", len(l.Namespaces()))
	return code
}

func demoCases(inst, client, member, stranger *lab.Host, timeout time.Duration, ipv6 bool) []demoCase {
	tcp := func(from *lab.Host, fromAddr netip.Addr, to netip.Addr, port uint16) demoCase {
		return demoCase{fromRole: from.Role, fromNS: from.NS, toRole: inst.Role, toNS: inst.NS, from: fromAddr, to: netip.AddrPortFrom(to, port),
			query: rules.Query{Iface: demoPort, Direction: rules.Ingress, Proto: ipproto.TCP, Src: fromAddr, Dst: to, Port: port}}
	}
	secs := fmtDuration(timeout)
	var cs []demoCase

	c := tcp(stranger, demoStranger4, demoInstance4, 80)
	c.title, c.proto, c.expect = "stranger → instance tcp/80 (HTTP)", "http", connected
	c.lesson = "HTTP is open to 0.0.0.0/0: anyone connects"
	cs = append(cs, c)

	c = tcp(stranger, demoStranger4, demoInstance4, 443)
	c.title, c.expect = "stranger → instance tcp/443 (HTTPS; nothing listens there)", refused
	c.lesson = "the rule let the SYN in; the instance's own TCP stack answered RST at once: \"connection refused\" means the port is open in the group"
	cs = append(cs, c)

	c = tcp(stranger, demoStranger4, demoInstance4, 22)
	c.title, c.proto, c.expect = "stranger → instance tcp/22 (SSH)", "ssh", timedOut
	c.lesson = "no rule allows it: the hypervisor drops the SYN silently, before the instance — no RST, no ICMP — so the client retries and hangs until it gives up (" + secs + " here); a timeout means \"blocked by a Security Group\""
	cs = append(cs, c)

	c = tcp(client, demoClient4, demoInstance4, 22)
	c.title, c.proto, c.expect = "client → instance tcp/22 (SSH)", "ssh", connected
	c.lesson = "the admin's /32 is allowed"
	cs = append(cs, c)

	c = tcp(member, demoMember4, demoInstance4, 22)
	c.title, c.proto, c.expect = "member → instance tcp/22 (SSH, via the group reference)", "ssh", connected
	c.senderQ = &rules.Query{Iface: demoPeerPort, Direction: rules.Egress, Proto: ipproto.TCP, Src: demoMember4, Dst: demoInstance4, Port: 22}
	c.lesson = "the rule names sg-mgmt, not an address: the member's port carries sg-mgmt, so its address matches with no members: entry (only its addresses — sg-mgmt's own rules are not imported); port to port, its egress was judged first"
	cs = append(cs, c)

	ping := func(from *lab.Host, fromAddr netip.Addr) demoCase {
		return demoCase{fromRole: from.Role, fromNS: from.NS, toRole: inst.Role, toNS: inst.NS, from: fromAddr, to: netip.AddrPortFrom(demoInstance4, 0), ping: true,
			query: rules.Query{Iface: demoPort, Direction: rules.Ingress, Proto: ipproto.ICMP, Src: fromAddr, Dst: demoInstance4, ICMPType: 8}}
	}
	c = ping(client, demoClient4)
	c.title, c.expect = "client → instance ping (ICMP echo)", connected
	c.lesson = "the client is in pl-corp (192.0.2.16/28), and ICMP type 8, code -1 (any) is echo request"
	cs = append(cs, c)

	c = ping(stranger, demoStranger4)
	c.title, c.expect = "stranger → instance ping", timedOut
	c.lesson = "the stranger is not in pl-corp: the echo request is dropped silently, no reply"
	cs = append(cs, c)

	if ipv6 {
		c = tcp(stranger, demoStranger6, demoInstance6, 80)
		c.title, c.proto, c.expect = "stranger → instance tcp/80 over IPv6 ([2001:db8::10]:80)", "http", timedOut
		c.lesson = "0.0.0.0/0 is IPv4 only, as in AWS: IPv6 clients need a cidr_ipv6 ::/0 rule of their own"
		cs = append(cs, c)
	}

	c = demoCase{fromRole: inst.Role, fromNS: inst.NS, toRole: client.Role, toNS: client.NS, from: demoInstance4, to: netip.AddrPortFrom(demoClient4, 8080),
		proto: "http", expect: connected, replyQ: true,
		query: rules.Query{Iface: demoPort, Direction: rules.Egress, Proto: ipproto.TCP, Src: demoInstance4, Dst: demoClient4, Port: 8080}}
	c.title = "instance → client tcp/8080 (the instance connects out)"
	c.lesson = "stateful: the egress rule allowed the SYN, and sgd tracks the flow, so the replies come back although no ingress rule allows them"
	cs = append(cs, c)
	return cs
}

// observeCase makes the attempt of c with a capture running on the sender's eth0 and the
// receiver's, and the receiver's own counter read before and after (c.wire).
func observeCase(ctx context.Context, c *demoCase, timeout time.Duration) {
	group, field := "Tcp", "InSegs"
	if c.ping {
		group, field = "Icmp", "InMsgs"
	}
	c.wire.counter = strings.ToUpper(group) + " " + field
	before, errBefore := snmpCounter(c.toNS, group, field)
	sent, errS := lab.StartCapture(c.fromNS, demoIface)
	recv, errR := lab.StartCapture(c.toNS, demoIface)
	tryCase(ctx, c, timeout)
	time.Sleep(50 * time.Millisecond) // the closing FIN or a late answer, on its way
	var errs []error
	for _, cp := range []struct {
		cap *lab.Capture
		err error
		dst *[]lab.Frame
	}{{sent, errS, &c.wire.sent}, {recv, errR, &c.wire.recv}} {
		if cp.err == nil {
			*cp.dst, cp.err = cp.cap.Stop()
		}
		errs = append(errs, cp.err)
	}
	c.wire.capErr = errors.Join(errs...)
	after, errAfter := snmpCounter(c.toNS, group, field)
	c.wire.counterDelta, c.wire.counterErr = after-before, errors.Join(errBefore, errAfter)
}

// instanceRules says what firewall the instance itself has: none (it runs nothing of
// sgd), from iptables-save and ip6tables-save inside it.
func instanceRules(ctx context.Context, l *lab.Lab, ns string) string {
	n := 0
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := l.Run(ctx, ns, tool)
		if err != nil {
			return fmt.Sprintf("(could not read the instance's own rules: %v)", err)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "-A ") {
				n++
			}
		}
	}
	return fmt.Sprintf("The instance itself has %s (iptables-save and ip6tables-save inside it): what it is protected by is outside it.", plural(n, "firewall rule"))
}

// tryCase makes the attempt of c and fills in its outcome, duration and a one-line detail.
func tryCase(ctx context.Context, c *demoCase, timeout time.Duration) {
	if c.ping {
		c.outcome, c.took, c.detail = demoPing(ctx, c.fromNS, c.from, c.to.Addr(), timeout)
		return
	}
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var conn net.Conn
	err := lab.Do(c.fromNS, func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: c.from.AsSlice()}}
		var err error
		conn, err = d.DialContext(dctx, "tcp", c.to.String())
		return err
	})
	c.took = time.Since(start)
	switch {
	case err == nil:
		defer conn.Close()
		c.outcome = connected
		said := demoExchange(conn, c.proto)
		c.detail = fmt.Sprintf("connected in %s", fmtDuration(c.took))
		if said != "" {
			c.detail += fmt.Sprintf(" — the server said %q", said)
		}
		if la, ok := conn.LocalAddr().(*net.TCPAddr); ok {
			c.localPort = uint16(la.Port)
		}
	case errors.Is(err, syscall.ECONNREFUSED):
		c.outcome = refused
		c.detail = fmt.Sprintf("connection refused in %s", fmtDuration(c.took))
	case ctx.Err() == nil && (dctx.Err() != nil || isTimeout(err)):
		// The dialer's own deadline (from dctx) can fire just before dctx reports it.
		c.outcome = timedOut
		c.detail = fmt.Sprintf("timed out after %s — no answer at all", fmtDuration(timeout))
	default:
		c.outcome = failed
		c.detail = fmt.Sprintf("failed after %s: %v", fmtDuration(c.took), err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// demoExchange says hello on a connected socket and returns the first line the server sent.
func demoExchange(conn net.Conn, proto string) string {
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if proto == "http" {
		if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\nHost: demo\r\n\r\n"); err != nil {
			return ""
		}
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimRight(line, "\r\n")
}

// demoPing sends one ICMP echo request from inside ns and waits for the reply. It uses a
// raw socket (root) so that it needs no ping binary.
func demoPing(ctx context.Context, ns string, from, to netip.Addr, timeout time.Duration) (outcome, time.Duration, string) {
	var pc net.PacketConn
	err := lab.Do(ns, func() error {
		var err error
		pc, err = net.ListenPacket("ip4:icmp", from.String())
		return err
	})
	if err != nil {
		return failed, 0, fmt.Sprintf("cannot open an ICMP socket: %v", err)
	}
	defer pc.Close()
	id := uint16(os.Getpid())
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 's', 'g', 'd', ' ', 'd', 'e', 'm', 'o'}
	sum := icmpChecksum(msg)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	start := time.Now()
	if _, err := pc.WriteTo(msg, &net.IPAddr{IP: to.AsSlice()}); err != nil {
		return failed, 0, fmt.Sprintf("send failed: %v", err)
	}
	deadline := start.Add(timeout)
	stopWatch := context.AfterFunc(ctx, func() { _ = pc.SetReadDeadline(time.Now()) })
	defer stopWatch()
	_ = pc.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return failed, time.Since(start), "interrupted"
			}
			return timedOut, timeout, fmt.Sprintf("no reply after %s", fmtDuration(timeout))
		}
		ip, _ := addr.(*net.IPAddr)
		if n >= 8 && buf[0] == 0 && buf[4] == byte(id>>8) && buf[5] == byte(id) && ip != nil && ip.IP.Equal(to.AsSlice()) {
			took := time.Since(start)
			return connected, took, fmt.Sprintf("echo reply in %s", fmtDuration(took))
		}
	}
}

// icmpChecksum is the Internet checksum (RFC 1071) of b.
func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// explainLines renders what `sgd explain` says about the case's first packet (and, for
// the stateful case, about its reply).
func explainLines(pol *rules.Policy, c *demoCase) []string {
	var lines []string
	if c.senderQ != nil {
		lines = append(lines, explainOne(pol, *c.senderQ))
	}
	lines = append(lines, explainOne(pol, c.query))
	if c.replyQ && c.outcome == connected {
		// The SYN-ACK as if it started a flow: ingress, to the instance's ephemeral port.
		reply := rules.Query{Iface: demoPort, Direction: rules.Ingress, Proto: ipproto.TCP, Src: c.to.Addr(), Dst: c.from, Port: c.localPort}
		ex := pol.Explain(reply)
		verdict := "DENY"
		if ex.Allowed {
			verdict = "ALLOW"
		}
		lines = append(lines, fmt.Sprintf("the reply %s:%d → %s:%d, judged by the rules alone: %s — it passed as part of the tracked flow",
			c.to.Addr(), c.to.Port(), c.from, c.localPort, verdict))
	}
	return lines
}

// nearest picks the near misses worth showing: those that failed on the peer only (the
// lesson of the case) when there are any, else those that failed on the port; at most 3.
func nearest(near []string) []string {
	var peer, port []string
	for _, n := range near {
		if strings.Contains(n, " is not in ") || strings.Contains(n, "no known addresses") {
			peer = append(peer, n)
		} else {
			port = append(port, n)
		}
	}
	if len(peer) == 0 {
		peer = port
	}
	if len(peer) > 3 {
		peer = peer[:3]
	}
	return peer
}

// explainOne is `sgd explain --interface PORT` of q, as one line (and its near misses).
func explainOne(pol *rules.Policy, q rules.Query) string {
	// The hypervisor is a namespace of the demo's own with no addresses of its own:
	// nothing of this host's applies.
	ex := filter.Explain(pol, filter.Host{}, false, q)
	label := "sgd explain at " + q.Iface + ": "
	if !ex.Allowed {
		s := label + "DENY — " + ex.Why
		if near := nearest(ex.Near); len(near) > 0 {
			s += "\n      nearest: " + strings.Join(near, "\n               ")
		}
		return s
	}
	if ex.Exempt != "" {
		return label + "ALLOW — " + ex.Exempt
	}
	r := ex.Rule
	word := "from"
	if q.Direction == rules.Egress {
		word = "to"
	}
	s := fmt.Sprintf("%sALLOW — %s %s[%d] %s %s %s", label, r.GroupID, q.Direction, r.Rule.Index, r.Rule.PortText(), word, r.Rule.Peer)
	if r.Rule.Description != "" {
		s += " " + strconv.Quote(r.Rule.Description)
	}
	if r.Rule.Default && r.Rule.Description == "" {
		s += " (AWS's default egress rule)"
	}
	if ex.Untracked {
		s += "; untracked flow (0.0.0.0/0 in, everything out)"
	}
	return s
}

// demoCounters reads sgd's packet counters from its metrics endpoint inside ns.
func demoCounters(ctx context.Context, ns string) string {
	cl := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.DialContext(ctx, ns, network, addr)
		}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:9640/metrics", nil)
	if err != nil {
		return ""
	}
	resp, err := cl.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	accepted, dropped := 0.0, map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "sgd_packets_total{") {
			continue
		}
		labels, val, ok := strings.Cut(strings.TrimPrefix(line, "sgd_packets_total{"), "} ")
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if !ok || err != nil {
			continue
		}
		lv := promLabels(labels)
		if lv["verdict"] == "drop" {
			dropped[lv["reason"]] += v
		} else {
			accepted += v
		}
	}
	var total float64
	var parts []string
	for r, v := range dropped {
		total += v
		parts = append(parts, fmt.Sprintf("%s %.0f", r, v))
	}
	sort.Strings(parts)
	s := fmt.Sprintf("sgd judged %.0f packets: %.0f accepted, %.0f dropped silently", accepted+total, accepted, total)
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s + " — from its metrics endpoint"
}

// promLabels parses `a="x",b="y"` (sgd's label values never contain quotes or commas).
func promLabels(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			m[k] = strings.Trim(v, `"`)
		}
	}
	return m
}

// demoRun is a demo's lab and its way out: Ctrl-C (or SIGTERM) ends ctx, and finish,
// deferred with the demo's exit code, removes the lab unless it is kept.
type demoRun struct {
	l      *lab.Lab
	ctx    context.Context
	stop   context.CancelFunc
	name   string // "sgd demo", in messages
	keep   bool
	remove func() error // how the lab goes: l.Cleanup unless the demo sets its own
	stderr io.Writer
	once   sync.Once
}

// openDemo checks that the tools are installed, opens the lab (removing what killed
// demos left) and catches Ctrl-C. When it cannot, it says why and returns nil.
func openDemo(name string, tools []string, keep bool, stderr io.Writer) *demoRun {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(stderr, "%s: %s is not installed (the demo needs iproute2 and iptables; on Debian: apt-get install iproute2 iptables): %v\n", name, tool, err)
			return nil
		}
	}
	l, err := lab.New(demoPrefix)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil
	}
	if sw := l.Swept(); len(sw) > 0 {
		fmt.Fprintf(stderr, "%s: removed the leftovers of an earlier demo that was killed: %s\n", name, strings.Join(sw, ", "))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// After the first Ctrl-C, a second one (during cleanup) kills the process the usual
	// way; `sgd demo` run again removes what is left (lab.Sweep).
	context.AfterFunc(ctx, stop)
	return &demoRun{l: l, ctx: ctx, stop: stop, name: name, keep: keep, remove: l.Cleanup, stderr: stderr}
}

// finish removes the lab, unless it is kept — and always on a panic, before the panic
// goes on — and makes *code 1 when that fails. Defer it with the demo's named result.
func (d *demoRun) finish(code *int) {
	r := recover()
	d.once.Do(func() {
		if d.keep && r == nil {
			return
		}
		if err := d.remove(); err != nil {
			fmt.Fprintf(d.stderr, "%s: cleanup: %v\n", d.name, err)
			if *code == 0 {
				*code = 1
			}
		}
	})
	d.stop()
	if r != nil {
		panic(r)
	}
}

func demoFail(ctx context.Context, stderr io.Writer, what string, err error) int {
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "sgd demo: interrupted; cleaning up")
		return 130
	}
	fmt.Fprintf(stderr, "sgd demo: %s: %v\n", what, err)
	return 1
}

// demoServe runs the lab's toy servers until SIGINT/SIGTERM: "http=ADDR" answers one
// HTTP/1.0 request, "ssh=ADDR" sends an SSH-style banner, "db=ADDR" sends a greeting and
// then echoes (demoAnswerDB, the fleet demo's). It prints "ready" once all listen.
// Internal to `sgd demo` (run inside a namespace); not a user command.
func demoServe(args []string, stdout, stderr io.Writer) int {
	var lns []net.Listener
	for _, a := range args {
		kind, addr, ok := strings.Cut(a, "=")
		if !ok || (kind != "http" && kind != "ssh" && kind != "db") {
			fmt.Fprintf(stderr, "sgd demo %s: bad server %q (want http=ADDR, ssh=ADDR or db=ADDR)\n", demoServeVerb, a)
			return 2
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintf(stderr, "sgd demo %s: %v\n", demoServeVerb, err)
			return 1
		}
		lns = append(lns, ln)
		fmt.Fprintf(stdout, "listening: %s on %s\n", kind, ln.Addr())
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go demoAnswer(c, kind)
			}
		}()
	}
	fmt.Fprintln(stdout, "ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	for _, ln := range lns {
		ln.Close()
	}
	return 0
}

func demoAnswer(c net.Conn, kind string) {
	defer c.Close()
	if kind == "db" {
		demoAnswerDB(c)
		return
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if kind == "ssh" {
		_, _ = io.WriteString(c, "SSH-2.0-sgd_demo (a banner only, not a real SSH server)\r\n")
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil || strings.TrimRight(line, "\r\n") == "" {
			break
		}
	}
	body := "hello from the sgd demo\n"
	fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

func prefix(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }

// fmtDuration prints 0.4 ms, 12 ms, 3 s, 1.5 s.
func fmtDuration(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Round(time.Millisecond)/time.Millisecond)
	case d%time.Second == 0:
		return fmt.Sprintf("%d s", d/time.Second)
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func indentText(s, pre string) string {
	return pre + strings.ReplaceAll(s, "\n", "\n"+pre)
}
