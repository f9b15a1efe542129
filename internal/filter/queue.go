package filter

import (
	"context"
	"errors"
	"fmt"
	"sync"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
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
	// FailOpen makes the kernel accept packets when a queue overflows instead of dropping.
	FailOpen bool
	// FastPathMark, when non-zero, is set as the packet mark on accepted packets of tracked
	// flows, so that netfilter can save it to the kernel's conntrack entry (the optional
	// kernel fast path).
	FastPathMark uint32
	// OnResult, if set, is called on the reader goroutine after each verdict, with the
	// worker (whose Packet() is the packet). It must be quick and must not retain w.
	OnResult func(w *Worker, r Result)
	// ReadBuffer is the netlink socket receive buffer in bytes (0: 8 MiB).
	ReadBuffer int
}

// Queues are open NFQUEUE readers; Close unbinds them.
type Queues struct {
	cancel context.CancelFunc
	qs     []*nfqueue.Nfqueue
}

// Close stops the readers and unbinds the queues.
func (q *Queues) Close() {
	q.cancel()
	for _, n := range q.qs {
		n.Close()
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
	ctx, cancel := context.WithCancel(context.Background())
	qs := &Queues{cancel: cancel}
	for i := range qc.Count {
		q, err := e.openQueue(ctx, qc, qc.Num+i, workers[i], logErr)
		if err != nil {
			qs.Close()
			return nil, err
		}
		qs.qs = append(qs.qs, q)
	}
	return qs, nil
}

func (e *Engine) openQueue(ctx context.Context, qc QueueConfig, num uint16, w *Worker, logErr func(error)) (*nfqueue.Nfqueue, error) {
	flags := uint32(nfqueue.NfQaCfgFlagGSO)
	if qc.FailOpen {
		flags |= nfqueue.NfQaCfgFlagFailOpen
	}
	q, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      num,
		MaxPacketLen: qc.CopyRange,
		MaxQueueLen:  qc.MaxQueueLen,
		Copymode:     nfqueue.NfQnlCopyPacket,
		AfFamily:     unix.AF_INET,
		Flags:        flags,
	})
	if err != nil {
		return nil, fmt.Errorf("open nfqueue %d: %w", num, err)
	}
	// Under load the kernel would rather drop (counted in nfnetlink_queue) than make the
	// socket fail with ENOBUFS.
	if err := q.Con.SetOption(netlink.NoENOBUFS, true); err != nil {
		logErr(fmt.Errorf("nfqueue %d: set NoENOBUFS: %w", num, err))
	}
	if err := q.Con.SetReadBuffer(qc.ReadBuffer); err != nil {
		logErr(fmt.Errorf("nfqueue %d: set read buffer: %w", num, err))
	}
	var once sync.Once
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			return 0
		}
		var payload []byte
		if a.Payload != nil {
			payload = *a.Payload
		}
		var in, out uint32
		if a.InDev != nil {
			in = *a.InDev
		}
		if a.OutDev != nil {
			out = *a.OutDev
		}
		r := w.Judge(payload, in, out)
		var err error
		switch {
		case r.Verdict == Drop:
			err = q.SetVerdict(*a.PacketID, nfqueue.NfDrop)
		case qc.FastPathMark != 0 && (r.Reason == ReasonTracked || r.Reason == ReasonRule):
			err = q.SetVerdictWithMark(*a.PacketID, nfqueue.NfAccept, int(qc.FastPathMark))
		default:
			err = q.SetVerdict(*a.PacketID, nfqueue.NfAccept)
		}
		if err != nil {
			once.Do(func() { logErr(fmt.Errorf("nfqueue %d: set verdict: %w", num, err)) })
		}
		if qc.OnResult != nil {
			qc.OnResult(w, r)
		}
		return 0
	}
	errFn := func(err error) int {
		if ctx.Err() != nil {
			return 1
		}
		var oe *netlink.OpError
		if errors.As(err, &oe) && (oe.Timeout() || errors.Is(oe.Err, unix.ENOBUFS)) {
			return 0
		}
		logErr(fmt.Errorf("nfqueue %d: receive: %w", num, err))
		return 0
	}
	if err := q.RegisterWithErrorFunc(ctx, hook, errFn); err != nil {
		q.Close()
		return nil, fmt.Errorf("bind nfqueue %d: %w", num, err)
	}
	return q, nil
}
