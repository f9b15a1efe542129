//go:build linux

package netfilter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/offload"
)

// The kernel fast path (Spec.Offload) on the real kernel: a reader stands in for sgd and
// accepts with offload.Mark; the tests look at which packets reach it, what the kernel's
// conntrack entries carry, and what passes with nobody reading the queue.

// offloadOn turns on the conntrack sysctls the fast path needs in ns, and applies spec
// there (restoring and removing both at the end).
func offloadOn(t *testing.T, ns string, spec Spec) (*Manager, *offload.Sysctls) {
	t.Helper()
	sys := &offload.Sysctls{}
	inNetns(t, ns, func() error { _, err := sys.Enable(); return err })
	t.Cleanup(func() { inNetns(t, ns, sys.Restore) })
	opts := DefaultOptions()
	opts.Netns = ns
	m := New(opts)
	t.Cleanup(func() { _ = m.Remove(context.Background()) })
	if err := m.Apply(context.Background(), spec); err != nil {
		t.Fatalf("Apply(%+v) = %v", spec, err)
	}
	return m, sys
}

// offloadPair is vethPair with the fast path on veth1 (zone 1) in b, queueing to queue.
func offloadPair(t *testing.T, queue uint16) (a, b string, flows []flow) {
	t.Helper()
	a, b, flows = vethPair(t)
	offloadOn(t, b, Spec{Interfaces: []string{"veth1"}, QueueNum: queue, QueueCount: 1, Offload: &Offload{Zones: map[string]uint16{"veth1": 1}}})
	return a, b, flows
}

// kernelConns dumps sgd's offloaded entries in ns.
func kernelConns(t *testing.T, ns string) []offload.Conn {
	t.Helper()
	var conns []offload.Conn
	inNetns(t, ns, func() error {
		k, err := offload.Open(context.Background(), nil)
		if err != nil {
			return err
		}
		defer k.Close()
		conns, err = k.Dump(context.Background())
		return err
	})
	return conns
}

// connOf finds the entry whose original tuple is a's.
func connOf(conns []offload.Conn, src, dst netip.AddrPort) (offload.Conn, bool) {
	for _, c := range conns {
		if c.Src == src.Addr().Unmap() && c.Dst == dst.Addr().Unmap() && c.SrcPort == src.Port() && c.DstPort == dst.Port() {
			return c, true
		}
	}
	return offload.Conn{}, false
}

func udpEnds(c *net.UDPConn) (src, dst netip.AddrPort) {
	return c.LocalAddr().(*net.UDPAddr).AddrPort(), c.RemoteAddr().(*net.UDPAddr).AddrPort()
}

// labelmapScript runs conntrack with a label map naming bit N "zN", in a private mount
// namespace (a tmpfs over /etc), so that "-o labels" prints the bits and the host's /etc
// is untouched. The arguments follow as "$@"; nothing of them is in the script.
const labelmapScript = `mount -t tmpfs none /etc && mkdir /etc/xtables && i=0 && while [ $i -le 127 ]; do echo "$i z$i"; i=$((i+1)); done > /etc/xtables/connlabel.conf && exec "$@"`

// conntrackLabels is Debian's conntrack -L -o labels in ns for one family, one line per
// entry; nil (and the cross-checks are skipped) without conntrack-tools.
func conntrackLabels(t *testing.T, ns, family string) []string {
	t.Helper()
	if _, err := exec.LookPath("conntrack"); err != nil {
		t.Log("no conntrack (conntrack-tools): the cross-check with conntrack -L is skipped")
		return nil
	}
	out := sh(t, "unshare", "--mount", "--propagation", "private", "sh", "-c", labelmapScript, "sh",
		"ip", "netns", "exec", ns, "conntrack", "-L", "-f", family, "-o", "labels")
	return strings.Split(strings.TrimSpace(out), "\n")
}

// cliLine finds the conntrack -L line of the entry with this original tuple.
func cliLine(lines []string, src, dst netip.AddrPort) string {
	want := fmt.Sprintf("src=%s dst=%s sport=%d dport=%d ", src.Addr().Unmap(), dst.Addr().Unmap(), src.Port(), dst.Port())
	for _, l := range lines {
		if strings.Contains(l, want) {
			return l
		}
	}
	return ""
}

