//go:build linux

package offload

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/lab"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// fill creates n entries of sgd's (Mark, label 5) in ns through ctnetlink, UDP from
// 192.0.2.1 to 192.0.2.2:53 with distinct source ports and addresses.
func fill(b *testing.B, ns string, n int) {
	b.Helper()
	in(b, ns, func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range n {
			src := netip.AddrFrom4([4]byte{198, 51, 100, byte(i >> 16)})
			f := conntrack.NewFlow(ipproto.UDP, conntrack.StatusConfirmed, src, netip.MustParseAddr("192.0.2.2"), uint16(i), 53, 600, Mark)
			f.Labels, f.LabelsMask = labelBytes(Labels{}.With(5)), labelBytes(Labels{}.With(5))
			if err := c.Create(f); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
		}
		return nil
	})
}

// benchNS is a namespace with conntrack, room for labels and destroy events on.
func benchNS(b *testing.B, role string) string {
	b.Helper()
	ns := newNS(b, role)
	if err := nsRun(b, ns, "iptables", "-A", "INPUT", "-m", "connlabel", "--label", "1"); err != nil {
		b.Fatal(err)
	}
	if err := lab.Sysctl(ns, "net.netfilter.nf_conntrack_events", "1"); err != nil {
		b.Fatal(err)
	}
	return ns
}

// cpuTime is the process's user and system time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkNetnsDump dumps a table of 10 000 entries of sgd's (an op is one Dump);
// cpu-ns/entry is the process's CPU time, system calls included, per entry.
func BenchmarkNetnsDump(b *testing.B) {
	const n = 10000
	ns := benchNS(b, "bdump")
	fill(b, ns, n)
	var k *Kernel
	in(b, ns, func() (err error) { k, err = Open(context.Background(), nil); return err })
	defer k.Close()
	b.ReportAllocs()
	cpu := cpuTime(b)
	b.ResetTimer()
	for b.Loop() {
		conns, err := k.Dump(context.Background())
		if err != nil || len(conns) != n {
			b.Fatalf("Dump() = %d entries, %v; want %d", len(conns), err, n)
		}
	}
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N)/n, "cpu-ns/entry")
}

// BenchmarkNetnsListen hears the destruction of b.N entries of sgd's (run it with
// -benchtime Nx: an op is one destroy event delivered); cpu-ns/op is the process's CPU
// time, system calls included.
func BenchmarkNetnsListen(b *testing.B) {
	ns := benchNS(b, "blisten")
	if b.N > 200000 {
		b.Skip("skipping: run with -benchtime Nx, N up to 200000 entries")
	}
	fill(b, ns, b.N)
	var k *Kernel
	in(b, ns, func() (err error) { k, err = Open(context.Background(), nil); return err })
	defer k.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ended atomic.Int64
	all := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- k.Listen(ctx, func(Conn) {
			if ended.Add(1) == int64(b.N) {
				close(all)
			}
		}, func(err error) { b.Errorf("lost: %v", err) })
	}()
	time.Sleep(100 * time.Millisecond) // let Listen join the group
	b.ReportAllocs()
	cpu := cpuTime(b)
	b.ResetTimer()
	go func() { _ = nsRun(b, ns, "conntrack", "-F") }()
	select {
	case <-all:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d destroy events delivered", ended.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "cpu-ns/op")
	cancel()
	<-done
}
