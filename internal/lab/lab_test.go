package lab

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func newLab(t *testing.T, prefix string) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab tests need root (network namespaces); run as root to include them")
	}
	l, err := New(prefix)
	if err != nil {
		t.Skipf("no network namespaces here: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Cleanup(); err != nil {
			t.Errorf("Cleanup() = %v; want nil", err)
		}
	})
	return l
}

func TestPairSocketsAndCleanup(t *testing.T) {
	l := newLab(t, "sgd-labtest")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := &Host{Role: "a", Dev: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8::1/64")}}
	b := &Host{Role: "b", Dev: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8::2/64")}}
	if err := l.Pair(ctx, a, b); err != nil {
		t.Fatalf("Pair() = %v", err)
	}
	for _, addr := range []string{"192.0.2.1:7000", "[2001:db8::1]:7000"} {
		ln, err := Listen(a.NS, "tcp", addr)
		if err != nil {
			t.Fatalf("Listen(%s, %s) = %v", a.NS, addr, err)
		}
		go func() {
			c, err := ln.Accept()
			if err == nil {
				io.WriteString(c, "hello")
				c.Close()
			}
		}()
		c, err := DialContext(ctx, b.NS, "tcp", addr)
		if err != nil {
			t.Fatalf("DialContext(%s, %s) = %v", b.NS, addr, err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		ln.Close()
		if string(got) != "hello" {
			t.Errorf("read from %s = %q; want %q", addr, got, "hello")
		}
	}
	// The host's namespace does not have the lab's addresses.
	if c, err := net.DialTimeout("tcp", "192.0.2.1:7000", 200*time.Millisecond); err == nil {
		c.Close()
		t.Errorf("dial 192.0.2.1:7000 from the host's namespace succeeded; want failure")
	}
	if err := Sysctl(b.NS, "net.ipv4.tcp_tw_reuse", "1"); err != nil {
		t.Fatalf("Sysctl() = %v", err)
	}
	if out, err := l.Run(ctx, b.NS, "cat", "/proc/sys/net/ipv4/tcp_tw_reuse"); err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("tcp_tw_reuse in %s = %q, %v; want 1", b.NS, out, err)
	}

	p, err := l.Start(a.NS, "sleeper", "sh", "-c", "echo ready; exec sleep 60")
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	if err := p.WaitFor(ctx, "ready"); err != nil {
		t.Fatalf("WaitFor() = %v", err)
	}
	if comm, _ := os.ReadFile("/proc/" + itoa(p.PID()) + "/comm"); strings.TrimSpace(string(comm)) != "sh" && strings.TrimSpace(string(comm)) != "sleep" {
		t.Errorf("PID %d is %q; want the program itself (ip netns exec execs in place)", p.PID(), comm)
	}
	names := l.Namespaces()
	if err := l.Cleanup(); err != nil {
		t.Fatalf("Cleanup() = %v", err)
	}
	if err := l.Cleanup(); err != nil {
		t.Fatalf("second Cleanup() = %v; want nil (idempotent)", err)
	}
	for _, ns := range names {
		if Exists(ns) {
			t.Errorf("namespace %s still exists after Cleanup", ns)
		}
	}
	if !p.exited() {
		t.Errorf("process %d still runs after Cleanup", p.PID())
	}
}

func TestStarBridges(t *testing.T) {
	l := newLab(t, "sgd-labtest")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hosts := []*Host{
		{Role: "h1", Dev: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.11/24")}},
		{Role: "h2", Dev: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.12/24")}},
		{Role: "h3", Dev: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.13/24")}},
	}
	if err := l.Star(ctx, "sw", hosts...); err != nil {
		t.Fatalf("Star() = %v", err)
	}
	ln, err := Listen(hosts[0].NS, "tcp4", "192.0.2.11:7001")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for _, h := range hosts[1:] {
		c, err := DialContext(ctx, h.NS, "tcp4", "192.0.2.11:7001")
		if err != nil {
			t.Errorf("dial from %s through the bridge = %v", h.Role, err)
			continue
		}
		c.Close()
	}
}

func TestSweepRemovesDeadLabs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("lab tests need root (network namespaces)")
	}
	// A namespace named like a lab of a process that no longer exists.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := "sgd-sweeptest-" + itoa(cmd.Process.Pid) + "-x"
	if out, err := exec.Command("ip", "netns", "add", dead).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	live := "sgd-sweeptest-" + itoa(os.Getpid()) + "-y"
	if out, err := exec.Command("ip", "netns", "add", live).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", live).Run()
	defer exec.Command("ip", "netns", "del", dead).Run()
	removed, err := Sweep("sgd-sweeptest")
	if err != nil {
		t.Fatalf("Sweep() = %v", err)
	}
	if len(removed) != 1 || removed[0] != dead {
		t.Errorf("Sweep() removed %v; want [%s]", removed, dead)
	}
	if Exists(dead) || !Exists(live) {
		t.Errorf("after Sweep: %s exists %v (want false), %s exists %v (want true)", dead, Exists(dead), live, Exists(live))
	}
}

func TestDoUnknownNamespace(t *testing.T) {
	err := Do("sgd-no-such-namespace", func() error { return nil })
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Do(missing) = %v; want a not-exist error", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// A capture inside a namespace sees the frames its stack receives and sends, with the
// direction, and only those of its own interface.
func TestCapture(t *testing.T) {
	l := newLab(t, "sgd-labtest")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := &Host{Role: "a", Dev: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}}
	b := &Host{Role: "b", Dev: "eth0", Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24")}}
	if err := l.Pair(ctx, a, b); err != nil {
		t.Fatalf("Pair() = %v", err)
	}
	if _, err := StartCapture(b.NS, "nosuch0"); err == nil {
		t.Error("StartCapture(nosuch0) = nil error; want one")
	}
	capA, err := StartCapture(a.NS, "eth0")
	if err != nil {
		t.Fatalf("StartCapture(%s, eth0) = %v", a.NS, err)
	}
	capB, err := StartCapture(b.NS, "eth0")
	if err != nil {
		t.Fatalf("StartCapture(%s, eth0) = %v", b.NS, err)
	}
	start := time.Now()
	sink, err := ListenPacket(a.NS, "udp4", "192.0.2.1:9") // no ICMP port unreachable back
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	pc, err := ListenPacket(b.NS, "udp4", "192.0.2.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	payload := []byte("sgd lab capture")
	if _, err := pc.WriteTo(payload, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	count := func(frames []Frame, out bool) int {
		n := 0
		for _, f := range frames {
			if f.Outgoing == out && strings.Contains(string(f.Data), string(payload)) {
				n++
				if f.Time.Before(start.Add(-time.Second)) || f.Time.After(time.Now()) {
					t.Errorf("frame time %v; want between %v and now", f.Time, start)
				}
				if f.Len != len(f.Data) {
					t.Errorf("frame Len %d, len(Data) %d; want equal (small frame)", f.Len, len(f.Data))
				}
			}
		}
		return n
	}
	fb, err := capB.Stop()
	if err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	fa, err := capA.Stop()
	if err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	if out, in := count(fb, true), count(fb, false); out != 1 || in != 0 {
		t.Errorf("b's capture: the datagram out %d, in %d; want 1, 0", out, in)
	}
	if out, in := count(fa, true), count(fa, false); out != 0 || in != 1 {
		t.Errorf("a's capture: the datagram out %d, in %d; want 0, 1", out, in)
	}
	if again, _ := capA.Stop(); len(again) != len(fa) {
		t.Errorf("second Stop() gave %d frames; want %d", len(again), len(fa))
	}
}
