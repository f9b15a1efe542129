package store

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// DefaultEtcdPrefix is the key prefix of fleet mode's keys when EtcdOptions gives none.
const DefaultEtcdPrefix = "/sgd/"

// etcdStateKey is the key, under the prefix, that holds the API's whole snapshot.
const etcdStateKey = "api/state"

// EtcdOptions say how to reach etcd (SPEC 4.6: --etcd-endpoints, --etcd-cacert, …).
// The zero value of every field but Endpoints is usable.
type EtcdOptions struct {
	Endpoints []string    // client URLs, e.g. https://10.0.0.1:2379
	Prefix    string      // key prefix; DefaultEtcdPrefix when empty
	TLS       *tls.Config // nil: plain connections
	// DialTimeout bounds establishing a connection (2 s when zero).
	DialTimeout time.Duration
	// RequestTimeout bounds a Load or Commit whose context has no deadline (5 s when
	// zero): with etcd unreachable they fail after it rather than wait for it to return.
	RequestTimeout time.Duration
	// Logger receives the watcher's retries; nil logs nothing.
	Logger *zap.Logger
}

// Etcd is a Store in etcd v3, for fleet mode (SPEC 4.6): every host's EC2 API writes the
// same state, and every host watches it.
//
// Key layout: the whole snapshot is one JSON value at <prefix>api/state; its Revision is
// the key's ModRevision, etcd's cluster-wide revision of the last write to it, which only
// grows. Commit is one transaction, If(ModRevision(key) = s.Revision) Then(Put(key, s)):
// a compare-and-swap on the revision the snapshot was read at.
//
// Why one key and not a key per group, rule and prefix list: the API validates every
// change against the whole state — names unique, referenced groups and prefix lists
// existing, rule ids unique, quotas — and the controller compiles the whole state anyway.
// With per-object keys a change that is valid only given objects it did not write would
// have to compare every key it read (or a global revision, which is the single key again)
// to keep those checks true fleet-wide; with one key a commit based on a stale read is
// refused (ErrConflict) and the caller re-reads and re-validates, so uniqueness and
// validation hold across the fleet with nothing more. A watcher sees each commit as one
// event carrying the whole new state, never half of a change spread over several keys, and
// re-listing after a compaction is one Get. The same reasoning as Dir's one file.
// The cost: every commit rewrites the whole state (small, at API rates), and a snapshot
// must fit in one etcd request (--max-request-bytes, 1.5 MiB by default: some thousands of
// rules); past that, per-object keys under the same prefix are the way on.
//
// The fleet's members are keys of their own, <prefix>members/<host_id>, one per host,
// each attached to its host's lease (Join, WatchMembers): unlike the API state they are
// written by each host alone, about itself, and must vanish with it.
//
// Fail-static: with etcd unreachable (or without a leader: reads are linearizable) Load and
// Commit return an error naming the endpoints, never an empty or stale state. Safe for
// use by several goroutines.
type Etcd struct {
	cli       *clientv3.Client
	prefix    string
	key       string
	endpoints string // for error messages
	timeout   time.Duration
	log       *zap.Logger
}

var _ Store = (*Etcd)(nil)

// OpenEtcd returns a store on the etcd cluster at o.Endpoints. It does not wait for etcd to
// answer: the first Load does (and fails, naming the endpoints, when it cannot).
func OpenEtcd(ctx context.Context, o EtcdOptions) (*Etcd, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultEtcdPrefix
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	e := &Etcd{prefix: o.Prefix, key: o.Prefix + etcdStateKey, endpoints: strings.Join(o.Endpoints, ","),
		timeout: o.RequestTimeout, log: o.Logger}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		TLS:         o.TLS,
		DialTimeout: o.DialTimeout,
		// A member that goes silent (its packets dropped) is noticed within seconds and
		// the client moves to one that answers; without it a watch sits on the dead
		// connection until TCP gives up (~15 min). 5 s is etcd's --grpc-keepalive-min-time.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		// Reconnect within 2 s of etcd answering again, however long it was away (gRPC's
		// default backoff grows to 2 min).
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: o.DialTimeout})},
		Context: context.WithoutCancel(ctx), // the client outlives OpenEtcd's context; Close ends it
		Logger:  o.Logger.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
	})
	if err != nil {
		return nil, e.errorf("connect", err)
	}
	e.cli = cli
	return e, nil
}

