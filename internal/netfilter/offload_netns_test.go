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
	"strings"
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
func offloadOn(t *testing.T, ns string, spec Spec) *Manager {
	t.Helper()
	var sys offload.Sysctls
	inNetns(t, ns, func() error { _, err := sys.Enable(); return err })
	t.Cleanup(func() { inNetns(t, ns, sys.Restore) })
	opts := DefaultOptions()
	opts.Netns = ns
	m := New(opts)
	t.Cleanup(func() { _ = m.Remove(context.Background()) })
	if err := m.Apply(context.Background(), spec); err != nil {
		t.Fatalf("Apply(%+v) = %v", spec, err)
	}
	return m
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
// entry.
func conntrackLabels(t *testing.T, ns, family string) []string {
	t.Helper()
	if _, err := exec.LookPath("conntrack"); err != nil {
		t.Skip("skipping the cross-check: conntrack (conntrack-tools) is not installed")
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
	a, b, flows := vethPair(t)
	offloadOn(t, b, Spec{Interfaces: []string{"veth1"}, QueueNum: 2, QueueCount: 1, Offload: &Offload{Zones: map[string]uint16{"veth1": 1}}})
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
		if m := labelsField.FindStringSubmatch(line); m == nil || m[1] != "z1" {
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
	a, b, _ := vethPair(t)
	offloadOn(t, b, Spec{Interfaces: []string{"veth1"}, QueueNum: 3, QueueCount: 1, Offload: &Offload{Zones: map[string]uint16{"veth1": 1}}})
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
	a, b, _ := vethPair(t)
	offloadOn(t, b, Spec{Interfaces: []string{"veth1"}, QueueNum: 4, QueueCount: 1, Offload: &Offload{Zones: map[string]uint16{"veth1": 1}}})
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
		if m := labelsField.FindStringSubmatch(cliLine(cli, src, dst)); m == nil || m[1] != "z3,z4" {
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
