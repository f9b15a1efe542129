package daemon

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/offload"
)

// flowLog aggregates packets per flow and interval and writes VPC Flow Log records in
// AWS's default (version 2) format:
//
//	version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status
//
// Each queue reader records into its own shard (an uncontended lock); the writer swaps
// the shards out once per interval. Flow logging is off unless a file is configured.
type flowLog struct {
	maxFlows int // per shard and interval (maxFlowsPerShard)
	path     string
	interval time.Duration
	account  string
	shards   []flowShard
}

type flowShard struct {
	mu      sync.Mutex
	flows   map[flowKey]*flowAgg
	skipped uint64 // packets of flows left out this interval: the shard was full
	first   int64  // when the first packet was left out
	_       [24]byte
}

// maxFlowsPerShard bounds the records one reader gathers per interval (a flood from random
// ports must not grow memory without limit). Past it, packets of new flows are counted in
// a SKIPDATA record, as AWS does when it cannot capture records.
const maxFlowsPerShard = 100000

type flowKey struct {
	iface    string
	src, dst netip.Addr
	sport    uint16
	dport    uint16
	proto    uint8
	accept   bool
}

type flowAgg struct {
	packets, bytes uint64
	start, end     int64
}

func newFlowLog(path string, interval time.Duration, account string, shards int) (*flowLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fmt.Errorf("flow log: %w", err)
	}
	f.Close()
	fl := &flowLog{maxFlows: maxFlowsPerShard, path: path, interval: interval, account: account, shards: make([]flowShard, shards)}
	for i := range fl.shards {
		fl.shards[i].flows = map[flowKey]*flowAgg{}
	}
	return fl, nil
}

func (fl *flowLog) record(w *filter.Worker, r filter.Result) {
	p := w.Packet()
	if !p.Src.IsValid() || r.Iface == "" {
		return
	}
	id := r.Iface
	if r.ENI != "" {
		id = r.ENI // a port's records name its ENI, as VPC Flow Logs do
	}
	k := flowKey{iface: id, src: p.Src, dst: p.Dst, proto: p.Proto, accept: r.Verdict == filter.Accept}
	if p.Proto == 6 || p.Proto == 17 {
		k.sport, k.dport = p.SrcPort, p.DstPort
	}
	fl.add(w.ID(), k, 1, uint64(p.Length))
}

// addOffloaded records what the kernel carried of an offloaded connection at the point
// named id since it was last read: each direction is a record of its own, as VPC Flow
// Logs keep them.
func (fl *flowLog) addOffloaded(id string, c offload.Conn, op, ob, rp, rb uint64) {
	if id == "" {
		return
	}
	k := flowKey{iface: id, src: c.Src, dst: c.Dst, sport: c.SrcPort, dport: c.DstPort, proto: c.Proto, accept: true}
	if op > 0 {
		fl.add(0, k, op, ob)
	}
	if rp > 0 {
		k.src, k.dst, k.sport, k.dport = k.dst, k.src, k.dport, k.sport
		fl.add(0, k, rp, rb)
	}
}

// add counts packets and bytes of flow k in shard i's current interval.
func (fl *flowLog) add(i int, k flowKey, packets, bytes uint64) {
	now := time.Now().Unix()
	sh := &fl.shards[i%len(fl.shards)]
	sh.mu.Lock()
	a := sh.flows[k]
	if a == nil {
		if len(sh.flows) >= fl.maxFlows {
			if sh.skipped == 0 {
				sh.first = now
			}
			sh.skipped += packets
			sh.mu.Unlock()
			return
		}
		a = &flowAgg{start: now}
		sh.flows[k] = a
	}
	a.packets += packets
	a.bytes += bytes
	a.end = now
	sh.mu.Unlock()
}

func (fl *flowLog) run(ctx context.Context, log *zap.Logger) {
	every(ctx, fl.interval, func() { fl.flush(log) })
}

// every calls fn every period until ctx is done.
func every(ctx context.Context, period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// flush writes and forgets the records gathered so far.
func (fl *flowLog) flush(log *zap.Logger) {
	var batches []map[flowKey]*flowAgg
	var skipped uint64
	var skipStart int64
	for i := range fl.shards {
		sh := &fl.shards[i]
		sh.mu.Lock()
		if len(sh.flows) > 0 {
			batches = append(batches, sh.flows)
			sh.flows = map[flowKey]*flowAgg{}
		}
		if sh.skipped > 0 {
			if skipped == 0 || sh.first < skipStart {
				skipStart = sh.first
			}
			skipped += sh.skipped
			sh.skipped = 0
		}
		sh.mu.Unlock()
	}
	if len(batches) == 0 && skipped == 0 {
		return
	}
	f, err := os.OpenFile(fl.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		log.Error("flow log", zap.Error(err))
		return
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	for _, b := range batches {
		for k, a := range b {
			action := "REJECT"
			if k.accept {
				action = "ACCEPT"
			}
			fmt.Fprintf(bw, "2 %s %s %s %s %d %d %d %d %d %d %d %s OK\n", fl.account, k.iface, addrString(k.src), addrString(k.dst),
				k.sport, k.dport, k.proto, a.packets, a.bytes, a.start, a.end, action)
		}
	}
	if skipped > 0 {
		// AWS's record for data it could not capture: no flow fields, log-status SKIPDATA.
		fmt.Fprintf(bw, "2 %s - - - - - - - %d %d - SKIPDATA\n", fl.account, skipStart, time.Now().Unix())
		log.Warn("flow log: too many flows this interval; some were left out (SKIPDATA)", zap.Uint64("packets", skipped))
	}
	if err := bw.Flush(); err != nil {
		log.Error("flow log", zap.Error(err))
	}
}
