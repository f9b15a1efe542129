package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sgd-firewall/sgd/internal/lab"
)

// The policy, the same on every filtering path: the three benchmark ports from the client
// only; everything else that arrives is dropped; everything may leave (AWS's default
// egress). Peers are the client's /32, so sgd tracks the flows (a 0.0.0.0/0 peer with
// all egress would make them untracked).
//
// On the bridge the client is a port too, so sgd judges its egress first (SPEC 4.3, two
// points): its group allows all protocols to the server's /32 and nothing in (replies
// come back tracked), a peer that keeps its flows tracked too; the kernel's FORWARD rules
// say the same.

// serverGroup is the server's group for sgd.
var serverGroup = fmt.Sprintf(`  - group_id: sg-bench
    group_name: bench-server
    description: the benchmark ports from the client only
    ingress:
      - {ip_protocol: tcp, from_port: %[1]d, to_port: %[1]d, cidr_ipv4: %[4]s/32, description: iperf3}
      - {ip_protocol: udp, from_port: %[2]d, to_port: %[2]d, cidr_ipv4: %[4]s/32, description: udp datagrams}
      - {ip_protocol: tcp, from_port: %[3]d, to_port: %[3]d, cidr_ipv4: %[4]s/32, description: new connections}
    # egress omitted: all traffic out
`, portTCP, portUDP, portConn, clientAddr)

// sgdConfig is the policy for sgd on the veth pair.
var sgdConfig = fmt.Sprintf(`# sgd bench: the same policy as the kernel path's iptables rules.
security_groups:
%sinterfaces:
  - name: %s
    security_groups: [sg-bench]
`, serverGroup, serverDev)

// sgdForwardedConfig is the policy for sgd in the hypervisor: both bridge ports.
var sgdForwardedConfig = fmt.Sprintf(`# sgd bench, forwarded: the same policy as the fwd-kernel path's iptables rules.
security_groups:
%[1]s  - group_id: sg-bench-client
    group_name: bench-client
    description: the client may send anything to the server; nothing comes in but replies
    egress:
      - {ip_protocol: "-1", cidr_ipv4: %[2]s/32, description: the server}
ports:
  - {name: %[3]s, addresses: [%[2]s], security_groups: [sg-bench]}
  - {name: %[4]s, addresses: [%[5]s], security_groups: [sg-bench-client]}
`, serverGroup, serverAddr, serverPort, clientPort, clientAddr)

// serverIngress writes the server's ingress rules in chain, each line starting with the
// match sel that picks the packets bound for the server.
func serverIngress(chain, sel string) string {
	return fmt.Sprintf(`-A %[5]s %[6]s -s %[4]s/32 -p tcp -m tcp --dport %[1]d -j ACCEPT
-A %[5]s %[6]s -s %[4]s/32 -p udp -m udp --dport %[2]d -j ACCEPT
-A %[5]s %[6]s -s %[4]s/32 -p tcp -m tcp --dport %[3]d -j ACCEPT
-A %[5]s %[6]s -j DROP
`, portTCP, portUDP, portConn, clientAddr, chain, sel)
}

// kernelRules is the same policy for iptables with the kernel's conntrack: what a user
// would otherwise write. Loaded with iptables-restore into the server namespace's own
// (otherwise empty) filter table.
var kernelRules = fmt.Sprintf(`*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i %[1]s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
%[2]sCOMMIT
`, serverDev, serverIngress("INPUT", "-i "+serverDev))

// kernelForwardedRules is the policy of both ports in the hypervisor's FORWARD chain, as
// a hypervisor's own iptables firewall would write it (libvirt's nwfilter, Neutron's
// iptables driver): one conntrack rule for replies, the client port's egress (only to the
// server), the server port's ingress, the client port's ingress (nothing new).
var kernelForwardedRules = fmt.Sprintf(`*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m physdev --physdev-in %[1]s --physdev-is-bridged ! -d %[2]s/32 -j DROP
%[3]s-A FORWARD -m physdev --physdev-out %[1]s --physdev-is-bridged -j DROP
COMMIT
`, clientPort, serverAddr, serverIngress("FORWARD", "-m physdev --physdev-out "+serverPort+" --physdev-is-bridged"))

