package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// LeaseState is where a host's membership stands (Registration.Status).
type LeaseState string

const (
	// LeaseNone: not joined yet (etcd was unreachable when the host started).
	LeaseNone LeaseState = "none"
	// LeaseWaiting: the host's key is held by a lease this process does not know — its own
	// previous run's, killed, or another live host's — and it waits for the lease to expire.
	LeaseWaiting LeaseState = "waiting"
	// LeaseHeld: the record is published under the host's lease, kept alive.
	LeaseHeld LeaseState = "held"
	// LeaseLost: the lease expired (etcd cut off for longer than its TTL) or the key was
	// taken away; the host joins again when etcd answers.
	LeaseLost LeaseState = "lost"
	// LeaseDuplicate: another live host has this host id; this one publishes nothing and
	// tries again every TTL.
	LeaseDuplicate LeaseState = "duplicate"
	// LeaseLeft: revoked at a clean stop.
	LeaseLeft LeaseState = "left"
)

// DuplicateHostError is Join's refusal: another live host holds the host id's key.
type DuplicateHostError struct {
	HostID, Key string
	Lease       int64 // the other holder's lease; 0 when the key has none (written by hand)
}

func (e *DuplicateHostError) Error() string {
	if e.Lease == 0 {
		return fmt.Sprintf("host id %q is taken: its member key %s exists without a lease (not written by sgd?); delete it to use this id", e.HostID, e.Key)
	}
	return fmt.Sprintf("host id %q is in use by another live host: its member key %s is kept alive by lease %x", e.HostID, e.Key, e.Lease)
}

// Registration is this host's member record in etcd (SPEC 4.6), at <prefix>members/<host>,
// attached to a lease of the host's own that it keeps alive, so that the record goes with
// the host: revoked at a clean stop (Leave, the host drops out at once), or expired a TTL
// after the host is killed or cut off from etcd.
//
// Keys are taken with transactions only, never read then written: the key is created only
// if absent, and rewritten only if it is still attached to the host's lease. A key held
// by another lease is waited for until that lease expires — a host restarted after a crash
// finds its own dead lease — and refused (DuplicateHostError) when the lease is kept alive.
// A lost lease is re-granted and the record published again once etcd answers, with the
// same check; each of these steps is logged once. Safe for use by several goroutines.
type Registration struct {
	e    *Etcd
	host string
	key  string
	ttl  int64 // seconds, as asked
	log  *zap.Logger
	poke chan struct{} // Set wakes run

	mu        sync.Mutex
	record    []byte           // the latest record
	published []byte           // the record etcd holds under lease
	lease     clientv3.LeaseID // the lease the key is held by; 0 when none
	old       clientv3.LeaseID // the lease lost last, to take the key over from
	granted   int64            // the TTL etcd granted, in seconds
	state     LeaseState
	left      bool
	refused   bool // a duplicate was logged: the next tries say so at debug level only
	held      bool // the key was held once: a join now is a join again
}

// memberWaitMargin is how long past the remaining TTL of the lease holding a host's key
// Join waits for etcd to expire it (etcd checks leases every 500 ms, then deletes the key
// through raft) before it takes the lease for a live one.
const memberWaitMargin = 2 * time.Second

// memberPoll is how often Join looks at a key held by another lease.
const memberPoll = 250 * time.Millisecond

// JoinOptions say who a host is in the fleet.
type JoinOptions struct {
	HostID string
	TTL    time.Duration // the lease's TTL, in whole seconds (rounded up)
}

