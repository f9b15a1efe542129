package conntrack

import "testing"

// An offloaded flow lives until Forget: no clock ends it, no packet steps it, a sweep and
// an insert leave it, and Forget hands back what sgd counted of it.
func TestOffloadedFlowLivesUntilForget(t *testing.T) {
	tb := New(Config{})
	tp := tcpFlow
	if got := tb.Insert(&tp, syn, Meta{Rule: 7}, 0); got != Inserted {
		t.Fatalf("Insert = %v; want %v", got, Inserted)
	}
	r := rev(tp)
	if !tb.Offload(&r, Counted{Packets: 1, Bytes: 60}, sec) { // either direction names it
		t.Fatal("Offload of a live flow = false; want true")
	}
	if !tb.Offload(&tp, Counted{Packets: 1, Bytes: 52}, sec) {
		t.Fatal("second Offload = false; want true")
	}
	if got := tb.Offloaded(); got != 1 {
		t.Errorf("Offloaded() = %d; want 1", got)
	}
	late := int64(1e6) * sec // far past every timeout
	if m, info := tb.Lookup(&r, syn|ack, late); m != MatchReply || !info.Offloaded || info.State != StateSynSent || info.Meta.Rule != 7 {
		t.Errorf("Lookup(reply, late) = %v, %+v; want reply, offloaded, still syn_sent, rule 7", m, info)
	}
	if n := tb.Sweep(late); n != 0 {
		t.Errorf("Sweep(late) removed %d; want 0", n)
	}
	if got := tb.Insert(&tp, syn, Meta{}, late); got != Exists {
		t.Errorf("Insert over an offloaded flow = %v; want %v", got, Exists)
	}
	if !tb.Peek(&tp, late) {
		t.Error("Peek(late) = false; want true")
	}
	if info, c, ok := tb.Counted(&tp); !ok || c != (Counted{2, 112}) || !info.Offloaded || info.Meta.Rule != 7 {
		t.Errorf("Counted = %+v, %+v, %v; want offloaded with rule 7, {2 112}, true", info, c, ok)
	}
	info, c, ok := tb.Forget(&r)
	if !ok || !info.Offloaded || c != (Counted{2, 112}) {
		t.Errorf("Forget = %+v, %+v, %v; want offloaded, {2 112}, true", info, c, ok)
	}
	if tb.Len() != 0 || tb.Offloaded() != 0 {
		t.Errorf("after Forget: Len %d, Offloaded %d; want 0, 0", tb.Len(), tb.Offloaded())
	}
	if _, _, ok := tb.Forget(&tp); ok {
		t.Error("second Forget = true; want false")
	}
}

func TestOffloadNeedsALiveFlow(t *testing.T) {
	tb := New(Config{})
	tp := udpFlow
	if tb.Offload(&tp, Counted{}, 0) {
		t.Error("Offload with no flow = true; want false")
	}
	tb.Insert(&tp, 0, Meta{}, 0)
	if tb.Offload(&tp, Counted{}, 31*sec) { // past the 30 s UDP timeout
		t.Error("Offload of an expired flow = true; want false")
	}
}

// The offloaded count follows every way a flow leaves the table.
func TestOffloadedCountFollowsRemovals(t *testing.T) {
	tb := New(Config{})
	a, b := udpFlow, greFlow
	for _, tp := range []*Tuple{&a, &b} {
		tb.Insert(tp, 0, Meta{}, 0)
		tb.Offload(tp, Counted{}, 0)
	}
	if n := tb.DeleteIf(func(tp Tuple, _ FlowInfo) bool { return tp.Proto == a.Proto }); n != 1 || tb.Offloaded() != 1 {
		t.Errorf("DeleteIf removed %d, Offloaded %d; want 1, 1", n, tb.Offloaded())
	}
	tb.Flush()
	if tb.Offloaded() != 0 {
		t.Errorf("after Flush: Offloaded %d; want 0", tb.Offloaded())
	}
}

func TestCountedSaturates(t *testing.T) {
	for _, c := range []Counted{{0, 0}, {1, 1500}, {1<<15 - 1, 1<<48 - 1}, {1 << 20, 1 << 50}} {
		got := unpackCounted(packCounted(c))
		want := Counted{min(c.Packets, 1<<15-1), min(c.Bytes, 1<<48-1)}
		if got != want || packCounted(c) < 0 {
			t.Errorf("unpack(pack(%+v)) = %+v (packed %d); want %+v, non-negative", c, got, packCounted(c), want)
		}
	}
}