// emptyRules resets the filter table of the namespace the filter ran in.
const emptyRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
`

func (b *bencher) setup(ctx context.Context, p Path) error {
	switch p {
	case Raw:
		return nil
	case FwdRaw:
		return b.bridgeCalls(false)
	case Kernel:
		_, err := b.l.RunInput(ctx, b.t.judge, []byte(kernelRules), "iptables-restore")
		return err
	case FwdKernel:
		if err := b.bridgeCalls(true); err != nil {
			return err
		}
		_, err := b.l.RunInput(ctx, b.t.judge, []byte(kernelForwardedRules), "iptables-restore")
		return err
	case SGD, SGDFastPath, FwdSGD:
		// fwd-sgd starts with br_netfilter's calls off: sgd turns them on (and back).
		if p == FwdSGD {
			if err := b.bridgeCalls(false); err != nil {
				return err
			}
		}
		args := []string{b.o.SGD, "run", "--config", b.t.cfgPath, "--metrics-listen", "127.0.0.1:9640",
			"--status-socket", "off", "--log-format", "json", "--log-level", "info"}
		if p == SGDFastPath {
			args = append(args, "--fast-path")
		}
		if b.o.Queues > 0 {
			args = append(args, "--queue-count", strconv.Itoa(b.o.Queues))
		}
		proc, err := b.l.Start(b.t.judge, string(p), args...)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := proc.WaitFor(wctx, `"msg":"started"`); err != nil {
			_ = proc.Stop(5 * time.Second)
			return err
		}
		b.sgd = proc
		b.counters = b.rep.sgdCounters(p)
		b.counters.Runs++
		return nil
	}
	return fmt.Errorf("unknown path %q", p)
}

func (b *bencher) teardown(p Path) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch p {
	case Kernel, FwdKernel:
		_, err := b.l.RunInput(ctx, b.t.judge, []byte(emptyRules), "iptables-restore")
		return err
	case SGD, SGDFastPath, FwdSGD:
		if b.sgd == nil {
			return nil
		}
		b.readMetrics(ctx)
		if user, sys, err := procCPU(b.sgd.PID()); err == nil {
			b.counters.CPUSeconds += user + sys
		}
		proc := b.sgd
		b.sgd, b.counters = nil, nil
		if err := proc.Stop(10 * time.Second); err != nil {
			return err
		}
		if err := proc.Err(); err != nil {
			return fmt.Errorf("sgd exited with %v; its log ends:\n%s", err, proc.Tail(10))
		}
		// A clean stop removes sgd's chains; check, so that the next path runs unfiltered.
		out, err := b.l.Run(ctx, b.t.judge, "iptables", "-t", "mangle", "-S")
		if err == nil && strings.Contains(out, "SGD-") {
			return fmt.Errorf("sgd stopped but left its chains:\n%s", out)
		}
	}
	return nil
}

// checkPolicy makes sure the path does what it says before it is measured: the allowed
// connection port answers, and a port outside the policy is refused on the raw path
// paths (nothing listens) but silently dropped (a timeout) on the filtering paths.
func (b *bencher) checkPolicy(ctx context.Context, p Path) error {
	dial := func(port int, timeout time.Duration) error {
		dctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c, err := lab.DialContext(dctx, b.t.client.NS, "tcp4", net.JoinHostPort(serverAddr.String(), strconv.Itoa(port)))
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(portConn, 5*time.Second); err != nil {
		return fmt.Errorf("policy check on path %s: the allowed port tcp/%d does not answer: %w", p, portConn, err)
	}
	err := dial(portClosed, 300*time.Millisecond)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	refusedFast := errors.Is(err, syscall.ECONNREFUSED)
	if !p.filters() && !refusedFast {
		return fmt.Errorf("policy check on path %s: tcp/%d should be refused (nothing listens, nothing filters), got %v", p, portClosed, err)
	}
	if p.filters() && (err == nil || refusedFast) {
		return fmt.Errorf("policy check on path %s: tcp/%d should be dropped silently, got %v — the filter is not enforcing", p, portClosed, err)
	}
	return nil
}

// sgdUsage returns the running sgd's CPU seconds (in user space and in the kernel) and
// the kernel's drops on its queues so far (zero when no sgd runs).
func (b *bencher) sgdUsage() (user, sys float64, drops uint64) {
	if b.sgd == nil {
		return 0, 0, 0
	}
	user, sys, _ = procCPU(b.sgd.PID())
	drops, _ = queueDrops(b.sgd.PID())
	return user, sys, drops
}

// procCPU reads the user and system CPU seconds (utime, stime) of a process from
// /proc/PID/stat (USER_HZ = 100 on every Linux architecture).
func procCPU(pid int) (user, sys float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	// After the comm: state(3) ... utime(14) stime(15): indexes 11 and 12 here.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return float64(ut) / 100, float64(st) / 100, nil
}

// queueDrops sums the kernel's drops (queue full, and failed deliveries to the reader) on
// every NFQUEUE of the network namespace of pid: /proc/PID/net/netfilter/nfnetlink_queue,
// columns queue, portid, waiting, copy mode, copy range, queue_dropped, user_dropped, ...
func queueDrops(pid int) (uint64, error) {
	return sumQueueDrops(fmt.Sprintf("/proc/%d/net/netfilter/nfnetlink_queue", pid))
}

func sumQueueDrops(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 7 {
			continue
		}
		d, _ := strconv.ParseUint(fs[5], 10, 64)
		u, _ := strconv.ParseUint(fs[6], 10, 64)
		total += d + u
	}
	return total, sc.Err()
}

// readMetrics adds sgd's packet counters (from its metrics endpoint inside the namespace
// it runs in) to the path's counters.
func (b *bencher) readMetrics(ctx context.Context) {
	ns := b.t.judge
	cl := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.DialContext(ctx, ns, network, addr)
		}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:9640/metrics", nil)
	if err != nil {
		return
	}
	resp, err := cl.Do(req)
	if err != nil {
		b.counters.MetricsError = err.Error()
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, `sgd_tracked_flows{protocol="`); ok {
			proto, val, _ := strings.Cut(rest, `"} `)
			if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
				if b.counters.TrackedAtStop == nil {
					b.counters.TrackedAtStop = map[string]uint64{}
				}
				b.counters.TrackedAtStop[proto] = max(b.counters.TrackedAtStop[proto], uint64(v))
			}
			continue
		}
		rest, ok := strings.CutPrefix(line, "sgd_packets_total{")
		if !ok {
			continue
		}
		labels, val, ok := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if !ok || err != nil {
			continue
		}
		var verdict, reason string
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "verdict":
				verdict = strings.Trim(v, `"`)
			case "reason":
				reason = strings.Trim(v, `"`)
			}
		}
		b.counters.Packets += uint64(v)
		if verdict == "drop" {
			if b.counters.Dropped == nil {
				b.counters.Dropped = map[string]uint64{}
			}
			b.counters.Dropped[reason] += uint64(v)
		}
	}
}