// Join publishes m as host o.HostID's member record under a new lease, waiting as long as
// the key is held by a lease that is not kept alive (Registration), and keeps it published
// in the background until ctx ends — which stops the keepalives without revoking the lease
// (Leave revokes it). It returns a *DuplicateHostError and no Registration when another
// live host holds the id. With etcd unreachable it returns the Registration and the error:
// the host joins in the background when etcd answers.
func (e *Etcd) Join(ctx context.Context, o JoinOptions, m Member) (*Registration, error) {
	if o.HostID == "" || bytes.ContainsAny([]byte(o.HostID), "/\x00") {
		return nil, fmt.Errorf("etcd: host id %q cannot be a key's last element", o.HostID)
	}
	r := &Registration{e: e, host: o.HostID, key: e.memberKey(o.HostID), ttl: int64(math.Ceil(max(o.TTL, time.Second).Seconds())),
		log: e.log.With(zap.String("host_id", o.HostID)), poke: make(chan struct{}, 1), state: LeaseNone}
	r.Set(m)
	err := r.join(ctx)
	var dup *DuplicateHostError
	if errors.As(err, &dup) {
		return nil, err
	}
	go r.run(ctx)
	return r, err
}

// Set makes m the record to publish; the background loop publishes it (at once when the
// lease is held, else when it is held again).
func (r *Registration) Set(m Member) {
	m.HostID = r.host
	b, err := json.Marshal(&m)
	if err != nil {
		panic(fmt.Sprintf("store: marshal a member record: %v", err)) // plain data: cannot fail
	}
	r.mu.Lock()
	same := bytes.Equal(b, r.record)
	r.record = b
	r.mu.Unlock()
	if !same {
		select {
		case r.poke <- struct{}{}:
		default:
		}
	}
}

// Verify has the record written again, if the key is still the lease's; if it is not (a
// key deleted by hand), the host joins again.
func (r *Registration) Verify() {
	r.mu.Lock()
	r.published = nil
	r.mu.Unlock()
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// Status is the membership's state, the lease (0 when none) and the TTL etcd granted it.
func (r *Registration) Status() (state LeaseState, lease int64, ttl time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state, int64(r.lease), time.Duration(r.granted) * time.Second
}

// Leave revokes the lease: the record is deleted with it, at once, and nothing is
// published again. For a clean stop; ctx bounds the request.
func (r *Registration) Leave(ctx context.Context) error {
	r.mu.Lock()
	lease := r.lease
	r.left, r.lease, r.state = true, 0, LeaseLeft
	r.mu.Unlock()
	if lease == 0 {
		return nil
	}
	ctx, cancel := r.e.withTimeout(ctx)
	defer cancel()
	if _, err := r.e.cli.Revoke(ctx, lease); err != nil {
		return fmt.Errorf("etcd %s: revoke this host's member lease (it expires on its own): %w", r.e.endpoints, err)
	}
	r.log.Info("fleet: left; this host's member record is revoked")
	return nil
}

func (r *Registration) setPublished(rec []byte) {
	r.mu.Lock()
	r.published = rec
	r.mu.Unlock()
}

// join takes the key with a new lease of the host's own (claim). While another lease
// holds the key, the new one is revoked (it would expire unkept while the host waits) and
// the holder waited for (waitFree); then it tries again.
func (r *Registration) join(ctx context.Context) error {
	for {
		gctx, cancel := r.e.withTimeout(ctx)
		g, err := r.e.cli.Grant(gctx, r.ttl)
		cancel()
		if err != nil {
			return fmt.Errorf("etcd %s: grant this host's member lease: %w", r.e.endpoints, err)
		}
		if g.TTL != r.ttl {
			r.log.Info("fleet: etcd granted another TTL than member_ttl", zap.Int64("asked_seconds", r.ttl), zap.Int64("granted_seconds", g.TTL))
		}
		held, err := r.claim(ctx, g.ID)
		r.mu.Lock()
		left, again := r.left, r.held
		if err == nil && held == nil && !left {
			r.lease, r.old, r.granted, r.state, r.refused, r.held = g.ID, 0, g.TTL, LeaseHeld, false, true
		}
		r.mu.Unlock()
		if err != nil || held != nil || left {
			rctx, cancel := r.e.withTimeout(context.WithoutCancel(ctx))
			_, _ = r.e.cli.Revoke(rctx, g.ID)
			cancel()
		}
		switch {
		case err != nil:
			return err
		case left:
			return nil
		case held != nil:
			if err := r.waitFree(ctx, held); err != nil {
				return err
			}
			continue
		}
		msg := "fleet: joined; this host's member record is published under its lease"
		if again {
			msg = "fleet: joined again; this host's member record is published under a new lease"
		}
		r.log.Info(msg, zap.String("key", r.key), zap.Int64("ttl_seconds", g.TTL))
		return nil
	}
}

// claim puts the record at the key with lease id, in one transaction, if the key is
// absent or held by the lease this host lost (r.old); else it returns the key as held.
func (r *Registration) claim(ctx context.Context, id clientv3.LeaseID) (*mvccpb.KeyValue, error) {
	for {
		r.mu.Lock()
		rec, old := r.record, r.old
		r.mu.Unlock()
		put := clientv3.OpPut(r.key, string(rec), clientv3.WithLease(id))
		tctx, cancel := r.e.withTimeout(ctx)
		resp, err := r.e.cli.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
			Then(put).Else(clientv3.OpGet(r.key)).Commit()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("etcd %s: publish this host's member record: %w", r.e.endpoints, err)
		}
		if resp.Succeeded {
			r.setPublished(rec)
			return nil, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // deleted in between
		}
		kv := kvs[0]
		if old == 0 || clientv3.LeaseID(kv.Lease) != old {
			return kv, nil
		}
		// Our own lost lease still holds it (etcd restarted and kept it): move the key to
		// the new lease, then let the old one go.
		tctx, cancel = r.e.withTimeout(ctx)
		resp, err = r.e.cli.Txn(tctx).If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", int64(old))).Then(put).Commit()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("etcd %s: publish this host's member record: %w", r.e.endpoints, err)
		}
		if resp.Succeeded {
			r.setPublished(rec)
			rctx, cancel := r.e.withTimeout(ctx)
			_, _ = r.e.cli.Revoke(rctx, old)
			cancel()
			return nil, nil
		}
	}
}