func (e *Etcd) errorf(what string, err error) error {
	return fmt.Errorf("etcd %s: %s the API state: %w", e.endpoints, what, err)
}

// withTimeout gives ctx the request timeout when it has no deadline.
func (e *Etcd) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, e.timeout)
}

// Load reads the committed state with a linearizable read: the latest state the cluster
// agreed on, or an error.
func (e *Etcd) Load(ctx context.Context) (*Snapshot, error) {
	s, _, err := e.load(ctx)
	return s, err
}

// load returns the state and the cluster's revision at the read.
func (e *Etcd) load(ctx context.Context) (*Snapshot, int64, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.key)
	if err != nil {
		return nil, 0, e.errorf("read", err)
	}
	if len(resp.Kvs) == 0 {
		return &Snapshot{}, resp.Header.Revision, nil
	}
	s, err := e.decode(resp.Kvs[0])
	if err != nil {
		return nil, 0, err
	}
	return s, resp.Header.Revision, nil
}

func (e *Etcd) decode(kv *mvccpb.KeyValue) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(kv.Value, &s); err != nil {
		// As Dir: never start from nothing when the state cannot be read.
		return nil, e.errorf("read", fmt.Errorf("key %s at revision %d: %w", e.key, kv.ModRevision, err))
	}
	s.Revision = uint64(kv.ModRevision)
	return &s, nil
}