var labelsField = regexp.MustCompile(`labels=(\S+)`)

// redial opens a new sending socket for f in ns: a new source port, so a new flow.
func redial(t *testing.T, ns string, f flow) flow {
	t.Helper()
	var c *net.UDPConn
	inNetns(t, ns, func() (err error) {
		c, err = net.DialUDP(f.send.LocalAddr().Network(), nil, f.recv.LocalAddr().(*net.UDPAddr))
		return err
	})
	t.Cleanup(func() { c.Close() })
	return flow{name: f.name + " (new flow)", send: c, recv: f.recv}
}

func TestNetnsOffloadInterface(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	a, b, flows := offloadPair(t, 2)
	var hits atomic.Int32
	stop := queueReader(t, b, 2, offload.Mark, []byte("sgd-netfilter-test"), &hits)
	for _, f := range flows {
		hits.Store(0)
		for i := range 3 {
			if !f.delivered(t, 2*time.Second) {
				t.Errorf("%s: datagram %d not delivered", f.name, i)
			}
		}
		if got := hits.Load(); got != 1 {
			t.Errorf("%s: reader saw %d of 3 datagrams; want 1 (the rest offloaded)", f.name, got)
		}
	}

	// The entries carry veth1's label, and the mark that makes destroy events sgd's.
	conns := kernelConns(t, b)
	cli := append(conntrackLabels(t, b, "ipv4"), conntrackLabels(t, b, "ipv6")...)
	for _, f := range flows {
		src, dst := udpEnds(f.send)
		c, ok := connOf(conns, src, dst)
		switch {
		case !ok:
			t.Errorf("%s: Dump has no entry %s -> %s; got %v", f.name, src, dst, conns)
		case !c.Labels.Has(1) || c.Labels.Has(2) || c.Mark&offload.Mark == 0:
			t.Errorf("%s: entry labels %x mark %#x; want bit 1 alone and mark %#x", f.name, c.Labels, c.Mark, offload.Mark)
		case c.OrigPackets != 3:
			t.Errorf("%s: entry counts %d packets; want 3 (nf_conntrack_acct on)", f.name, c.OrigPackets)
		}
		line := cliLine(cli, src, dst)
		if m := labelsField.FindStringSubmatch(line); cli != nil && (m == nil || m[1] != "z1") {
			t.Errorf("%s: conntrack -L -o labels line %q; want labels=z1", f.name, line)
		}
	}

	// Nobody reads the queue now (fail-closed): the offloaded flows still pass, new ones
	// do not.
	stop()
	for _, f := range flows {
		if !f.delivered(t, 2*time.Second) {
			t.Errorf("%s: offloaded flow not delivered with no reader", f.name)
		}
		from := a
		if strings.Contains(f.name, "egress") {
			from = b
		}
		if nf := redial(t, from, f); nf.delivered(t, 300*time.Millisecond) {
			t.Errorf("%s: delivered with no reader; want it queued (dropped)", nf.name)
		}
	}
}

// ICMP errors related to an offloaded flow are RELATED, and still go to the queue (SPEC
// 4.7: they follow allow_related_icmp, which only sgd can judge).
func TestNetnsOffloadRelatedICMP(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	a, b, _ := offloadPair(t, 3)
	var udp, icmp atomic.Int32
	queueReaderFunc(t, b, 3, offload.Mark, func(p []byte) {
		switch proto := l4(p); {
		case proto == 17:
			udp.Add(1)
		case proto == 1 || proto == 58:
			icmp.Add(1)
		}
	})
	for _, addr := range []string{"192.0.2.2:9", "[2001:db8::2]:9"} { // nothing listens on 9
		udp.Store(0)
		icmp.Store(0)
		var c *net.UDPConn
		inNetns(t, a, func() (err error) {
			c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
			return err
		})
		defer c.Close()
		for i := range 2 {
			if _, err := c.Write([]byte("sgd-netfilter-test")); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 64)); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: datagram %d: read = %v; want ECONNREFUSED (the port unreachable judged and accepted)", addr, i, err)
			}
		}
		if got := udp.Load(); got != 1 {
			t.Errorf("%s: reader saw %d datagrams; want 1 (the second offloaded)", addr, got)
		}
		if got := icmp.Load(); got != 2 {
			t.Errorf("%s: reader saw %d ICMP errors; want 2 (RELATED: both queued)", addr, got)
		}
	}
}

