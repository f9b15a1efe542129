// Package nfqueue is sgd's NFQUEUE transport: it binds netfilter queues, receives each
// reader's packets in bursts (recvmmsg), hands every packet to that reader's Handler, and
// sends the burst's verdicts back in one datagram. It knows nothing of Security Groups:
// what a packet means and what happens to it is the Handler's (the judge's) business.
package nfqueue

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config says which queues to bind and how.
type Config struct {
	Num   uint16 // first queue number
	Count uint16 // number of queues, each with its own reader; 0 means 1
	// MaxQueueLen is the kernel queue length per queue (0: 4096).
	MaxQueueLen uint32
	// CopyRange is how many bytes of each packet the kernel copies to sgd (0: 256):
	// headers only, the payload stays in the kernel.
	CopyRange uint32
	// ReadBuffer is the netlink socket receive buffer in bytes (0: 8 MiB).
	ReadBuffer int
}

// Packet is one queued packet. Payload starts at the IP header, is at most the copy range
// long, and is the reader's buffer: it is valid only until Handle returns.
type Packet struct {
	ID              uint32
	InDev, OutDev   uint32 // input and output interface indexes (0 = absent: OUTPUT has no input)
	PhysIn, PhysOut uint32 // bridge ports the packet came in on / goes out of (0 = not bridged)
	Mark            uint32 // the packet's mark
	Payload         []byte
}

// Verdict is what happens to one packet.
type Verdict struct {
	Accept bool
	// Mark, with SetMark, replaces the packet's mark (an accepted packet only). A handler
	// that wants to change some bits keeps the others from Packet.Mark.
	Mark    uint32
	SetMark bool
}

// Handler decides packets. Each reader calls its own Handler, from one goroutine; Handle
// must not retain p or its Payload.
type Handler interface {
	Handle(p *Packet) Verdict
}

// Queues are bound queues and their readers; Close unbinds them.
type Queues struct {
	qs      []*nfq
	beats   []atomic.Uint64 // one per reader: see Beats
	wg      sync.WaitGroup
	closing atomic.Bool
}

// Beats appends each reader's heartbeat to dst: a count the reader advances as it enters
// its receive (the count turns odd: idle, waiting for packets) and as the receive returns
// (even: handling the burst). A count that is even and has not moved between two looks is
// a reader stuck on one burst, or stopped. Safe to call from any goroutine.
func (qs *Queues) Beats(dst []uint64) []uint64 {
	for i := range qs.beats {
		dst = append(dst, qs.beats[i].Load())
	}
	return dst
}

// Close stops the readers and unbinds the queues.
func (qs *Queues) Close() {
	qs.closing.Store(true)
	for _, q := range qs.qs {
		_ = q.conn.SetReadDeadline(time.Now())
	}
	qs.wg.Wait()
	for _, q := range qs.qs {
		q.close()
	}
}

// Open binds c.Count queues and starts one reader per queue, reader i handing its packets
// to handlers[i]. It returns once every queue is bound, so that the caller can install the
// netfilter rules that feed them. logErr gets receive and send errors, at most one per
// reader every ten seconds.
func Open(c Config, handlers []Handler, logErr func(error)) (*Queues, error) {
	if c.Count == 0 {
		c.Count = 1
	}
	if c.MaxQueueLen == 0 {
		c.MaxQueueLen = 4096
	}
	if c.CopyRange == 0 {
		c.CopyRange = 256
	}
	if c.ReadBuffer == 0 {
		c.ReadBuffer = 8 << 20
	}
	if len(handlers) != int(c.Count) {
		return nil, errors.New("nfqueue: one handler per queue is needed")
	}
	qs := &Queues{}
	for i := range c.Count {
		q, err := openNFQ(c.Num+i, c)
		if err != nil {
			for _, o := range qs.qs {
				o.close()
			}
			return nil, err
		}
		qs.qs = append(qs.qs, q)
	}
	qs.beats = make([]atomic.Uint64, len(qs.qs))
	for i, q := range qs.qs {
		qs.wg.Add(1)
		go func() {
			defer qs.wg.Done()
			q.serve(handlers[i], &qs.closing, &qs.beats[i], logErr)
		}()
	}
	return qs, nil
}

// serve is one queue's reader: take the burst of packets waiting, hand each to h, then
// send all their verdicts in one datagram — drops and marked accepts one by one, then one
// batch accept for every other packet (NFQNL_MSG_VERDICT_BATCH accepts all queued ids up
// to the one given, and the individual verdicts have already dequeued theirs).
func (q *nfq) serve(h Handler, closing *atomic.Bool, beat *atomic.Uint64, logErr func(error)) {
	lens := make([]int, burstMax)
	var p Packet
	var lastErr time.Time
	report := func(err error) {
		if now := time.Now(); now.Sub(lastErr) > 10*time.Second {
			lastErr = now
			logErr(err)
		}
	}
	for {
		beat.Add(1) // odd: waiting for packets
		n, err := q.recvBurst(lens)
		beat.Add(1) // even: handling them
		if closing.Load() {
			return
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			report(err)
		}
		out := q.out[:0]
		var batchID uint32
		batch := false
		for i := range n {
			if !parsePacket(q.slots[i][:lens[i]], &p) {
				continue // not a packet (no id): nothing to give a verdict to
			}
			switch v := h.Handle(&p); {
			case !v.Accept:
				out = q.appendVerdict(out, p.ID, nfDrop, nil, false)
			case v.SetMark:
				out = q.appendVerdict(out, p.ID, nfAccept, &v.Mark, false)
			default:
				batchID, batch = p.ID, true
			}
		}
		if batch {
			out = q.appendVerdict(out, batchID, nfAccept, nil, true)
		}
		if len(out) > 0 {
			if err := q.send(out); err != nil {
				report(err)
			}
		}
		q.out = out[:0]
	}
}