// waitFree waits until the key, held by kv's lease, is deleted by the lease's expiry. It
// gives up with a DuplicateHostError when the lease is kept alive: its remaining TTL grew,
// or it outlived the remaining TTL it had when waitFree began plus memberWaitMargin. A key
// without a lease never expires: refused at once.
func (r *Registration) waitFree(ctx context.Context, kv *mvccpb.KeyValue) error {
	dup := &DuplicateHostError{HostID: r.host, Key: r.key, Lease: kv.Lease}
	if kv.Lease == 0 {
		return dup
	}
	remaining, err := r.remaining(ctx, clientv3.LeaseID(kv.Lease))
	if err != nil {
		return err
	}
	r.mu.Lock()
	quiet := r.refused
	if !quiet {
		r.state = LeaseWaiting
	}
	r.mu.Unlock()
	if !quiet {
		r.log.Warn("fleet: this host id's member key is held by another lease (this host's previous run, killed, or another live host with this id); waiting for it to expire",
			zap.String("key", r.key), zap.String("lease", fmt.Sprintf("%x", kv.Lease)), zap.Int64("remaining_seconds", remaining))
	}
	deadline := time.Now().Add(time.Duration(max(remaining, 0))*time.Second + memberWaitMargin)
	for {
		sleep(ctx, memberPoll)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		gctx, cancel := r.e.withTimeout(ctx)
		resp, err := r.e.cli.Get(gctx, r.key)
		cancel()
		if err != nil {
			return fmt.Errorf("etcd %s: read this host's member key: %w", r.e.endpoints, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		if resp.Kvs[0].Lease != kv.Lease {
			dup.Lease = resp.Kvs[0].Lease
			return dup // taken again in between, by someone keeping at it
		}
		now, err := r.remaining(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil {
			return err
		}
		if now > remaining || time.Now().After(deadline) {
			return dup
		}
		remaining = now
	}
}

// remaining is a lease's remaining TTL in whole seconds, rounded up (-1 once expired).
func (r *Registration) remaining(ctx context.Context, id clientv3.LeaseID) (int64, error) {
	ctx, cancel := r.e.withTimeout(ctx)
	defer cancel()
	ttl, err := r.e.cli.TimeToLive(ctx, id)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return -1, nil // revoked or expired: the key goes with it
	}
	if err != nil {
		return 0, fmt.Errorf("etcd %s: read the lease of this host's member key: %w", r.e.endpoints, err)
	}
	return ttl.TTL, nil
}

// run keeps the lease alive and the record published until ctx ends (or the store is
// closed), and joins again after the lease is lost: while etcd does not answer, the pause
// between tries starts at watchRetry and doubles up to watchRetryMax, as the watch's.
func (r *Registration) run(ctx context.Context) {
	retry := watchRetry
	for ctx.Err() == nil && r.e.cli.Ctx().Err() == nil {
		r.mu.Lock()
		lease, left := r.lease, r.left
		r.mu.Unlock()
		if left {
			return
		}
		if lease == 0 {
			err := r.join(ctx)
			var dup *DuplicateHostError
			switch {
			case err == nil:
				retry = watchRetry
			case errors.As(err, &dup):
				r.mu.Lock()
				logged := r.refused
				r.state, r.refused = LeaseDuplicate, true
				r.mu.Unlock()
				if !logged {
					r.log.Error("fleet: not publishing this host: another live host has its id; trying again every TTL", zap.Error(err))
				}
				sleep(ctx, time.Duration(r.ttl)*time.Second)
			default:
				if ctx.Err() == nil {
					r.log.Debug("fleet: cannot join yet", zap.Error(err))
				}
				sleep(ctx, retry)
				retry = min(2*retry, watchRetryMax)
			}
			continue
		}
		r.hold(ctx, lease)
	}
}

// hold keeps lease alive and publishes each record Set gives, until ctx ends or the lease
// is lost: then r.lease is 0 and r.old the lost one.
func (r *Registration) hold(ctx context.Context, lease clientv3.LeaseID) {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ka, err := r.e.cli.KeepAlive(kctx, lease)
	if err != nil {
		r.lost(lease, "the etcd client stopped keeping leases alive", err)
		return
	}
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ka:
			if !ok {
				if ctx.Err() == nil {
					r.lost(lease, "the lease expired: etcd did not answer its keepalives for longer than its TTL", nil)
				}
				return
			}
		case <-r.poke:
			retry.Reset(0)
		case <-retry.C:
			ok, err := r.publish(ctx, lease)
			if err != nil {
				retry.Reset(time.Second) // etcd does not answer: again, until it does or the lease is lost
				continue
			}
			if !ok {
				r.lost(lease, "this host's member key was deleted or taken by another lease", nil)
				return
			}
		}
	}
}