// l4 is the transport protocol of an IPv4 or IPv6 packet (no extension headers).
func l4(p []byte) byte {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		return p[9]
	case len(p) >= 40 && p[0]>>4 == 6:
		return p[6]
	}
	return 0
}

// An INVALID packet (here a segment with a bad checksum, which conntrack refuses to track)
// goes to the queue even when its tuple is an offloaded connection's.
func TestNetnsOffloadInvalid(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	a, b, _ := offloadPair(t, 4)
	var tcp, marked atomic.Int32
	queueReaderFunc(t, b, 4, offload.Mark, func(p []byte) {
		if l4(p) == 6 {
			tcp.Add(1)
			if bytes.Contains(p, []byte("sgd-invalid")) {
				marked.Add(1)
			}
		}
	})
	var ln net.Listener
	inNetns(t, b, func() (err error) { ln, err = net.Listen("tcp4", "192.0.2.2:0"); return err })
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	var c net.Conn
	inNetns(t, a, func() (err error) { c, err = net.DialTimeout("tcp4", ln.Addr().String(), 3*time.Second); return err })
	defer c.Close()
	srv, ok := <-accepted
	if !ok {
		t.Fatal("no connection accepted")
	}
	defer srv.Close()
	for range 5 { // an exchange, all of it offloaded
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		_ = srv.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := srv.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	if got := tcp.Load(); got != 1 {
		t.Errorf("reader saw %d TCP segments of the connection; want 1 (the SYN)", got)
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	if conn, ok := connOf(kernelConns(t, b), local, remote); !ok || !conn.Labels.Has(1) || conn.Proto != 6 {
		t.Errorf("Dump entry for %s -> %s = %+v, %v; want TCP with label 1", local, remote, conn, ok)
	}
	// The same tuple with a bad checksum, from a raw socket.
	var raw net.PacketConn
	inNetns(t, a, func() (err error) { raw, err = net.ListenPacket("ip4:tcp", "192.0.2.1"); return err })
	defer raw.Close()
	seg := make([]byte, 20, 32)
	binary.BigEndian.PutUint16(seg[0:], local.Port())
	binary.BigEndian.PutUint16(seg[2:], remote.Port())
	seg[12] = 5 << 4 // data offset: 5 words
	seg[13] = 0x18   // ACK|PSH
	binary.BigEndian.PutUint16(seg[14:], 1024)
	binary.BigEndian.PutUint16(seg[16:], 0xdead) // checksum: wrong
	seg = append(seg, "sgd-invalid"...)
	if _, err := raw.WriteTo(seg, &net.IPAddr{IP: net.IPv4(192, 0, 2, 2)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for marked.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := marked.Load(); got != 1 {
		t.Errorf("reader saw %d INVALID segments; want 1", got)
	}
}

// bridgeLab is namespace hv holding bridge br0 with ports vpa, vpb, vpc, each the peer of
// eth0 in namespaces pa (192.0.2.11, 2001:db8::11), pb (.12) and pc (.13); br_netfilter's
// iptables calls are on in hv.
type bridgeLab struct {
	hv         string
	pa, pb, pc string
}

func newBridgeLab(t *testing.T) bridgeLab {
	t.Helper()
	if _, err := os.Stat(BridgeSysctlDir); err != nil {
		t.Skip("skipping: br_netfilter is not loaded")
	}
	l := bridgeLab{hv: newNetns(t), pa: newNetns(t), pb: newNetns(t), pc: newNetns(t)}
	sh(t, "ip", "-n", l.hv, "link", "add", "br0", "type", "bridge")
	for i, ns := range []string{l.pa, l.pb, l.pc} {
		port := "vp" + string(rune('a'+i))
		sh(t, "ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", l.hv)
		sh(t, "ip", "-n", ns, "addr", "add", fmt.Sprintf("192.0.2.%d/24", 11+i), "dev", "eth0")
		sh(t, "ip", "-n", ns, "addr", "add", fmt.Sprintf("2001:db8::%d/64", 11+i), "dev", "eth0", "nodad")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", l.hv, "link", "set", port, "master", "br0", "up")
	}
	sh(t, "ip", "-n", l.hv, "link", "set", "br0", "up")
	inNetns(t, l.hv, func() error {
		for _, name := range bridgeCalls {
			if err := os.WriteFile(BridgeSysctlDir+"/"+name, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	return l
}

// udpFlow is a UDP flow from ns to addr (a listener in ns2).
func udpFlow(t *testing.T, name, from, to, network, addr string) flow {
	t.Helper()
	var recv, send *net.UDPConn
	inNetns(t, to, func() (err error) {
		recv, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		return err
	})
	t.Cleanup(func() { recv.Close() })
	inNetns(t, from, func() (err error) { send, err = net.DialUDP(network, nil, recv.LocalAddr().(*net.UDPAddr)); return err })
	t.Cleanup(func() { send.Close() })
	return flow{name: name, send: send, recv: recv}
}

// A port-to-port flow crosses two points, the source port's and the destination port's:
// one verdict offloads it at both, and the entry carries both labels. A port with no zone
// is never offloaded.
func TestNetnsOffloadPorts(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	l := newBridgeLab(t)
	offloadOn(t, l.hv, Spec{Ports: []string{"vpa", "vpb", "vpc"}, QueueNum: 5, QueueCount: 1,
		Offload: &Offload{Zones: map[string]uint16{"vpa": 3, "vpb": 4}}})
	var hits atomic.Int32
	stop := queueReader(t, l.hv, 5, offload.Mark, []byte("sgd-netfilter-test"), &hits)
	offloaded := []flow{
		udpFlow(t, "ipv4 a->b", l.pa, l.pb, "udp4", "192.0.2.12:0"),
		udpFlow(t, "ipv6 a->b", l.pa, l.pb, "udp6", "[2001:db8::12]:0"),
		udpFlow(t, "ipv4 b->a", l.pb, l.pa, "udp4", "192.0.2.11:0"),
	}
	never := []flow{
		udpFlow(t, "ipv4 a->c", l.pa, l.pc, "udp4", "192.0.2.13:0"),
		udpFlow(t, "ipv6 c->b", l.pc, l.pb, "udp6", "[2001:db8::12]:0"),
	}
	for _, fs := range []struct {
		flows []flow
		want  int32
	}{{offloaded, 1}, {never, 3}} {
		for _, f := range fs.flows {
			hits.Store(0)
			for i := range 3 {
				if !f.delivered(t, 2*time.Second) {
					t.Errorf("%s: datagram %d not delivered", f.name, i)
				}
			}
			if got := hits.Load(); got != fs.want {
				t.Errorf("%s: reader saw %d of 3 datagrams; want %d", f.name, got, fs.want)
			}
		}
	}
	conns := kernelConns(t, l.hv)
	cli := append(conntrackLabels(t, l.hv, "ipv4"), conntrackLabels(t, l.hv, "ipv6")...)
	for _, f := range offloaded {
		src, dst := udpEnds(f.send)
		c, ok := connOf(conns, src, dst)
		if !ok || !c.Labels.Has(3) || !c.Labels.Has(4) || c.Labels.Has(1) {
			t.Errorf("%s: entry %+v, %v; want labels 3 and 4", f.name, c, ok)
		}
		if m := labelsField.FindStringSubmatch(cliLine(cli, src, dst)); cli != nil && (m == nil || m[1] != "z3,z4") {
			t.Errorf("%s: conntrack -L -o labels: %v; want labels=z3,z4", f.name, m)
		}
	}
	// With vpc, only the other port's point is offloaded: the label is there, and the
	// packets still queue at vpc (above: 3 of 3).
	for i, f := range never {
		src, dst := udpEnds(f.send)
		want := offload.Labels{}.With(uint16(3 + i)) // vpa's for a->c, vpb's for c->b
		if c, ok := connOf(conns, src, dst); !ok || c.Labels != want {
			t.Errorf("%s: entry %+v, %v; want labels %x alone", f.name, c, ok, want)
		}
	}
	stop()
	for _, f := range offloaded {
		if !f.delivered(t, 2*time.Second) {
			t.Errorf("%s: offloaded flow not delivered with no reader", f.name)
		}
	}
	for _, f := range append([]flow{redial(t, l.pa, offloaded[0])}, never...) {
		if f.delivered(t, 300*time.Millisecond) {
			t.Errorf("%s: delivered with no reader; want it queued (dropped)", f.name)
		}
	}
}

// readSysctl reads a conntrack sysctl inside ns.
func readSysctl(t *testing.T, ns, name string) string {
	t.Helper()
	var v []byte
	inNetns(t, ns, func() (err error) { v, err = os.ReadFile(offload.SysctlDir + "/" + name); return err })
	return strings.TrimSpace(string(v))
}

func writeSysctl(t *testing.T, ns, name, v string) {
	t.Helper()
	inNetns(t, ns, func() error { return os.WriteFile(offload.SysctlDir+"/"+name, []byte(v), 0o644) })
}

// tcpPair connects from namespace a to a listener in b at addr and returns both ends.
func tcpPair(t *testing.T, a, b, network, addr string) (client, server net.Conn) {
	t.Helper()
	var ln net.Listener
	inNetns(t, b, func() (err error) { ln, err = net.Listen(network, addr); return err })
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	inNetns(t, a, func() (err error) {
		client, err = net.DialTimeout(network, ln.Addr().String(), 3*time.Second)
		return err
	})
	t.Cleanup(func() { client.Close() })
	select {
	case server = <-accepted:
	case <-time.After(3 * time.Second):
	}
	if server == nil {
		t.Fatal("no connection accepted")
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

func tcpEnds(c net.Conn) (src, dst netip.AddrPort) {
	return c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
}

// The interface's timeout policies govern its offloaded entries, in both families; and
// Remove, Prune and Restore leave nothing of sgd's behind.
func TestNetnsOffloadTimeouts(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ctx := context.Background()
	a, b, flows := vethPair(t)
	// Namespace defaults the policy must override, so the numbers below are the policy's.
	writeSysctl(t, b, "nf_conntrack_udp_timeout", "100")
	writeSysctl(t, b, "nf_conntrack_udp_timeout_stream", "150")
	before := saved(t, b)
	pol := offload.Timeouts{TCPEstablished: 60, UDP: 30, UDPStream: 60}
	tcp, udp := pol.Names()
	ensure(t, b, pol)
	m, sys := offloadOn(t, b, Spec{Interfaces: []string{"veth1"}, QueueNum: 6, QueueCount: 1,
		Offload: &Offload{Zones: map[string]uint16{"veth1": 1}, Timeouts: map[string][2]string{"veth1": {tcp, udp}}}})
	if readSysctl(t, b, "nf_conntrack_acct") != "1" || readSysctl(t, b, "nf_conntrack_events") != "1" {
		t.Fatalf("Sysctls.Enable: acct %s, events %s; want 1, 1", readSysctl(t, b, "nf_conntrack_acct"), readSysctl(t, b, "nf_conntrack_events"))
	}
	queueReader(t, b, 6, offload.Mark, nil, new(atomic.Int32))

	timeout := func(src, dst netip.AddrPort) uint32 {
		t.Helper()
		c, ok := connOf(kernelConns(t, b), src, dst)
		if !ok {
			t.Fatalf("no offloaded entry %s -> %s", src, dst)
		}
		return c.Timeout
	}
	for _, f := range []flow{flows[0], flows[2]} { // a -> b, IPv4 and IPv6: created at veth1
		src, dst := udpEnds(f.send)
		if !f.delivered(t, 2*time.Second) {
			t.Fatalf("%s: not delivered", f.name)
		}
		if got := timeout(src, dst); got > 30 || got < 25 {
			t.Errorf("%s: unreplied entry's timeout %d s; want the policy's udp 30 (namespace default 100)", f.name, got)
		}
		// A reply within 2 s of the entry's creation: the kernel keeps the udp timeout.
		if _, err := f.recv.WriteToUDPAddrPort([]byte("reply"), src); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		_ = f.send.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := f.send.Read(buf); err != nil {
			t.Fatalf("%s: reply not delivered: %v", f.name, err)
		}
		got := timeout(src, dst)
		t.Logf("%s: after a reply within 2 s: timeout %d s", f.name, got)
		if got > 30 {
			t.Errorf("%s: replied entry (within 2 s) timeout %d s; want <= 30 (nf_conntrack_proto_udp: stream only after 2 s)", f.name, got)
		}
	}
	time.Sleep(2200 * time.Millisecond)
	for _, f := range []flow{flows[0], flows[2]} {
		src, dst := udpEnds(f.send)
		if !f.delivered(t, 2*time.Second) {
			t.Fatalf("%s: not delivered", f.name)
		}
		got := timeout(src, dst)
		t.Logf("%s: a packet 2 s after a reply: timeout %d s", f.name, got)
		if got > 60 || got <= 30 {
			t.Errorf("%s: stream entry's timeout %d s; want the policy's udp_stream 60 (namespace default 150)", f.name, got)
		}
	}
	for _, x := range []struct{ network, addr string }{{"tcp4", "192.0.2.2:0"}, {"tcp6", "[2001:db8::2]:0"}} {
		c, srv := tcpPair(t, a, b, x.network, x.addr)
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		src, dst := tcpEnds(c)
		if got := timeout(src, dst); got > 60 || got < 50 {
			t.Errorf("%s: established entry's timeout %d s; want the policy's tcp_established 60 (default 432000)", x.network, got)
		}
	}

	// Stop: the rules go, then the policies (no rule names them now), then the sysctls.
	if err := m.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if now := saved(t, b); !slices.Equal(now, before) {
		t.Errorf("after Remove: ruleset\n%s\nwant (as before)\n%s", strings.Join(now, "\n"), strings.Join(before, "\n"))
	}
	var left map[string]uint32
	inNetns(t, b, func() (err error) {
		if err := offload.Prune(ctx, nil); err != nil {
			return err
		}
		left, err = offload.Policies(ctx)
		return err
	})
	if len(left) != 0 {
		t.Errorf("after Prune(nil): policies %v; want none", left)
	}
	inNetns(t, b, sys.Restore)
	if readSysctl(t, b, "nf_conntrack_acct") != "0" || readSysctl(t, b, "nf_conntrack_events") != "2" {
		t.Errorf("after Restore: acct %s, events %s; want the namespace's 0 and 2 back", readSysctl(t, b, "nf_conntrack_acct"), readSysctl(t, b, "nf_conntrack_events"))
	}
}

// The end of an offloaded entry, by its timeout or by Delete, reaches Listen with exact
// counters: every packet, though only the first was queued.
func TestNetnsOffloadEvents(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ctx := context.Background()
	_, b, flows := vethPair(t)
	// A short UDP policy, shorter than AWS allows: offload.Timeouts takes it, for tests.
	pol := offload.Timeouts{TCPEstablished: 60, UDP: 2, UDPStream: 2}
	tcp, udp := pol.Names()
	ensure(t, b, pol)
	offloadOn(t, b, Spec{Interfaces: []string{"veth1"}, QueueNum: 7, QueueCount: 1,
		Offload: &Offload{Zones: map[string]uint16{"veth1": 1}, Timeouts: map[string][2]string{"veth1": {tcp, udp}}}})
	var k *offload.Kernel
	inNetns(t, b, func() (err error) { k, err = offload.Open(ctx, nil); return err })
	defer k.Close()
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ended := make(chan offload.Conn, 16)
	go func() {
		_ = k.Listen(lctx, func(c offload.Conn) { ended <- c }, func(err error) { t.Errorf("lost: %v", err) })
	}()
	time.Sleep(100 * time.Millisecond)
	var hits atomic.Int32
	queueReader(t, b, 7, offload.Mark, []byte("sgd-count"), &hits)

	payload := []byte("sgd-count-0123456789") // 20 bytes
	send := func(f flow, n int) {
		t.Helper()
		buf := make([]byte, 64)
		for range n {
			if _, err := f.send.Write(payload); err != nil {
				t.Fatal(err)
			}
			_ = f.recv.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := f.recv.Read(buf); err != nil {
				t.Fatalf("%s: not delivered: %v", f.name, err)
			}
		}
	}
	wait := func(src, dst netip.AddrPort, poke bool) offload.Conn {
		t.Helper()
		deadline := time.After(15 * time.Second)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case c := <-ended:
				if c.Src == src.Addr().Unmap() && c.SrcPort == src.Port() && c.Dst == dst.Addr().Unmap() && c.DstPort == dst.Port() {
					return c
				}
			case <-tick.C:
				if poke {
					// A dump reaps expired entries at once; the kernel's own sweep
					// may take longer.
					_, _ = k.Dump(ctx)
				}
			case <-deadline:
				t.Fatalf("no destroy event for %s -> %s", src, dst)
			}
		}
	}

	// By timeout: 5 datagrams, IPv4 (20 + 8 bytes of headers each).
	f4 := flows[0]
	send(f4, 5)
	if got := hits.Load(); got != 1 {
		t.Errorf("reader saw %d of 5; want 1", got)
	}
	src, dst := udpEnds(f4.send)
	c := wait(src, dst, true)
	if c.OrigPackets != 5 || c.OrigBytes != 5*(20+8+uint64(len(payload))) || c.ReplyPackets != 0 {
		t.Errorf("expired %s: counters %d packets %d bytes, reply %d; want 5, %d, 0", f4.name, c.OrigPackets, c.OrigBytes, c.ReplyPackets, 5*(28+len(payload)))
	}
	if c.Mark&offload.Mark == 0 || c.Labels.Any() {
		t.Errorf("expired %s: mark %#x labels %x; want the mark and no labels (destroy events carry none)", f4.name, c.Mark, c.Labels)
	}

	// By Delete: 4 datagrams, IPv6 (40 + 8 bytes of headers each).
	f6 := flows[2]
	hits.Store(0)
	send(f6, 4)
	src, dst = udpEnds(f6.send)
	live, ok := connOf(kernelConns(t, b), src, dst)
	if !ok {
		t.Fatalf("no entry for %s", f6.name)
	}
	if err := k.Delete(ctx, live); err != nil {
		t.Fatal(err)
	}
	c = wait(src, dst, false)
	if c.ID != live.ID || c.OrigPackets != 4 || c.OrigBytes != 4*(40+8+uint64(len(payload))) {
		t.Errorf("deleted %s: id %d, %d packets %d bytes; want id %d, 4, %d", f6.name, c.ID, c.OrigPackets, c.OrigBytes, live.ID, 4*(48+len(payload)))
	}
	if hits.Load() != 1 {
		t.Errorf("reader saw %d of 4; want 1", hits.Load())
	}
}

// An entry whose first packet is still in the queue is not confirmed: Lookup does not
// find it until the verdict.
func TestNetnsOffloadUnconfirmed(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ctx := context.Background()
	_, b, flows := offloadPair(t, 8)
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	queueReaderFunc(t, b, 8, offload.Mark, func(p []byte) {
		if bytes.Contains(p, []byte("sgd-hold")) {
			once.Do(func() { close(held) })
			<-release
		}
	})
	var k *offload.Kernel
	inNetns(t, b, func() (err error) { k, err = offload.Open(ctx, nil); return err })
	defer k.Close()
	f := flows[0]
	src, dst := udpEnds(f.send)
	if _, err := f.send.Write([]byte("sgd-hold")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(3 * time.Second):
		t.Fatal("the datagram never reached the reader")
	}
	if c, ok, err := k.Lookup(ctx, 17, src.Addr(), dst.Addr(), src.Port(), dst.Port()); ok || err != nil {
		t.Errorf("Lookup while the first packet is queued = %v, %v, %v; want not found", c, ok, err)
	}
	close(release)
	_ = f.recv.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := f.recv.Read(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	c, ok, err := k.Lookup(ctx, 17, src.Addr(), dst.Addr(), src.Port(), dst.Port())
	if !ok || err != nil || !c.Labels.Has(1) {
		t.Errorf("Lookup after the verdict = %+v, %v, %v; want the entry, labelled 1", c, ok, err)
	}
	// By the reply tuple too.
	if c2, ok, err := k.Lookup(ctx, 17, dst.Addr(), src.Addr(), dst.Port(), src.Port()); !ok || err != nil || c2.ID != c.ID {
		t.Errorf("Lookup by the reply tuple = %+v, %v, %v; want entry %d", c2, ok, err, c.ID)
	}
}

// The real iptables takes the offload's rules and lists them as sgd writes them (CT's
// timeout names cut to 4 bytes: cutTimeout), replaces an older version's fast path left
// by a crash, and removal leaves others' rules, raw's included, as they were.
func TestNetnsOffloadRules(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNetns(t)
	nsSh(t, ns, "iptables", "-t", "raw", "-A", "PREROUTING", "-p", "udp", "--dport", "69", "-j", "CT", "--helper", "tftp")
	nsSh(t, ns, "ip6tables", "-t", "raw", "-A", "OUTPUT", "-d", "2001:db8::99", "-j", "CT", "--notrack")
	nsSh(t, ns, "iptables", "-A", "FORWARD", "-s", "192.0.2.99", "-j", "DROP")
	before := saved(t, ns)
	// An older sgd's fast path: the zone in a connmark field.
	for _, c := range [][]string{
		{"iptables", "-N", ChainSaveIn},
		{"iptables", "-A", ChainSaveIn, "-m", "mark", "!", "--mark", "0x0/0xff0000", "-j", "CONNMARK", "--save-mark", "--nfmask", "0xff0000", "--ctmask", "0xff0000"},
		{"iptables", "-I", "INPUT", "1", "-m", "comment", "--comment", "sgd", "-j", ChainSaveIn},
		{"iptables", "-t", "mangle", "-N", ChainInput},
		{"iptables", "-t", "mangle", "-A", ChainInput, "-i", "eth0", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-m", "connmark", "--mark", "0x10000/0xff0000", "-j", "ACCEPT"},
		{"iptables", "-t", "mangle", "-I", "INPUT", "1", "-m", "comment", "--comment", "sgd", "-j", ChainInput},
	} {
		nsSh(t, ns, c...)
	}
	ensure(t, ns, offload.Timeouts{TCPEstablished: 432000, UDP: 30, UDPStream: 180}, offload.Timeouts{TCPEstablished: 60, UDP: 30, UDPStream: 180})
	opts := DefaultOptions()
	opts.Netns = ns
	m := New(opts)
	for _, mm := range []*Manager{m, New(opts)} {
		if err := mm.Apply(ctx, offloadSpec); err != nil {
			t.Fatalf("Apply(offloadSpec) = %v", err)
		}
	}
	now := saved(t, ns)
	own, foreign := owned(now)
	if !slices.Equal(foreign, before) {
		t.Errorf("foreign rules =\n%s\nwant\n%s", strings.Join(foreign, "\n"), strings.Join(before, "\n"))
	}
	if want := wantOwned(m, offloadSpec); !sameLines(own, want) {
		t.Errorf("sgd's rules =\n%s\nwant\n%s", strings.Join(own, "\n"), strings.Join(want, "\n"))
	}
	// raw's jump comes after the user's CT rule.
	helper := slices.Index(now, "iptables raw -A PREROUTING -p udp -m udp --dport 69 -j CT --helper tftp")
	jump := slices.Index(now, "iptables raw -A PREROUTING -j "+ChainRawPre)
	if helper < 0 || jump < helper {
		t.Errorf("raw PREROUTING: user's CT rule at %d, sgd's jump at %d; want the jump after it", helper, jump)
	}
	off := offloadSpec
	off.Offload = nil
	if err := m.Apply(ctx, off); err != nil {
		t.Fatal(err)
	}
	if own, _ := owned(saved(t, ns)); !sameLines(own, wantOwned(m, off)) {
		t.Errorf("after Apply without Offload: sgd's rules =\n%s\nwant\n%s", strings.Join(own, "\n"), strings.Join(wantOwned(m, off), "\n"))
	}
	if err := m.Apply(ctx, offloadSpec); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if now := saved(t, ns); !slices.Equal(now, before) {
		t.Errorf("after Remove:\n%s\nwant\n%s", strings.Join(now, "\n"), strings.Join(before, "\n"))
	}
}
