//go:build linux

package offload

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/lab"
)

// These tests run in network namespaces of their own (internal/lab), never in the
// host's: policies, entries and rules exist only there.

func newNS(t testing.TB, role string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root for network namespaces")
	}
	for _, bin := range []string{"ip", "iptables", "ip6tables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s not found", bin)
		}
	}
	l, err := lab.New("sgd-offt-" + role)
	if err != nil {
		t.Skipf("skipping: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Cleanup(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	ns, err := l.AddNamespace(context.Background(), role)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// in runs f on a thread inside ns.
func in(t testing.TB, ns string, f func() error) {
	t.Helper()
	if err := lab.Do(ns, f); err != nil {
		t.Fatal(err)
	}
}

func nsRun(t testing.TB, ns string, argv ...string) error {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...).CombinedOutput()
	if err != nil {
		return errors.New(strings.TrimSpace(string(out)))
	}
	return nil
}

func policies(t *testing.T, ns string) map[string]uint32 {
	t.Helper()
	var p map[string]uint32
	in(t, ns, func() (err error) { p, err = Policies(context.Background()); return err })
	return p
}

func TestNetnsPolicies(t *testing.T) {
	t.Parallel()
	ns := newNS(t, "pol")
	ctx := context.Background()
	a := Timeouts{TCPEstablished: 60, UDP: 30, UDPStream: 60}
	b := Timeouts{TCPEstablished: 432000, UDP: 30, UDPStream: 180}
	for range 2 { // idempotent
		in(t, ns, func() error { return Ensure(ctx, []Timeouts{a, b}) })
	}
	want := []string{"sgd-tcp-432000-ipv4", "sgd-tcp-432000-ipv6", "sgd-tcp-60-ipv4", "sgd-tcp-60-ipv6",
		"sgd-udp-30-180-ipv4", "sgd-udp-30-180-ipv6", "sgd-udp-30-60-ipv4", "sgd-udp-30-60-ipv6"}
	got := policies(t, ns)
	if names := sortedKeys(got); !slices.Equal(names, want) {
		t.Fatalf("after Ensure: policies %v; want %v", names, want)
	}

	// The objects hold the values (read back from the kernel).
	objs := kernelObjects(t, ns)
	if o := objs["sgd-udp-30-60-ipv6"]; o.l3 != unix.AF_INET6 || o.l4 != 17 || o.values[attrUDPUnreplied] != 30 || o.values[attrUDPReplied] != 60 {
		t.Errorf("sgd-udp-30-60-ipv6 = %+v; want AF_INET6, UDP, 30/60", o)
	}
	if o := objs["sgd-tcp-60-ipv4"]; o.l3 != unix.AF_INET || o.l4 != 6 || o.values[attrTCPEstablished] != 60 || o.values[1] == 0 {
		t.Errorf("sgd-tcp-60-ipv4 = %+v; want AF_INET, TCP, established 60 and the defaults for the rest", o)
	}

	// An object of sgd's name with other values (changed by hand) is put right in place;
	// one of another family is reported.
	for _, o := range []object{
		{name: "sgd-tcp-60-ipv4", l3: unix.AF_INET, l4: 6, values: map[uint16]uint32{attrTCPEstablished: 5}},
		{name: "other-udp", l3: unix.AF_INET, l4: 17, values: map[uint16]uint32{1: 10}},                      // someone else's
		{name: "sgd-tcp-7-ipv4", l3: unix.AF_INET6, l4: 6, values: map[uint16]uint32{attrTCPEstablished: 7}}, // misplaced
	} {
		in(t, ns, func() error {
			return withObjects(ctx, func(c *netfilter.Conn, _ map[string]object) error { return newObject(ctx, c, o) })
		})
	}
	in(t, ns, func() error { return Ensure(ctx, []Timeouts{a}) })
	objs = kernelObjects(t, ns)
	if v := objs["sgd-tcp-60-ipv4"].values[attrTCPEstablished]; v != 60 {
		t.Errorf("after Ensure, sgd-tcp-60-ipv4 established = %d; want 60 (replaced)", v)
	}
	var err error
	_ = lab.Do(ns, func() error { err = Ensure(ctx, []Timeouts{{7, 30, 60}}); return nil })
	if err == nil || !strings.Contains(err.Error(), "sgd-tcp-7-ipv4 exists for family 10") {
		t.Errorf("Ensure over an object of the wrong family = %v; want it reported", err)
	}

	// Measured: the CT target takes a policy of its own family only, so each family has
	// its own object.
	if err := nsRun(t, ns, "ip6tables", "-t", "raw", "-A", "PREROUTING", "-p", "udp", "-j", "CT", "--timeout", "sgd-udp-30-60-ipv4"); err == nil {
		t.Error("ip6tables took CT --timeout with an IPv4 policy; want it refused (nf_ct_set_timeout: l3num)")
	}
	if err := nsRun(t, ns, "ip6tables", "-t", "raw", "-A", "PREROUTING", "-p", "udp", "-j", "CT", "--timeout", "sgd-udp-30-60-ipv6"); err != nil {
		t.Fatalf("ip6tables CT --timeout sgd-udp-30-60-ipv6: %v", err)
	}
	if n := policies(t, ns)["sgd-udp-30-60-ipv6"]; n != 2 {
		t.Errorf("sgd-udp-30-60-ipv6 used %d times; want 2 (the object and the rule)", n)
	}

	// Prune keeps what is asked, and what a rule names (EBUSY), and others' objects.
	in(t, ns, func() error { return Prune(ctx, []Timeouts{b}) })
	want = []string{"sgd-tcp-432000-ipv4", "sgd-tcp-432000-ipv6", "sgd-udp-30-180-ipv4", "sgd-udp-30-180-ipv6", "sgd-udp-30-60-ipv6"}
	if names := sortedKeys(policies(t, ns)); !slices.Equal(names, want) {
		t.Errorf("after Prune(keep b): policies %v; want %v (sgd-udp-30-60-ipv6 in use)", names, want)
	}
	if err := nsRun(t, ns, "ip6tables", "-t", "raw", "-F", "PREROUTING"); err != nil {
		t.Fatal(err)
	}
	in(t, ns, func() error { return Prune(ctx, nil) })
	if p := policies(t, ns); len(p) != 0 {
		t.Errorf("after the rule went and Prune(nil): policies %v; want none", p)
	}
	objs = kernelObjects(t, ns)
	if _, ok := objs["other-udp"]; !ok {
		t.Errorf("Prune removed someone else's object other-udp (only sgd-* are sgd's)")
	}
}

// kernelObjects lists the timeout objects in ns.
func kernelObjects(t *testing.T, ns string) map[string]object {
	t.Helper()
	var objs map[string]object
	in(t, ns, func() error {
		return withObjects(context.Background(), func(_ *netfilter.Conn, have map[string]object) error {
			objs = have
			return nil
		})
	})
	return objs
}

func sortedKeys(m map[string]uint32) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestNetnsKernelDefaults(t *testing.T) {
	t.Parallel()
	ns := newNS(t, "def")
	if err := lab.Sysctl(ns, "net.netfilter.nf_conntrack_udp_timeout_stream", "150"); err != nil {
		t.Fatal(err)
	}
	var d Timeouts
	in(t, ns, func() (err error) { d, err = KernelDefaults(); return err })
	if d.UDPStream != 150 || d.UDP == 0 || d.TCPEstablished == 0 {
		t.Errorf("KernelDefaults() in %s = %+v; want udp_stream 150 (set there) and the others", ns, d)
	}
}

// Entries made through ctnetlink stand in for traffic: Dump and Listen keep sgd's (label
// and mark), Lookup finds an entry by either tuple, Delete ends one and Listen hears it.
func TestNetnsKernel(t *testing.T) {
	t.Parallel()
	ns := newNS(t, "ker")
	ctx := context.Background()
	// The kernel gives entries room for labels only while a connlabel rule exists.
	if err := nsRun(t, ns, "iptables", "-A", "INPUT", "-m", "connlabel", "--label", "1"); err != nil {
		t.Fatal(err)
	}
	if err := lab.Sysctl(ns, "net.netfilter.nf_conntrack_events", "1"); err != nil {
		t.Fatal(err)
	}
	var k *Kernel
	in(t, ns, func() (err error) { k, err = Open(ctx, nil); return err })
	defer k.Close()

	lctx, cancel := context.WithCancel(ctx)
	var (
		mu    sync.Mutex
		ended []Conn
	)
	listening := make(chan error, 1)
	go func() {
		listening <- k.Listen(lctx, func(c Conn) {
			mu.Lock()
			ended = append(ended, c)
			mu.Unlock()
		}, func(err error) { t.Errorf("lost events: %v", err) })
	}()
	time.Sleep(100 * time.Millisecond) // let Listen join the group

	labels := func(zs ...uint16) []byte {
		var l Labels
		for _, z := range zs {
			l = l.With(z)
		}
		b := make([]byte, 16)
		for i := range 2 {
			for j := range 8 {
				b[8*i+j] = byte(l[i] >> (8 * j))
			}
		}
		return b
	}
	v4 := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	mk := func(proto uint8, src, dst string, sp, dp uint16, mark uint32, zs ...uint16) conntrack.Flow {
		f := conntrack.NewFlow(proto, conntrack.StatusConfirmed, v4(src), v4(dst), sp, dp, 120, mark)
		if len(zs) > 0 {
			f.Labels, f.LabelsMask = labels(zs...), labels(1, 2, 3, 4, 5, 6, 7, 8, 100, 127)
		}
		if proto == 1 {
			f.TupleOrig.Proto.ICMPType, f.TupleOrig.Proto.ICMPID = 8, sp
			f.TupleReply.Proto.ICMPType, f.TupleReply.Proto.ICMPID = 0, sp
		}
		return f
	}
	flows := []conntrack.Flow{
		mk(17, "192.0.2.1", "192.0.2.2", 1000, 53, Mark|0x5, 3, 100), // sgd's, a foreign mark bit too
		mk(6, "2001:db8::1", "2001:db8::2", 40000, 443, Mark, 127),   // sgd's, IPv6
		mk(17, "192.0.2.1", "192.0.2.2", 1001, 53, 0x5),              // not sgd's
		mk(1, "192.0.2.1", "192.0.2.2", 77, 77, Mark, 8),             // echo, sgd's
	}
	in(t, ns, func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for _, f := range flows {
			if err := c.Create(f); err != nil {
				return err
			}
		}
		return nil
	})

	conns, err := k.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 3 {
		t.Fatalf("Dump() = %v; want the 3 entries of sgd's", conns)
	}
	byPort := map[uint16]Conn{}
	for _, c := range conns {
		byPort[c.SrcPort] = c
	}
	if c := byPort[1000]; c.Proto != 17 || c.Dst != v4("192.0.2.2") || c.DstPort != 53 || !c.Labels.Has(3) || !c.Labels.Has(100) || c.Labels.Has(4) || c.Timeout == 0 || c.Timeout > 120 {
		t.Errorf("Dump entry 1000 = %+v; want UDP to 192.0.2.2:53 with labels 3, 100 and a timeout <= 120", c)
	}
	if c := byPort[40000]; c.Proto != 6 || !c.Src.Is6() || !c.Labels.Has(127) {
		t.Errorf("Dump entry 40000 = %+v; want the IPv6 TCP entry with label 127", c)
	}
	if c := byPort[77]; c.Proto != 1 || c.DstPort != 77 || !c.Labels.Has(8) {
		t.Errorf("Dump echo entry = %+v; want ICMP with the echo id in both ports, label 8", c)
	}

	// Lookup by the original and by the reply tuple, and not found.
	for _, q := range []struct {
		proto        uint8
		src, dst     string
		sport, dport uint16
		found        bool
		wantSrcPort  uint16
	}{
		{17, "192.0.2.1", "192.0.2.2", 1000, 53, true, 1000},
		{17, "192.0.2.2", "192.0.2.1", 53, 1000, true, 1000},
		{17, "192.0.2.1", "192.0.2.2", 1001, 53, true, 1001}, // not sgd's, but there
		{17, "192.0.2.1", "192.0.2.2", 1002, 53, false, 0},
		{6, "2001:db8::2", "2001:db8::1", 443, 40000, true, 40000},
		{1, "192.0.2.1", "192.0.2.2", 77, 77, true, 77},
		{1, "192.0.2.2", "192.0.2.1", 77, 77, true, 77}, // the reply direction
		{1, "192.0.2.1", "192.0.2.2", 78, 78, false, 0},
	} {
		c, ok, err := k.Lookup(ctx, q.proto, v4(q.src), v4(q.dst), q.sport, q.dport)
		if err != nil || ok != q.found || (ok && c.SrcPort != q.wantSrcPort) {
			t.Errorf("Lookup(%d, %s:%d -> %s:%d) = %v, %v, %v; want found %v with source port %d", q.proto, q.src, q.sport, q.dst, q.dport, c, ok, err, q.found, q.wantSrcPort)
		}
	}

	// Delete ends the entry (and only that one); Listen hears sgd's endings only.
	for _, port := range []uint16{1000, 77, 40000} {
		if err := k.Delete(ctx, byPort[port]); err != nil {
			t.Fatalf("Delete(%v) = %v", byPort[port], err)
		}
	}
	if err := k.Delete(ctx, byPort[1000]); err != nil {
		t.Errorf("Delete of an entry already gone = %v; want nil", err)
	}
	in(t, ns, func() error { // not sgd's: no event for it
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Delete(flows[2])
	})
	if _, ok, _ := k.Lookup(ctx, 17, v4("192.0.2.1"), v4("192.0.2.2"), 1000, 53); ok {
		t.Error("Lookup after Delete found the entry")
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		mu.Lock()
		n := len(ended)
		mu.Unlock()
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // room for an unwanted fourth
	mu.Lock()
	got := slices.Clone(ended)
	mu.Unlock()
	var ports []uint16
	for _, c := range got {
		ports = append(ports, c.SrcPort)
		if c.ID == 0 || c.Mark&Mark == 0 {
			t.Errorf("ended %+v: want an id and the mark", c)
		}
	}
	slices.Sort(ports)
	if !slices.Equal(ports, []uint16{77, 1000, 40000}) {
		t.Errorf("Listen delivered %v; want the three of sgd's deleted (77, 1000, 40000)", got)
	}
	cancel()
	select {
	case err := <-listening:
		if err != nil {
			t.Errorf("Listen after its context ended = %v; want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Error("Listen did not return after its context ended")
	}

}

// When the listener falls behind and the kernel drops events, lost is called and
// listening goes on.
func TestNetnsListenLost(t *testing.T) {
	t.Parallel()
	ns := newNS(t, "lost")
	ctx := context.Background()
	if err := lab.Sysctl(ns, "net.netfilter.nf_conntrack_events", "1"); err != nil {
		t.Fatal(err)
	}
	var k *Kernel
	in(t, ns, func() (err error) { k, err = Open(ctx, nil); return err })
	defer k.Close()
	k.eventBuffer = 4096 // a few events' worth
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lostN, endedN atomic.Int32
	block := make(chan struct{})
	go func() {
		_ = k.Listen(lctx, func(Conn) {
			<-block // the caller is busy: events pile up in the socket
			endedN.Add(1)
		}, func(error) { lostN.Add(1) })
	}()
	time.Sleep(100 * time.Millisecond)
	const n = 400
	in(t, ns, func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range n {
			f := conntrack.NewFlow(17, conntrack.StatusConfirmed, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), uint16(10000+i), 53, 60, Mark)
			if err := c.Create(f); err != nil {
				return err
			}
		}
		return c.Flush()
	})
	close(block)
	deadline := time.Now().Add(5 * time.Second)
	for lostN.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if lostN.Load() == 0 {
		t.Fatalf("lost never called (%d of %d endings delivered)", endedN.Load(), n)
	}
	// Still listening: a later ending arrives.
	before := endedN.Load()
	in(t, ns, func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		f := conntrack.NewFlow(17, conntrack.StatusConfirmed, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), 9999, 53, 60, Mark)
		if err := c.Create(f); err != nil {
			return err
		}
		return c.Delete(f)
	})
	deadline = time.Now().Add(3 * time.Second)
	for endedN.Load() == before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if endedN.Load() == before {
		t.Error("no ending delivered after the loss: Listen stopped")
	}
	t.Logf("%d of %d endings delivered, lost called %d times", endedN.Load(), n+1, lostN.Load())
}

