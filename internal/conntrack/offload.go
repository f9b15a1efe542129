package conntrack

// Offloaded flows (SPEC 4.7). Once the kernel's own conntrack carries a flow past the
// queue, sgd sees only the packets the kernel still sends it (an ICMP error, a packet the
// kernel finds invalid): the kernel decides when the flow ends, and tells (a destroy
// event), and the caller then calls Forget. Until then the flow is live whatever the
// clock says, and its state stays the one it had when it was offloaded.
//
// What an offloaded flow keeps instead of a deadline is what sgd itself counted of the
// packets the kernel also counts in its accounting (the packet whose verdict offloaded
// it), so that the kernel's totals less these are the packets sgd did not see.

// Counted is what sgd counted itself of an offloaded flow's packets (see Offload).
type Counted struct {
	Packets uint64
	Bytes   uint64
}

// countedBytesBits is how many of the 64 bits of a packed Counted hold its bytes; the
// rest hold its packets. Both saturate.
const countedBytesBits = 48

func packCounted(c Counted) int64 {
	p := min(c.Packets, 1<<(64-countedBytesBits-1)-1) // keep the sign bit clear
	b := min(c.Bytes, 1<<countedBytesBits-1)
	return int64(p<<countedBytesBits | b)
}

func unpackCounted(v int64) Counted {
	u := uint64(v)
	return Counted{Packets: u >> countedBytesBits, Bytes: u & (1<<countedBytesBits - 1)}
}

// Offload marks the live flow of tp (either direction) as offloaded, with what sgd
// counted of it, and reports whether there was such a flow. A flow already offloaded
// keeps its mark and adds c to what it counted.
func (t *Table) Offload(tp *Tuple, c Counted, now int64) bool {
	k, _ := makeKey(tp)
	s := t.shardFor(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.m[k]
	if !ok || !f.live(now) {
		return false
	}
	if f.flags&flagOffloaded != 0 {
		old := unpackCounted(f.deadline)
		c.Packets, c.Bytes = old.Packets+c.Packets, old.Bytes+c.Bytes
	} else {
		f.flags |= flagOffloaded
		t.off.Add(1)
	}
	f.deadline = packCounted(c)
	s.m[k] = f
	return true
}

// Forget removes the flow of tp (either direction) and returns what the table knew of it
// and, for an offloaded flow, what sgd counted of it. ok is false when there was none.
func (t *Table) Forget(tp *Tuple) (info FlowInfo, c Counted, ok bool) {
	k, _ := makeKey(tp)
	s := t.shardFor(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.m[k]
	if !ok {
		return FlowInfo{}, Counted{}, false
	}
	info = f.info(t.tos.set.Load())
	if f.flags&flagOffloaded != 0 {
		c = unpackCounted(f.deadline)
	}
	t.remove(s, &k, &f)
	return info, c, true
}

// Counted returns what the table knows of the offloaded flow of tp (either direction) and
// what sgd counted of it; ok is false when tp has no offloaded flow.
func (t *Table) Counted(tp *Tuple) (info FlowInfo, c Counted, ok bool) {
	k, _ := makeKey(tp)
	s := t.shardFor(&k)
	s.mu.Lock()
	f, found := s.m[k]
	s.mu.Unlock()
	if !found || f.flags&flagOffloaded == 0 {
		return FlowInfo{}, Counted{}, false
	}
	return f.info(t.tos.set.Load()), unpackCounted(f.deadline), true
}

// Offloaded returns how many of the flows stored are offloaded.
func (t *Table) Offloaded() int { return int(t.off.Load()) }
