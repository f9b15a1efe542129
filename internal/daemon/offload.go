package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/offload"
)

// offloadPoll is how often the kernel's counters of offloaded flows are read into sgd's
// counters and flow logs (and flows the kernel dropped without a word are forgotten).
const offloadPoll = 5 * time.Second

// aliveTimeout bounds the judge's question to the kernel (a queue reader waits for it).
const aliveTimeout = 100 * time.Millisecond

// offloader is the daemon's side of the kernel fast path (SPEC 4.7): it keeps the
// connection table true to the kernel's (a flow ends when the kernel's does: destroy
// events, and a dump for what events missed) and adds the kernel's accounting of
// offloaded flows to sgd's counters and flow logs, so that every packet is counted once,
// whether or not it crossed the queue.
//
// Counting once: the kernel counts every packet of a connection, including the ones sgd
// judged on the queue before it offloaded the flow; the table keeps what sgd counted of
// those (conntrack.Counted), and the first time a connection is read its kernel counts
// less those are what sgd did not see. From then on, each reading adds what grew.
type offloader struct {
	d   *Daemon
	k   *offload.Kernel
	log *zap.Logger

	mu      sync.Mutex
	credit  map[uint32]credited           // kernel connection id → what was added for it so far
	missing map[conntrack.Tuple]time.Time // offloaded flows absent from dumps, since when
	live    map[conntrack.Tuple]bool      // resync's: the flows the last dump held (kept for its room)
	polls   int                           // periodic polls so far

	// forgot holds the offloaded flows the judge forgot because the kernel no longer
	// carried them (alive), keyed by canonical tuple, until their connection's destroy
	// event comes: by then the table's flow of that tuple may be a newer connection's.
	// Its own lock keeps the judge clear of o.mu, which a poll holds for a walk of the
	// whole table; where both are held, o.mu is taken first.
	fmu    sync.Mutex
	forgot map[conntrack.Tuple]holder
}

// holder is what the table knew of one zone's flow of a kernel connection: the zone, the
// flow's direction, and what sgd counted of it on the queue.
type holder struct {
	zone    uint16
	ingress bool
	counted conntrack.Counted
	since   int64 // for forgot: when the judge forgot it (Unix nanoseconds)
}

// missingFor is how long an offloaded flow must be absent from the kernel's dumps before
// it is forgotten: a flow offloaded a moment ago may not be in the kernel's table yet (its
// first packet still on its way through the hooks), one whose packet was dropped after
// sgd's verdict never will be.
const missingFor = 2 * time.Second

// counts is a connection's packets and bytes, original direction then reply.
type counts struct{ op, ob, rp, rb uint64 }

// credited is what was added for a kernel connection, and when (Unix nanoseconds) a dump
// or its end last listed it.
type credited struct {
	counts
	listed int64
}

// startOffload turns the kernel fast path on: conntrack's accounting and events in sgd's
// namespace (put back at a clean stop), the conntrack socket, and the judge's part in
// opt. stop, called when sgd stops after its rules are removed, removes sgd's timeout
// policies and restores the sysctls.
func (d *Daemon) startOffload(ctx context.Context, opt *filter.Options) (stop func(), err error) {
	kernel, err := offload.KernelDefaults()
	if err != nil {
		return nil, fmt.Errorf("kernel fast path (turn it off with --fast-path=false): %w", err)
	}
	k, err := offload.Open(ctx, d.log)
	if err != nil {
		return nil, fmt.Errorf("kernel fast path (turn it off with --fast-path=false): %w", err)
	}
	sc := &offload.Sysctls{}
	changed, err := sc.Enable()
	if err != nil {
		k.Close()
		_ = sc.Restore()
		return nil, fmt.Errorf("kernel fast path (turn it off with --fast-path=false): %w", err)
	}
	if len(changed) > 0 {
		d.log.Info("kernel fast path: turned on conntrack accounting and events in this network namespace (restored at a clean stop)",
			zap.Strings("sysctls", changed))
	}
	d.off = &offloader{d: d, k: k, log: d.log, credit: map[uint32]credited{},
		missing: map[conntrack.Tuple]time.Time{}, live: map[conntrack.Tuple]bool{}, forgot: map[conntrack.Tuple]holder{}}
	d.off.unlabelLeftovers(ctx)
	to := conntrack.DefaultTimeouts()
	to.TCPEstablished = time.Duration(kernel.TCPEstablished) * time.Second
	to.UDP = time.Duration(kernel.UDP) * time.Second
	to.UDPStream = time.Duration(kernel.UDPStream) * time.Second
	opt.Offload = &filter.Offload{Kernel: to, Alive: d.off.alive, Forget: d.off.forget}
	return func() {
		k.Close()
		// A policy still attached to a live connection stays (the kernel refuses to delete
		// it); it is harmless, and the next start reuses it.
		if err := offload.Prune(context.Background(), nil); err != nil {
			d.log.Debug("kernel timeout policies left in use", zap.Error(err))
		}
		if err := sc.Restore(); err != nil {
			d.log.Warn("restoring conntrack sysctls", zap.Error(err))
		}
	}, nil
}

