package conntrack

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// nthFlow returns the i-th of up to 3.9e9 distinct TCP tuples (IPv4).
func nthFlow(i int) Tuple {
	return Tuple{
		Proto:   ipproto.TCP,
		Src:     netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}),
		Dst:     netip.AddrFrom4([4]byte{198, 51, 100, byte(i / (256 * 60000))}),
		SrcPort: uint16(1024 + (i>>8)%60000),
		DstPort: 443,
	}
}

// filled returns a table holding n established TCP flows nthFlow(0..n-1).
func filled(tb testing.TB, n, capacity int) *Table {
	t := New(Config{Capacity: capacity})
	for i := range n {
		tp := nthFlow(i)
		if got := t.Insert(&tp, syn, Meta{}, 0); got != Inserted {
			tb.Fatalf("Insert(%v) = %v; want %v", tp, got, Inserted)
		}
		r := rev(tp)
		t.Lookup(&r, syn|ack, 0)
		t.Lookup(&tp, ack, 0)
	}
	return t
}

var sizes = []struct {
	name string
	n    int
}{{"1k", 1000}, {"1M", 1000000}}

// spread walks 0..n-1 in a scattered order (n is not a multiple of the stride's factors).
func spread(i, n int) int { return (i * 7919) % n }

func BenchmarkLookupHit(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			tb := filled(b, sz.n, sz.n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				tp := nthFlow(spread(i, sz.n))
				if i&1 == 1 {
					tp = rev(tp)
				}
				if m, _ := tb.Lookup(&tp, ack, int64(i)); m == MatchNone {
					b.Fatalf("Lookup(%v) = %v; want a match", tp, m)
				}
			}
		})
	}
}

func BenchmarkLookupMiss(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			tb := filled(b, sz.n, sz.n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				tp := nthFlow(sz.n + spread(i, sz.n))
				if m, _ := tb.Lookup(&tp, syn, int64(i)); m != MatchNone {
					b.Fatalf("Lookup(%v) = %v; want %v", tp, m, MatchNone)
				}
			}
		})
	}
}

func BenchmarkLookupParallel(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			tb := filled(b, sz.n, sz.n)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(time.Now().UnixNano() % int64(sz.n)) // a different start per goroutine
				for pb.Next() {
					i++
					tp := nthFlow(spread(i, sz.n))
					if m, _ := tb.Lookup(&tp, ack, int64(i)); m != MatchOriginal {
						b.Errorf("Lookup(%v) = %v; want %v", tp, m, MatchOriginal)
						return
					}
				}
			})
		})
	}
}

// BenchmarkInsert inserts new flows into a table of n flows. To keep the table near n
// (and the memory bounded), the flows it added are deleted, untimed, every 64Ki inserts.
func BenchmarkInsert(b *testing.B) {
	const batch = 1 << 16
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			tb := filled(b, sz.n, sz.n+batch)
			meta := Meta{Rule: 1}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if i%batch == 0 && i > 0 {
					b.StopTimer()
					tb.DeleteIf(func(_ Tuple, fi FlowInfo) bool { return fi.Meta.Rule == 1 })
					b.StartTimer()
				}
				tp := nthFlow(sz.n + i)
				if got := tb.Insert(&tp, syn, meta, int64(i)); got != Inserted {
					b.Fatalf("Insert(%v) = %v; want %v", tp, got, Inserted)
				}
			}
		})
	}
}

// BenchmarkSweep measures one sweep of a table in which nothing has expired: the cost
// paid every sweep period.
func BenchmarkSweep(b *testing.B) {
	for _, sz := range sizes {
		b.Run(sz.name, func(b *testing.B) {
			tb := filled(b, sz.n, sz.n)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if got := tb.Sweep(sec); got != 0 {
					b.Fatalf("Sweep(1s) = %d; want 0", got)
				}
			}
		})
	}
}

// TestMemory1M checks SPEC 3.1's bar: 1 000 000 tracked flows in at most 256 MB of heap.
func TestMemory1M(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: fills a table with 1M flows")
	}
	const n = 1000000
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			tb := New(Config{Capacity: n})
			to := DefaultTimeouts()
			for i := range n {
				tp := nthFlow(i)
				if v6 {
					tp.Src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
					tp.Dst = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 1, 15: byte(i / (256 * 60000))})
				}
				if got := tb.Insert(&tp, syn, Meta{Timeouts: &to, Rule: uint32(i)}, 0); got != Inserted {
					t.Fatalf("Insert(%v) = %v; want %v", tp, got, Inserted)
				}
			}
			fill := time.Since(start)
			runtime.GC()
			runtime.ReadMemStats(&after)
			heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("%d flows: %.1f MB heap (%.0f B/flow), filled in %v", tb.Len(), float64(heap)/(1<<20), float64(heap)/n, fill)
			if heap > 256<<20 {
				t.Errorf("%d flows take %d MB of heap; want at most 256 MB", n, heap>>20)
			}
			runtime.KeepAlive(tb)
		})
	}
}
