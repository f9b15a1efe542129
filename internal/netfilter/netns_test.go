//go:build linux

package netfilter

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"golang.org/x/sys/unix"

	"github.com/sgd-firewall/sgd/internal/offload"
)

// These tests run the real iptables commands, but only inside network namespaces they
// create (and always delete): the host's own ruleset is never read or written.

var nsSeq atomic.Int32

// ensure creates the timeout policies of ts inside namespace ns.
func ensure(t *testing.T, ns string, ts ...offload.Timeouts) {
	t.Helper()
	inNetns(t, ns, func() error { return offload.Ensure(context.Background(), ts) })
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and edit netfilter rules inside them")
	}
	for _, bin := range []string{"ip", "iptables", "ip6tables", "iptables-restore", "ip6tables-restore", "iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not found in PATH", bin)
		}
	}
}

// newNetns creates a network namespace with a unique name, with lo up, deleted when the
// test ends, pass or fail.
func newNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("sgdnf-%d-%d", os.Getpid(), nsSeq.Add(1))
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	sh(t, "ip", "netns", "add", name)
	sh(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// sh runs a command (argument list, no shell) and returns its standard output.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := ExecRunner{}.Run(context.Background(), name, args, nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// nsSh runs a command inside network namespace ns.
func nsSh(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return sh(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

var (
	counters    = regexp.MustCompile(`\[\d+:\d+\]$`)
	builtinDecl = regexp.MustCompile(`^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT `)
)

// saved is iptables-save of both families in ns, without comments and counters, as
// "family table line" lines.
func saved(t *testing.T, ns string) []string {
	t.Helper()
	var lines []string
	for _, fam := range []string{"iptables-save", "ip6tables-save"} {
		table := ""
		for _, l := range strings.Split(nsSh(t, ns, fam), "\n") {
			switch {
			case l == "" || strings.HasPrefix(l, "#") || l == "COMMIT", builtinDecl.MatchString(l):
				// Built-in chains of the nft backend stay once a table was used;
				// only their policy would matter, and sgd never sets one.
			case strings.HasPrefix(l, "*"):
				table = l[1:]
			default:
				lines = append(lines, fam[:len(fam)-5]+" "+table+" "+counters.ReplaceAllString(l, "[0:0]"))
			}
		}
	}
	return lines
}

// jumpLines are sgd's jumps as "table -A BUILTIN rule", the mangle INPUT and OUTPUT ones
// first.
var jumpLines = func() []string {
	var ls []string
	for _, h := range allHooks() {
		if h.builtin != "" {
			ls = append(ls, h.table+" -A "+h.builtin+" "+strings.Join(h.jumpArgs(), " "))
		}
	}
	return ls
}()

// cutTimeout shortens CT's timeout names to the 4 bytes Linux 6.18 lists (xt_CT's
// usersize ends there; the rule in the kernel has the whole name).
var cutTimeout = regexp.MustCompile(`(--timeout \S{1,4})\S*`)

// owned splits saved lines into sgd's (chain declarations, chain rules, jumps) and the rest.
func owned(lines []string) (own, foreign []string) {
	for _, l := range lines {
		_, rest, _ := strings.Cut(l, " ") // drop the family
		_, rule, _ := strings.Cut(rest, " ")
		if strings.HasPrefix(rule, ":SGD-") || strings.HasPrefix(rule, "-A SGD-") || slices.Contains(jumpLines, rest) {
			own = append(own, l)
		} else {
			foreign = append(foreign, l)
		}
	}
	return own, foreign
}

// wantOwned is what saved should show of sgd's for spec: the chain rules of Rules and,
// per table used, the jumps.
func wantOwned(m *Manager, s Spec) []string {
	var want []string
	v4, v6 := m.Rules(s)
	for _, x := range []struct {
		fam string
		in  []byte
	}{{"iptables", v4}, {"ip6tables", v6}} {
		table := ""
		for _, l := range strings.Split(string(x.in), "\n") {
			switch {
			case strings.HasPrefix(l, "*"):
				table = l[1:]
			case strings.HasPrefix(l, ":"), strings.HasPrefix(l, "-A "):
				want = append(want, x.fam+" "+table+" "+cutTimeout.ReplaceAllString(l, "$1"))
			}
		}
		for _, h := range s.hooks() {
			if h.builtin != "" {
				want = append(want, x.fam+" "+h.table+" -A "+h.builtin+" "+strings.Join(h.jumpArgs(), " "))
			}
		}
	}
	return want
}

// sameLines compares two line lists ignoring order between chains but keeping the order of
// the rules within each chain (which stable sorting by family, table and chain keeps).
func sameLines(a, b []string) bool {
	key := func(l string) string {
		f := strings.Fields(l)
		if len(f) >= 4 && f[2] == "-A" {
			return f[0] + " " + f[1] + " " + f[3]
		}
		return f[0] + " " + f[1] + " " + f[2]
	}
	sortc := func(x []string) []string {
		x = slices.Clone(x)
		slices.SortStableFunc(x, func(p, q string) int { return strings.Compare(key(p), key(q)) })
		return x
	}
	return slices.Equal(sortc(a), sortc(b))
}

func TestNetnsApplyRemove(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNetns(t)

	// Someone else's rules, in both tables sgd uses and in a chain of their own.
	for _, c := range [][]string{
		{"iptables", "-t", "mangle", "-A", "INPUT", "-s", "192.0.2.99", "-j", "MARK", "--set-mark", "7"},
		{"iptables", "-t", "mangle", "-A", "OUTPUT", "-d", "192.0.2.99", "-j", "MARK", "--set-mark", "7"},
		{"iptables", "-A", "INPUT", "-s", "192.0.2.98", "-j", "DROP"},
		{"iptables", "-N", "OTHER"},
		{"iptables", "-A", "OTHER", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"},
		{"iptables", "-A", "OUTPUT", "-m", "comment", "--comment", "not sgd", "-j", "OTHER"},
		{"ip6tables", "-t", "mangle", "-A", "INPUT", "-s", "2001:db8::99", "-j", "MARK", "--set-mark", "7"},
		{"ip6tables", "-A", "INPUT", "-s", "2001:db8::98", "-j", "DROP"},
		{"ip6tables", "-A", "OUTPUT", "-d", "2001:db8::98", "-j", "DROP"},
	} {
		nsSh(t, ns, c...)
	}
	before := saved(t, ns)

	opts := DefaultOptions()
	opts.Netns = ns
	m := New(opts)
	if ok, err := m.Installed(ctx); ok || err != nil {
		t.Fatalf("Installed() before Apply = %v, %v; want false, nil", ok, err)
	}
	pol := offload.Timeouts{TCPEstablished: 60, UDP: 30, UDPStream: 60}
	tcp, udp := pol.Names()
	ensure(t, ns, pol)
	s := Spec{Interfaces: []string{"sgd-a", "sgd-b"}, QueueNum: 3, QueueCount: 2, FailOpen: true,
		Offload: &Offload{Zones: map[string]uint16{"sgd-a": 1, "sgd-b": 2}, Timeouts: map[string][2]string{"sgd-a": {tcp, udp}, "sgd-b": {tcp, ""}}}}

	check := func(step string, s Spec) []string {
		t.Helper()
		now := saved(t, ns)
		own, foreign := owned(now)
		if !slices.Equal(foreign, before) {
			t.Errorf("%s: foreign rules =\n%s\nwant (untouched)\n%s", step, strings.Join(foreign, "\n"), strings.Join(before, "\n"))
		}
		if want := wantOwned(m, s); !sameLines(own, want) {
			t.Errorf("%s: sgd's rules =\n%s\nwant\n%s", step, strings.Join(own, "\n"), strings.Join(want, "\n"))
		}
		// Each jump is the first rule of its built-in chain.
		for _, fam := range []string{"iptables", "ip6tables"} {
			for _, j := range jumpLines[:2] {
				prefix := fam + " " + strings.Join(strings.Fields(j)[:3], " ") + " " // table -A BUILTIN
				i := slices.IndexFunc(now, func(l string) bool { return strings.HasPrefix(l, prefix) })
				if i < 0 || now[i] != fam+" "+j {
					t.Errorf("%s: first rule with prefix %q is not the jump %q", step, prefix, j)
				}
			}
		}
		return now
	}

	if err := m.Apply(ctx, s); err != nil {
		t.Fatalf("Apply(%+v) = %v", s, err)
	}
	first := check("first Apply", s)
	if ok, err := m.Installed(ctx); !ok || err != nil {
		t.Errorf("Installed() after Apply = %v, %v; want true, nil", ok, err)
	}

	// Re-applying, and a restart after a crash (a new Manager), leave exactly one copy.
	for i, mm := range []*Manager{m, New(opts)} {
		if err := mm.Apply(ctx, s); err != nil {
			t.Fatalf("Apply #%d = %v", i+2, err)
		}
		if now := saved(t, ns); !slices.Equal(now, first) {
			t.Errorf("Apply #%d changed the ruleset:\n%s\nwant\n%s", i+2, strings.Join(now, "\n"), strings.Join(first, "\n"))
		}
	}

	// A new spec replaces the content; fast path off removes the filter chains.
	s2 := Spec{Interfaces: []string{"sgd-c"}, QueueNum: 9, QueueCount: 1}
	if err := m.Apply(ctx, s2); err != nil {
		t.Fatalf("Apply(%+v) = %v", s2, err)
	}
	check("Apply without fast path", s2)

	if err := m.Remove(ctx); err != nil {
		t.Fatalf("Remove() = %v", err)
	}
	if now := saved(t, ns); !slices.Equal(now, before) {
		t.Errorf("after Remove, ruleset =\n%s\nwant (as before)\n%s", strings.Join(now, "\n"), strings.Join(before, "\n"))
	}
	if ok, err := m.Installed(ctx); ok || err != nil {
		t.Errorf("Installed() after Remove = %v, %v; want false, nil", ok, err)
	}
	if err := m.Remove(ctx); err != nil {
		t.Errorf("second Remove() = %v; want nil", err)
	}

	// Remove also cleans up after a fast-path run.
	if err := m.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := New(opts).Remove(ctx); err != nil {
		t.Fatalf("Remove() after fast-path Apply = %v", err)
	}
	if now := saved(t, ns); !slices.Equal(now, before) {
		t.Errorf("after Remove, ruleset =\n%s\nwant (as before)\n%s", strings.Join(now, "\n"), strings.Join(before, "\n"))
	}
}

// inNetns runs fn on an OS thread that has entered network namespace ns; sockets fn
// creates belong to ns for their whole life.
func inNetns(t *testing.T, ns string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it is thrown away when this goroutine ends.
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// flow is a UDP socket pair across the veth: send in one namespace, recv in the other.
type flow struct {
	name       string
	send, recv *net.UDPConn
}

var msgSeq atomic.Int64

// delivered sends one datagram and reports whether it arrived within wait.
func (f flow) delivered(t *testing.T, wait time.Duration) bool {
	t.Helper()
	msg := fmt.Appendf(nil, "sgd-netfilter-test %d", msgSeq.Add(1))
	if _, err := f.send.Write(msg); err != nil {
		// A locally generated packet that netfilter drops fails the send (EPERM).
		return false
	}
	buf := make([]byte, 1500)
	deadline := time.Now().Add(wait)
	for {
		_ = f.recv.SetReadDeadline(deadline)
		n, err := f.recv.Read(buf)
		if err != nil {
			return false
		}
		if bytes.Equal(buf[:n], msg) {
			return true
		}
	}
}

// vethPair makes namespaces a and b joined by a veth pair (a: veth0 192.0.2.1,
// 2001:db8::1; b: veth1 192.0.2.2, 2001:db8::2) and UDP flows a->b (ingress for b) and
// b->a (egress for b), in both families.
func vethPair(t *testing.T) (a, b string, flows []flow) {
	t.Helper()
	a, b = newNetns(t), newNetns(t)
	sh(t, "ip", "-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", b)
	sh(t, "ip", "-n", a, "addr", "add", "192.0.2.1/24", "dev", "veth0")
	sh(t, "ip", "-n", a, "addr", "add", "2001:db8::1/64", "dev", "veth0", "nodad")
	sh(t, "ip", "-n", b, "addr", "add", "192.0.2.2/24", "dev", "veth1")
	sh(t, "ip", "-n", b, "addr", "add", "2001:db8::2/64", "dev", "veth1", "nodad")
	sh(t, "ip", "-n", a, "link", "set", "veth0", "up")
	sh(t, "ip", "-n", b, "link", "set", "veth1", "up")

	listen := func(ns, network, addr string) *net.UDPConn {
		var c *net.UDPConn
		inNetns(t, ns, func() (err error) {
			c, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
			return err
		})
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial := func(ns, network string, to *net.UDPConn) *net.UDPConn {
		var c *net.UDPConn
		inNetns(t, ns, func() (err error) {
			c, err = net.DialUDP(network, nil, to.LocalAddr().(*net.UDPAddr))
			return err
		})
		t.Cleanup(func() { c.Close() })
		return c
	}
	for _, x := range []struct {
		name, network, from, to, addr string
	}{
		{"ipv4 ingress", "udp4", a, b, "192.0.2.2:0"},
		{"ipv4 egress", "udp4", b, a, "192.0.2.1:0"},
		{"ipv6 ingress", "udp6", a, b, "[2001:db8::2]:0"},
		{"ipv6 egress", "udp6", b, a, "[2001:db8::1]:0"},
	} {
		recv := listen(x.to, x.network, x.addr)
		flows = append(flows, flow{name: x.name, send: dial(x.from, x.network, recv), recv: recv})
	}
	// Wait until every flow carries datagrams, before any rule exists (so the probes
	// reach no queue and leave no conntrack entry): on a loaded machine a fresh pair's
	// first IPv6 datagram can be lost with its neighbour solicitation, sent before the
	// peer's link was up, and the kernel solicits again only a second later.
	for _, f := range flows {
		ok := false
		for try := 0; try < 10 && !ok; try++ {
			ok = f.delivered(t, 500*time.Millisecond)
		}
		if !ok {
			t.Fatalf("%s: the fresh veth pair carries nothing in 5 s", f.name)
		}
	}
	return a, b, flows
}

// queueReader reads queue num in namespace ns and accepts every packet, with mark when
// non-zero; hits counts the packets that carried marker in their payload.
func queueReader(t *testing.T, ns string, num uint16, mark uint32, marker []byte, hits *atomic.Int32) (stop func()) {
	t.Helper()
	return queueReaderFunc(t, ns, num, mark, func(p []byte) {
		if bytes.Contains(p, marker) {
			hits.Add(1)
		}
	})
}

// queueReaderFunc is queueReader calling seen with each packet (from the library's
// goroutine).
func queueReaderFunc(t *testing.T, ns string, num uint16, mark uint32, seen func(payload []byte)) (stop func()) {
	t.Helper()
	fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	q, err := nfqueue.Open(&nfqueue.Config{
		NetNS:        fd,
		NfQueue:      num,
		MaxPacketLen: 0xffff,
		MaxQueueLen:  64,
		Copymode:     nfqueue.NfQnlCopyPacket,
		AfFamily:     unix.AF_UNSPEC,
	})
	if err != nil {
		t.Fatalf("nfqueue.Open(queue %d in %s) = %v", num, ns, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			return 0
		}
		if a.Payload != nil {
			seen(*a.Payload)
		}
		if mark != 0 {
			_ = q.SetVerdictWithMark(*a.PacketID, nfqueue.NfAccept, int(mark))
		} else {
			_ = q.SetVerdict(*a.PacketID, nfqueue.NfAccept)
		}
		return 0
	}
	errFn := func(error) int {
		if ctx.Err() != nil {
			return 1
		}
		return 0
	}
	if err := q.RegisterWithErrorFunc(ctx, hook, errFn); err != nil {
		cancel()
		q.Close()
		t.Fatalf("register nfqueue %d: %v", num, err)
	}
	var once bool
	stop = func() {
		if !once {
			once = true
			cancel()
			q.Close()
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestNetnsQueueing(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ctx := context.Background()
	a, b, flows := vethPair(t)
	const (
		pass = 2 * time.Second
		drop = 300 * time.Millisecond
	)
	expect := func(step string, want bool) {
		t.Helper()
		for _, f := range flows {
			wait := pass
			if !want {
				wait = drop
			}
			if got := f.delivered(t, wait); got != want {
				t.Errorf("%s: %s delivered = %v; want %v", step, f.name, got, want)
			}
		}
	}
	expect("no rules", true)

	opts := DefaultOptions()
	opts.Netns = b
	m := New(opts)
	t.Cleanup(func() { _ = m.Remove(context.Background()) })
	spec := Spec{Interfaces: []string{"veth1"}, QueueNum: 5, QueueCount: 1}

	// Fail-closed with nobody reading queue 5: everything on veth1 is dropped, but
	// neighbour discovery still resolves (b answers a's solicitation).
	if err := m.Apply(ctx, spec); err != nil {
		t.Fatalf("Apply(%+v) = %v", spec, err)
	}
	sh(t, "ip", "-n", a, "-6", "neigh", "flush", "dev", "veth0")
	sh(t, "ip", "-n", b, "-6", "neigh", "flush", "dev", "veth1")
	expect("fail-closed, no reader", false)
	if out := sh(t, "ip", "-n", a, "-6", "neigh", "show", "2001:db8::2", "dev", "veth0"); !strings.Contains(out, "lladdr") {
		t.Errorf("fail-closed: a's neighbour entry for 2001:db8::2 = %q; want it resolved (NDP is not queued)", out)
	}

	// A reader on queue 5 really receives the packets and its verdict lets them pass.
	var hits atomic.Int32
	stop := queueReader(t, b, 5, 0, []byte("sgd-netfilter-test"), &hits)
	expect("fail-closed, reader accepting", true)
	if got := hits.Load(); got != int32(len(flows)) {
		t.Errorf("reader saw %d test datagrams; want %d (one per flow)", got, len(flows))
	}
	stop()

	// Fail-open: the same rules with --queue-bypass let packets through without a reader.
	spec.FailOpen = true
	if err := m.Apply(ctx, spec); err != nil {
		t.Fatalf("Apply(%+v) = %v", spec, err)
	}
	expect("fail-open, no reader", true)

	// Back to fail-closed, then a clean Remove: traffic flows again.
	spec.FailOpen = false
	if err := m.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	expect("fail-closed again", false)
	if err := m.Remove(ctx); err != nil {
		t.Fatalf("Remove() = %v", err)
	}
	expect("after Remove", true)
}