// publish puts the latest record at the key if it is still held by lease and the record
// changed; false when the key is no longer the lease's.
func (r *Registration) publish(ctx context.Context, lease clientv3.LeaseID) (bool, error) {
	r.mu.Lock()
	rec, pub := r.record, r.published
	r.mu.Unlock()
	if bytes.Equal(rec, pub) {
		return true, nil
	}
	tctx, cancel := r.e.withTimeout(ctx)
	defer cancel()
	resp, err := r.e.cli.Txn(tctx).If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", int64(lease))).
		Then(clientv3.OpPut(r.key, string(rec), clientv3.WithLease(lease))).Commit()
	if err != nil {
		return false, err
	}
	if resp.Succeeded {
		r.mu.Lock()
		r.published = rec
		r.mu.Unlock()
	}
	return resp.Succeeded, nil
}

// lost records that lease no longer holds the key, and says so once.
func (r *Registration) lost(lease clientv3.LeaseID, why string, err error) {
	r.mu.Lock()
	if r.lease == lease {
		r.lease, r.old, r.published, r.state = 0, lease, nil, LeaseLost
	}
	r.mu.Unlock()
	r.log.Warn("fleet: this host's membership is lost ("+why+"); other hosts stop matching its addresses until it joins again, when etcd answers",
		zap.String("key", r.key), zap.Error(err))
}