// Unlabel takes sgd's label bits and Mark off an entry and leaves the rest: the user's
// label bit 0 and mark bits, and the entry itself.
func TestNetnsUnlabel(t *testing.T) {
	t.Parallel()
	ns := newNS(t, "unl")
	ctx := context.Background()
	if err := nsRun(t, ns, "iptables", "-A", "INPUT", "-m", "connlabel", "--label", "1"); err != nil {
		t.Fatal(err)
	}
	var k *Kernel
	in(t, ns, func() (err error) { k, err = Open(ctx, nil); return err })
	defer k.Close()
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	f := conntrack.NewFlow(17, conntrack.StatusConfirmed, src, dst, 1000, 53, 120, Mark|0x5)
	l := Labels{}.With(3).With(100)
	l[0] |= 1 // bit 0: not sgd's
	f.Labels, f.LabelsMask = labelBytes(l), labelBytes(Labels{^uint64(0), ^uint64(0)})
	in(t, ns, func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		return c.Create(f)
	})
	conns, err := k.Dump(ctx)
	if err != nil || len(conns) != 1 {
		t.Fatalf("Dump() = %v, %v; want the one entry", conns, err)
	}
	if err := k.Unlabel(ctx, conns[0]); err != nil {
		t.Fatal(err)
	}
	if conns, err = k.Dump(ctx); err != nil || len(conns) != 0 {
		t.Errorf("Dump() after Unlabel = %v, %v; want nothing of sgd's", conns, err)
	}
	c, ok, err := k.Lookup(ctx, 17, src, dst, 1000, 53)
	if err != nil || !ok {
		t.Fatalf("Lookup after Unlabel = %v, %v; want the entry still there", ok, err)
	}
	if c.Mark != 0x5 || c.Labels != (Labels{1, 0}) {
		t.Errorf("after Unlabel: mark %#x, labels %v; want 0x5 and bit 0 alone", c.Mark, c.Labels)
	}
	if err := k.Unlabel(ctx, Conn{Proto: 17, Src: src, Dst: dst, SrcPort: 1, DstPort: 2}); err != nil {
		t.Errorf("Unlabel of an entry that is not there = %v; want nil", err)
	}
}