// Commit writes s in one transaction if the state is still at s.Revision (ErrConflict
// otherwise). An error other than ErrConflict (a timeout) may hide a commit that happened:
// the next Load says.
func (e *Etcd) Commit(ctx context.Context, s *Snapshot) error {
	next := *s
	next.Revision = 0 // the key's ModRevision is the revision; the value does not repeat it
	b, err := json.Marshal(&next)
	if err != nil {
		return err
	}
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	resp, err := e.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(e.key), "=", int64(s.Revision))).
		Then(clientv3.OpPut(e.key, string(b))).
		Commit()
	if err != nil {
		return e.errorf("commit", err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	s.Revision = uint64(resp.Header.Revision) // the Put's revision: the key's new ModRevision
	return nil
}

// Ping reads the state's key (its revision only) with a linearizable read: nil when etcd
// answers with a leader. It is how a host knows it is connected (sgd_store_connected).
func (e *Etcd) Ping(ctx context.Context) error {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	if _, err := e.cli.Get(clientv3.WithRequireLeader(ctx), e.key, clientv3.WithCountOnly()); err != nil {
		return e.errorf("read", err)
	}
	return nil
}

// Close ends the client; the state stays in etcd. Watches end with it.
func (e *Etcd) Close() error { return e.cli.Close() }

// The pause before re-establishing a watch that failed for a reason other than compaction
// (no leader, the client's stream ended) starts at watchRetry and doubles, up to
// watchRetryMax, until a watch delivers again: a partition logs a few lines, not a flood.
const (
	watchRetry    = 200 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// Watch reports the states committed after revision after — by any writer, this store
// included (compare Revision with the one committed) — until ctx ends or the store is
// closed, when the channel is closed. Reports are coalesced: a slow reader gets the latest
// state, not every one in between; each report has a higher Revision than the last.
//
// A lost connection is retried by the etcd client, which resumes the watch from the last
// revision it delivered. If etcd compacted the history the watch needs (ErrCompacted, e.g.
// after a long disconnection), Watch re-reads the state and goes on from the revision of
// that read. A value that cannot be decoded, or the key's deletion by hand, is logged and
// skipped: the reader keeps what it has (fail-static).
func (e *Etcd) Watch(ctx context.Context, after uint64) <-chan *Snapshot {
	ch := newLatest[*Snapshot]()
	last := after
	report := func(s *Snapshot) {
		if s.Revision > last {
			last = s.Revision
			ch.put(s)
		}
	}
	go func() {
		defer close(ch)
		e.follow(ctx, int64(after)+1, watchSpec{key: e.key, what: "the API state",
			events: func(evs []*clientv3.Event) {
				for _, ev := range evs {
					if ev.Type != mvccpb.PUT {
						e.log.Warn("etcd: the API state's key was deleted; keeping the last state", zap.String("key", e.key))
						continue
					}
					s, err := e.decode(ev.Kv)
					if err != nil {
						e.log.Error("etcd: a state that cannot be read; keeping the last state", zap.Error(err))
						continue
					}
					report(s)
				}
			},
			relist: func(kvs []*mvccpb.KeyValue, _ int64) {
				if len(kvs) == 0 {
					return // as Load: the empty state at revision 0, never newer than one held
				}
				s, err := e.decode(kvs[0])
				if err != nil {
					e.log.Error("etcd: a state that cannot be read; keeping the last state", zap.Error(err))
					return
				}
				report(s)
			}})
	}()
	return ch
}

// watchSpec is what follow watches, and what it tells of it.
type watchSpec struct {
	key    string
	prefix bool   // every key under key, not key alone
	what   string // what the keys hold, for logs
	// events takes each response's events, in revision order.
	events func(evs []*clientv3.Event)
	// relist takes the keys' values read anew, at revision rev, when etcd compacted the
	// history the watch needed: what they hold replaces everything events told before.
	relist func(kvs []*mvccpb.KeyValue, rev int64)
}

// follow watches w's keys from revision from on, until ctx ends or the store is closed.
// Every watch of the store shares it: a lost connection is retried by the etcd client,
// which resumes from the last revision delivered; a watch that fails otherwise (no
// leader, the client's stream ended) is re-established from the revision after the last
// event, with a pause that starts at watchRetry and doubles up to watchRetryMax; and a
// watch whose history etcd compacted re-reads the keys (relist) and goes on from the
// revision of that read.
func (e *Etcd) follow(ctx context.Context, from int64, w watchSpec) {
	var opts []clientv3.OpOption
	if w.prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	retry := watchRetry
	for {
		relist := false
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range e.cli.Watch(wctx, w.key, append(opts, clientv3.WithRev(from))...) {
			if resp.CompactRevision != 0 {
				relist = true
				break
			}
			if err := resp.Err(); err != nil {
				e.log.Warn("etcd watch failed; retrying", zap.String("endpoints", e.endpoints), zap.String("of", w.what),
					zap.Duration("in", retry), zap.Error(err))
				break
			}
			retry = watchRetry
			for _, ev := range resp.Events {
				from = max(from, ev.Kv.ModRevision+1)
			}
			if len(resp.Events) > 0 {
				w.events(resp.Events)
			}
		}
		cancel()
		for relist && ctx.Err() == nil && e.cli.Ctx().Err() == nil {
			e.log.Info("etcd watch history compacted; re-reading", zap.String("what", w.what), zap.Int64("from", from))
			rctx, rcancel := e.withTimeout(ctx)
			resp, err := e.cli.Get(rctx, w.key, opts...)
			rcancel()
			if err == nil {
				w.relist(resp.Kvs, resp.Header.Revision)
				from = resp.Header.Revision + 1
				break
			}
			e.log.Warn("etcd: re-read after compaction failed; retrying", zap.String("what", w.what), zap.Error(err))
			sleep(ctx, watchRetry)
		}
		if !relist {
			sleep(ctx, retry)
			retry = min(2*retry, watchRetryMax)
		}
		if ctx.Err() != nil || e.cli.Ctx().Err() != nil {
			return
		}
	}
}

// latest is a channel of one report whose sender replaces a report not yet read: a slow
// reader gets the newest, not every one in between. It has one sender.
type latest[T any] chan T

func newLatest[T any]() latest[T] { return make(chan T, 1) }

func (ch latest[T]) put(v T) {
	select {
	case ch <- v:
	default: // full: replace the unread report (we are the only sender)
		select {
		case <-ch:
		default:
		}
		ch <- v
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
