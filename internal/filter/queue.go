package filter

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sgd-firewall/sgd/internal/netfilter"
)

// QueueConfig says which NFQUEUE queues to read and how.
type QueueConfig struct {
	Num   uint16 // first queue number
	Count uint16 // number of queues (each gets its own reader and Worker); 0 means 1
	// MaxQueueLen is the kernel queue length per queue (0: 4096).
	MaxQueueLen uint32
	// CopyRange is how many bytes of each packet the kernel copies to sgd (0: 256):
	// headers only, the payload stays in the kernel.
	CopyRange uint32
	// FastPathMask, when non-zero, is the field of packet-mark bits where accepted packets
	// of tracked flows get their interface's zone, so that netfilter can save it to the
	// kernel's conntrack entry (the optional kernel fast path, netfilter.Spec).
	FastPathMask uint32
	// OnResult, if set, is called on the reader goroutine after each verdict, with the
	// worker (whose Packet() is the packet). It must be quick and must not retain w.
	OnResult func(w *Worker, r Result)
	// ReadBuffer is the netlink socket receive buffer in bytes (0: 8 MiB).
	ReadBuffer int
}

// Queues are open NFQUEUE readers; Close unbinds them.
type Queues struct {
	qs      []*nfq
	beats   []atomic.Uint64 // one per reader: see Beats
	wg      sync.WaitGroup
	closing atomic.Bool
}

// Beats appends each reader's heartbeat to dst: a count the reader advances as it enters
// its receive (the count turns odd: idle, waiting for packets) and as the receive returns
// (even: judging the burst). A count that is even and has not moved between two looks is
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

// Open binds the queues and starts one reader per queue, each judging through its own
// worker (workers[i], created here when missing). It returns once every queue is bound,
// so that the caller can install the netfilter rules that feed them.
func (e *Engine) Open(qc QueueConfig, workers []*Worker, logErr func(error)) (*Queues, error) {
	if qc.Count == 0 {
		qc.Count = 1
	}
	if qc.MaxQueueLen == 0 {
		qc.MaxQueueLen = 4096
	}
	if qc.CopyRange == 0 {
		qc.CopyRange = 256
	}
	if qc.ReadBuffer == 0 {
		qc.ReadBuffer = 8 << 20
	}
	for len(workers) < int(qc.Count) {
		workers = append(workers, e.NewWorker())
	}
	qs := &Queues{}
	for i := range qc.Count {
		q, err := openNFQ(qc.Num+i, qc)
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
			e.serve(q, qc, workers[i], &qs.closing, &qs.beats[i], logErr)
		}()
	}
	return qs, nil
}

// serve is one queue's reader: take the burst of packets waiting, judge each, then send
// all their verdicts in one datagram — individual drops and marked accepts first, then
// one batch accept for every other packet (NFQNL_MSG_VERDICT_BATCH accepts all queued ids
// up to the one given, and the individual verdicts have already dequeued theirs).
func (e *Engine) serve(q *nfq, qc QueueConfig, w *Worker, closing *atomic.Bool, beat *atomic.Uint64, logErr func(error)) {
	lens := make([]int, burstMax)
	var m packetMsg
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
		beat.Add(1) // even: judging them
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
			if !parsePacket(q.slots[i][:lens[i]], &m) {
				continue // not a packet (no id): nothing to give a verdict to
			}
			r := w.Judge(m.payload, m.in, m.out)
			switch {
			case r.Verdict == Drop:
				out = q.appendVerdict(out, m.id, nfDrop, 0, false)
			case qc.FastPathMask != 0 && (r.Reason == ReasonTracked || r.Reason == ReasonRule):
				// The verdict's mark replaces the packet's whole mark: keep its other bits
				// (fwmark routing, SO_MARK, WireGuard). A zone the field cannot hold
				// stays on the queue.
				if mark, ok := netfilter.ZoneMark(qc.FastPathMask, r.Zone); ok {
					out = q.appendVerdict(out, m.id, nfAccept, m.mark&^qc.FastPathMask|mark, false)
				} else {
					batchID, batch = m.id, true
				}
			default:
				batchID, batch = m.id, true
			}
			if qc.OnResult != nil {
				qc.OnResult(w, r)
			}
		}
		if batch {
			out = q.appendVerdict(out, batchID, nfAccept, 0, true)
		}
		if len(out) > 0 {
			if err := q.send(out); err != nil {
				report(err)
			}
		}
		q.out = out[:0]
	}
}