// TestNetnsDestroyFilter: Listen's socket filter lets through the destroy events of
// entries whose mark has Mark (alone or with other bits) and drops the others in the
// kernel; a second socket without the filter, subscribed alike, receives all of them, so
// the events were sent and the filter is what dropped them.
func TestNetnsDestroyFilter(t *testing.T) {
	t.Parallel()
	ns := newNS(t, "flt")
	if err := lab.Sysctl(ns, "net.netfilter.nf_conntrack_events", "1"); err != nil {
		t.Fatal(err)
	}
	var k *Kernel
	in(t, ns, func() (err error) { k, err = Open(context.Background(), nil); return err })
	defer k.Close()
	subscribe := func(filtered bool) *reader {
		c, err := k.dial()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if filtered {
			err = joinDestroys(c)
		} else {
			err = c.JoinGroup(uint32(netfilter.GroupCTDestroy))
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
			t.Fatal(err)
		}
		r, err := newReader(c)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	filtered, all := subscribe(true), subscribe(false)

	marks := map[uint16]uint32{1000: Mark, 1001: Mark | 0x5, 1002: 0x5, 1003: 0, 1004: ^Mark}
	in(t, ns, func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for _, port := range slices.Sorted(maps.Keys(marks)) {
			f := conntrack.NewFlow(ipproto.UDP, conntrack.StatusConfirmed, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), port, 53, 120, marks[port])
			if err := c.Create(f); err != nil {
				return err
			}
			if err := c.Delete(f); err != nil {
				return err
			}
		}
		return nil
	})
	ends := func(r *reader, want int) []uint16 {
		var ports []uint16
		for len(ports) < want {
			b, err := r.read()
			if err != nil {
				break // the deadline: what came is all
			}
			var conn Conn
			for ms := (nlmsgs{b: b}); ms.next(); {
				if typ, ok := parseConn(ms.msg, &conn); ok && typ == msgCTDelete {
					ports = append(ports, conn.SrcPort)
				}
			}
		}
		slices.Sort(ports)
		return ports
	}
	if got := ends(all, len(marks)); !slices.Equal(got, []uint16{1000, 1001, 1002, 1003, 1004}) {
		t.Fatalf("the unfiltered socket received the ends of %v; want all five entries' (1000–1004)", got)
	}
	if got := ends(filtered, len(marks)); !slices.Equal(got, []uint16{1000, 1001}) {
		t.Errorf("the filtered socket received the ends of %v; want only the two entries with Mark (1000, 1001)", got)
	}
}