// unlabelLeftovers takes sgd's labels off every kernel connection that carries them when
// sgd starts: a previous run's (a label bit means a zone of the run that set it, and this
// run numbers its zones afresh), or one a packet carrying Mark labelled while no sgd judged
// the queue (fail_open). Their next packets go to the queue and are judged as after any
// restart; the host's own TCP connections were adopted.
func (o *offloader) unlabelLeftovers(ctx context.Context) {
	conns, err := o.k.Dump(ctx)
	if err != nil {
		o.log.Warn("reading the kernel's connections sgd offloaded before this start", zap.Error(err))
		return
	}
	n := 0
	for _, c := range conns {
		if err := o.k.Unlabel(ctx, c); err != nil {
			o.log.Warn("taking sgd's labels off a connection of an earlier run", zap.Stringer("conn", c), zap.Error(err))
			continue
		}
		n++
	}
	if n > 0 {
		o.log.Info("kernel fast path: connections offloaded before this start go back to the queue", zap.Int("connections", n))
	}
}

// run follows the kernel's destroy events and reads its counters every offloadPoll until
// ctx ends.
func (o *offloader) run(ctx context.Context) {
	go func() {
		err := o.k.Listen(ctx, o.ended, func(err error) {
			// Events were lost (the socket overran): the next dump finds what ended.
			o.log.Warn("kernel conntrack events lost; catching up from a dump", zap.Error(err))
			o.poll(ctx, true)
		})
		if err != nil && ctx.Err() == nil {
			o.log.Error("kernel conntrack events stopped: offloaded flows are forgotten only by dumps now", zap.Error(err))
		}
	}()
	every(ctx, offloadPoll, func() {
		o.polls++
		o.poll(ctx, o.polls%resyncEvery == 0)
	})
}

// alive is the judge's question (filter.Offload.Alive): does the kernel still carry the
// connection of t offloaded at t's zone? A connection of that tuple without the zone's
// label is a newer one (the offloaded one ended and its end is not read yet, or it
// ended in a clash with the one that won). When it cannot tell, the answer is no: the
// flow is forgotten and the packet judged by the rules, which is never more open.
func (o *offloader) alive(t conntrack.Tuple) bool {
	ctx, cancel := context.WithTimeout(context.Background(), aliveTimeout)
	defer cancel()
	c, ok, err := o.k.Lookup(ctx, t.Proto, t.Src, t.Dst, t.SrcPort, t.DstPort)
	if err != nil {
		o.log.Debug("kernel conntrack lookup failed; judging the packet by the rules", zap.Error(err))
		return false
	}
	return ok && c.Labels.Has(t.Zone)
}

// forget is the judge's (filter.Offload.Forget): the kernel no longer carries the
// offloaded flow of t, whose end it has yet to report, and the packet at hand starts a
// newer flow on the same tuple. The flow leaves the table, and what the table knew of it
// waits in o.forgot for that report (ended).
func (o *offloader) forget(t conntrack.Tuple) {
	o.fmu.Lock()
	defer o.fmu.Unlock()
	if info, counted, ok := o.d.table.Forget(&t); ok && info.Offloaded {
		o.forgot[canonical(t)] = holder{zone: t.Zone, ingress: info.Meta.Ingress, counted: counted, since: time.Now().UnixNano()}
	}
}

// ended takes a connection the kernel has destroyed: its last counts, then its flows
// leave the table. c's flows are the offloaded flows of its tuple at the zones of its
// labels or, as a destroy event carries none, of the devices in force; where the judge
// already forgot one (alive), what it kept of it counts instead, and the table's flow of
// that tuple, a newer connection's, stays.
func (o *offloader) ended(c offload.Conn) {
	zones := c.Labels.Zones(nil)
	if len(zones) == 0 {
		for _, name := range o.d.ctl.Running().Policy.DeviceNames() {
			zones = append(zones, o.d.zones.Of(name))
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var hs []holder
	o.fmu.Lock()
	for _, z := range zones {
		if k, ok := o.forgotten(&c, z); ok {
			hs = append(hs, o.forgot[k])
			delete(o.forgot, k)
		} else if h, t, ok := o.holder(&c, z); ok {
			o.d.table.Forget(&t)
			hs = append(hs, h)
		}
	}
	o.fmu.Unlock()
	o.add(&c, hs, time.Now().UnixNano())
	delete(o.credit, c.ID)
}

// holder looks up the table's offloaded flow of c at zone z, under either of its keys
// (tuplesOf), and returns it with the key it is stored under.
func (o *offloader) holder(c *offload.Conn, z uint16) (holder, conntrack.Tuple, bool) {
	t, natted, nat := tuplesOf(c, z)
	info, counted, ok := o.d.table.Counted(&t)
	if !ok && nat {
		t = natted
		info, counted, ok = o.d.table.Counted(&t)
	}
	return holder{zone: z, ingress: info.Meta.Ingress, counted: counted}, t, ok
}

// forgotten returns the o.forgot key of c's flow at zone z, if the judge forgot it.
// o.fmu is held.
func (o *offloader) forgotten(c *offload.Conn, z uint16) (conntrack.Tuple, bool) {
	t, natted, nat := tuplesOf(c, z)
	if k := canonical(t); o.hasForgot(k) {
		return k, true
	}
	if k := canonical(natted); nat && o.hasForgot(k) {
		return k, true
	}
	return conntrack.Tuple{}, false
}

// hasForgot reports whether o.forgot holds k. o.fmu is held.
func (o *offloader) hasForgot(k conntrack.Tuple) bool {
	_, ok := o.forgot[k]
	return ok
}

// poll reads every offloaded connection's counts and, with resync, forgets offloaded flows
// the kernel has not had for missingFor (a walk of the whole table: a catch-up after lost
// events and every resyncEvery-th periodic poll do it).
func (o *offloader) poll(ctx context.Context, resync bool) {
	conns, err := o.k.Dump(ctx)
	if err != nil {
		o.log.Warn("reading the kernel's offloaded connections", zap.Error(err))
		return
	}
	now := time.Now().UnixNano()
	o.mu.Lock()
	defer o.mu.Unlock()
	var zs []uint16
	var hs []holder
	for i := range conns {
		c := &conns[i]
		zs, hs = c.Labels.Zones(zs[:0]), hs[:0]
		for _, z := range zs {
			if h, _, ok := o.holder(c, z); ok {
				hs = append(hs, h)
			}
		}
		o.add(c, hs, now)
	}
	// Ended, and its event lost (one on its way is read well within missingFor: forgetting
	// it sooner would count it twice when the event comes).
	for id, e := range o.credit {
		if now-e.listed >= int64(missingFor) {
			delete(o.credit, id)
		}
	}
	o.fmu.Lock()
	for k, h := range o.forgot {
		if now-h.since >= int64(missingFor) {
			delete(o.forgot, k)
		}
	}
	o.fmu.Unlock()
	if resync {
		o.resync(conns, time.Unix(0, now))
	}
}

// resyncEvery is how many periodic polls (offloadPoll apart) go by between walks of the
// whole table for offloaded flows the kernel does not have (resync): the walk is a safety
// net for ends no event reported, and costs a look-up per tracked flow.
const resyncEvery = 6

// resync forgets the offloaded flows of the table that conns, the kernel's, have not held
// for missingFor. o.mu is held.
func (o *offloader) resync(conns []offload.Conn, now time.Time) {
	clear(o.live)
	var zs []uint16
	for i := range conns {
		zs = conns[i].Labels.Zones(zs[:0])
		for _, z := range zs {
			t, natted, nat := tuplesOf(&conns[i], z)
			o.live[canonical(t)] = true
			if nat {
				o.live[canonical(natted)] = true
			}
		}
	}
	var gone []conntrack.Tuple
	missing := map[conntrack.Tuple]time.Time{}
	o.d.table.Range(func(t conntrack.Tuple, info conntrack.FlowInfo) bool {
		if k := canonical(t); info.Offloaded && !o.live[k] {
			since, ok := o.missing[k]
			switch {
			case !ok:
				missing[k] = now
			case now.Sub(since) >= missingFor:
				gone = append(gone, t)
			default:
				missing[k] = since
			}
		}
		return true
	})
	o.missing = missing
	for i := range gone {
		o.d.table.Forget(&gone[i])
	}
}

// readOffloaded brings the counters up to the kernel's accounting of offloaded flows, so
// that a metrics scrape or `sgd status` counts every packet up to now (a no-op without the
// fast path).
func (d *Daemon) readOffloaded() {
	if d.off == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	d.off.poll(ctx, false)
}

// add credits what c's counts grew by since they were last read to its flows hs; now is
// the time of the reading (Unix nanoseconds). o.mu is held.
func (o *offloader) add(c *offload.Conn, hs []holder, now int64) {
	e, seen := o.credit[c.ID]
	prev := e.counts
	if !seen && len(hs) > 0 {
		// The packets sgd judged itself before the kernel took the flow over.
		prev.op, prev.ob = hs[0].counted.Packets, hs[0].counted.Bytes
	}
	cur := counts{c.OrigPackets, c.OrigBytes, c.ReplyPackets, c.ReplyBytes}
	o.credit[c.ID] = credited{counts: cur, listed: now}
	delta := counts{sub(cur.op, prev.op), sub(cur.ob, prev.ob), sub(cur.rp, prev.rp), sub(cur.rb, prev.rb)}
	if delta == (counts{}) {
		return
	}
	for _, h := range hs {
		orig := filter.DirEgress
		if h.ingress {
			orig = filter.DirIngress
		}
		o.d.engine.CountOffloaded(orig, delta.op, delta.ob)
		o.d.engine.CountOffloaded(orig^1, delta.rp, delta.rb)
		if o.d.flows != nil {
			o.d.flows.addOffloaded(o.d.flowID(h.zone), *c, delta.op, delta.ob, delta.rp, delta.rb)
		}
	}
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// tuplesOf is c's key in the table's zone z: the original direction's tuple, as sgd's
// hooks before any NAT of the destination see it (OUTPUT), and, when the kernel rewrote
// the destination (DNAT, REDIRECT: nat is true), the tuple with the new one, as sgd's
// hooks after PREROUTING's NAT see it (INPUT, FORWARD). A rewritten source (SNAT,
// masquerade) happens after sgd's hooks, which see the original.
func tuplesOf(c *offload.Conn, z uint16) (t, natted conntrack.Tuple, nat bool) {
	t = conntrack.Tuple{Zone: z, Proto: c.Proto, Src: c.Src, Dst: c.Dst, SrcPort: c.SrcPort, DstPort: c.DstPort}
	if !c.ReplySrc.IsValid() || c.ReplySrc == c.Dst && c.ReplySrcPort == c.DstPort {
		return t, conntrack.Tuple{}, false
	}
	natted = t
	natted.Dst, natted.DstPort = c.ReplySrc, c.ReplySrcPort
	return t, natted, true
}

// canonical is t with its endpoints in one order, so that a flow keyed from either side
// compares equal.
func canonical(t conntrack.Tuple) conntrack.Tuple {
	if t.Dst.Less(t.Src) || t.Dst == t.Src && t.DstPort < t.SrcPort {
		t.Src, t.Dst, t.SrcPort, t.DstPort = t.Dst, t.Src, t.DstPort, t.SrcPort
	}
	return t
}

// flowID is the interface-id of zone z's flow-log records: a port's ENI, an interface's
// name.
func (d *Daemon) flowID(z uint16) string {
	name, ok := d.zones.Name(z)
	if !ok {
		return ""
	}
	if itf := d.ctl.Running().Policy.Interface(name); itf != nil && itf.Port != nil {
		return itf.Port.ENI
	}
	return name
}
