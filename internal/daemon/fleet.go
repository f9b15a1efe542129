package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
	"github.com/sgd-firewall/sgd/internal/store"
)

// fleet is fleet mode's state while sgd runs (SPEC 4.6): the API's objects in etcd, as one
// of the controller's sources whether or not this host serves the API, followed through a
// watch; this host's member record, published under a lease; and the other hosts'
// records, as a second source (store.MemberSource) that makes their addresses members of
// their groups here.
//
// Start: sgd reads etcd; when etcd cannot be reached it starts from the state it last
// applied, cached in the state directory (store.SaveCache after every applied revision),
// and says it is stale; with no cache either it refuses to start: there is nothing it
// "last had", and enforcing the file alone could be more open than the fleet's groups
// (an interface attached to a group through the API would fall back to none, or to the
// file's). Running: a lost connection keeps the running policy (the watch resumes on its
// own and catches up), logged once each way, with sgd_store_connected and `sgd status`.
//
// Membership: at start the host takes its key (<prefix>members/<host_id>) before anything
// is installed — waiting for a dead lease of its own previous run, refused when another
// live host has its id — and after that every policy it puts in force, every change of
// its interfaces' addresses included (the controller's Refresh), is published as its
// record (the membership publisher, last of the controller's publishers). The other
// hosts' records are followed as the API state is, and cached next to it
// (store.MembersCacheFile): a start with etcd unreachable keeps the members it last had.
// A start with no members cache starts with none: fewer members only ever match less.
type fleet struct {
	st      *store.Etcd
	src     *store.Source
	members *store.MemberSource
	reg     *store.Registration // nil before run
	dir     string              // the state directory, where the caches are
	eps     string
	host    string // daemon.etcd.host_id
	ttl     time.Duration
	log     *zap.Logger
	probe   time.Duration // how often connectivity is checked
	// addrs are the addresses of one of this host's interfaces (rules.Env.LocalAddrs).
	addrs func(string) []netip.Addr

	connected atomic.Bool
	applied   atomic.Uint64 // the revision last put in force
}

// fleetProbe is how often a host checks that etcd answers (sgd_store_connected).
const fleetProbe = time.Second

// openFleet connects to etcd and loads the fleet's state, or the cache (see fleet).
func openFleet(ctx context.Context, set settings.Daemon, log *zap.Logger) (*fleet, error) {
	if msg := settings.CheckHostID(set.Etcd.HostID); msg != "" {
		return nil, fmt.Errorf("daemon.etcd.host_id %q %s: name this host with daemon.etcd.host_id or --etcd-host-id (the default is the host name)",
			set.Etcd.HostID, msg)
	}
	tc, err := etcdTLS(set.Etcd)
	if err != nil {
		return nil, err
	}
	st, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: set.Etcd.EndpointList(), Prefix: set.Etcd.Prefix, TLS: tc,
		RequestTimeout: 3 * time.Second, Logger: log})
	if err != nil {
		return nil, err
	}
	f := &fleet{st: st, dir: set.StateDir, eps: set.Etcd.Endpoints, host: set.Etcd.HostID,
		ttl: time.Duration(set.Etcd.MemberTTL) * time.Second, log: log.With(zap.String("host_id", set.Etcd.HostID)), probe: fleetProbe}
	snap, err := st.Load(ctx)
	if err != nil {
		cached, cerr := store.LoadCache(set.StateDir)
		if cerr != nil {
			st.Close()
			if errors.Is(cerr, fs.ErrNotExist) {
				return nil, fmt.Errorf("%w; and %s holds no state applied before: in fleet mode sgd starts from etcd or from the last state it applied, never from the file alone (start etcd, or check --etcd-endpoints)",
					err, filepath.Join(set.StateDir, store.CacheFile))
			}
			return nil, fmt.Errorf("%w; and the cached state cannot be read: %w", err, cerr)
		}
		log.Warn("etcd unreachable at start: enforcing the state this host last applied (stale until etcd answers)",
			zap.String("endpoints", f.eps), zap.Uint64("revision", cached.Revision), zap.Error(err))
		snap = cached
	} else {
		f.connected.Store(true)
		f.save(snap)
	}
	f.src = store.NewSourceAt(st, snap)
	f.src.ForHost(f.host)
	f.applied.Store(snap.Revision)
	f.src.OnApplied(f.onApplied)
	f.members = store.NewMemberSource(f.host, f.loadMembers(ctx), log)
	f.members.OnApplied(f.onMembers)
	return f, nil
}

// loadMembers reads the fleet's members, or when etcd does not answer the members this
// host last applied; none when it has no cache either.
func (f *fleet) loadMembers(ctx context.Context) *store.Members {
	if f.connected.Load() {
		view, err := f.st.LoadMembers(ctx)
		if err == nil {
			f.saveMembers(view)
			return view
		}
		f.log.Warn("etcd: the fleet's members cannot be read; starting with the ones this host last applied", zap.Error(err))
	}
	view, err := store.LoadMembersCache(f.dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			f.log.Warn("the cached members cannot be read", zap.Error(err))
		}
		f.log.Warn("no members to start with: other hosts' addresses match no group reference here until etcd answers")
		return &store.Members{}
	}
	f.log.Warn("starting with the fleet's members this host last applied (stale until etcd answers)",
		zap.Int64("revision", view.Revision), zap.Int("hosts", len(view.Hosts)))
	return view
}

// sources are the controller's sources fleet mode adds: the API state, the other hosts.
func (f *fleet) sources() []controller.Source { return []controller.Source{f.src, f.members} }

// etcdTLS is the client's TLS config from the settings' files; nil for plain connections.
func etcdTLS(e settings.Etcd) (*tls.Config, error) {
	if e.CACert == "" && e.Cert == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CACert != "" {
		pem, err := os.ReadFile(e.CACert)
		if err != nil {
			return nil, fmt.Errorf("daemon.etcd.cacert: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("daemon.etcd.cacert %s: no PEM certificate in it", e.CACert)
		}
	}
	if e.Cert != "" {
		c, err := tls.LoadX509KeyPair(e.Cert, e.Key)
		if err != nil {
			return nil, fmt.Errorf("daemon.etcd.cert/key: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

// run joins the fleet with the running state's interfaces and ports, then follows the
// store and the other hosts and checks the connection until ctx is done; r is the
// controller. It fails when another live host has this host's id (nothing is published
// then); with etcd unreachable it joins when etcd answers. The membership publisher
// (publisher) publishes every later policy.
func (f *fleet) run(ctx context.Context, ctl *controller.Controller, addrs func(string) []netip.Addr) error {
	f.addrs = addrs
	reg, err := f.st.Join(ctx, store.JoinOptions{HostID: f.host, TTL: f.ttl}, f.record(ctl.Running().Policy))
	var dup *store.DuplicateHostError
	if errors.As(err, &dup) {
		return fmt.Errorf("daemon.etcd.host_id %q: %w; give each host its own daemon.etcd.host_id (or --etcd-host-id; the default is the host name)", f.host, err)
	}
	if err != nil {
		f.log.Warn("fleet: cannot publish this host's interfaces yet (etcd unreachable); it joins when etcd answers", zap.Error(err))
	}
	f.reg = reg
	var others []string
	for _, m := range f.members.View().Hosts {
		if m.HostID != f.host {
			others = append(others, m.HostID)
		}
	}
	f.log.Info("fleet: the other hosts at start", zap.Strings("host_ids", others))
	go f.src.Follow(ctx, f.st.Watch(ctx, f.src.Revision()), ctl)
	go f.members.Follow(ctx, f.st.WatchMembers(ctx, f.members.View()), ctl)
	go f.check(ctx)
	return nil
}

// close leaves the fleet (a clean stop: the lease is revoked, and the host drops out of
// every other host's groups at once) and closes the store.
func (f *fleet) close() {
	if f.reg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := f.reg.Leave(ctx); err != nil {
			f.log.Warn("fleet: leaving", zap.Error(err))
		}
		cancel()
	}
	f.st.Close()
}

// publisher publishes each policy put in force as this host's member record; the
// controller's last publisher, so that it publishes only what every other took.
func (f *fleet) publisher() controller.Publisher { return membership{f} }

type membership struct{ f *fleet }

func (membership) Name() string              { return "fleet membership" }
func (membership) Check(*rules.Policy) error { return nil }
func (m membership) Publish(_ context.Context, p *rules.Policy) error {
	if m.f.reg != nil {
		m.f.reg.Set(m.f.record(p)) // published in the background: etcd may not answer
	}
	return nil
}

// record is this host's member record for p: its interfaces with their addresses on this
// host, its ports with their configured ones, and the groups in force on each but the
// default group this host made up for itself (it is this host's, not the fleet's: two
// hosts' made-up default groups are not one group).
func (f *fleet) record(p *rules.Policy) store.Member {
	m := p.Model
	// Which of this host's interfaces the API sets groups or timeouts of, in what is
	// being put in force (the staged change during an API call): the rest the file sets.
	api := map[string][2]bool{}
	if prop, err := f.src.Propose(context.Background()); err == nil {
		for _, itf := range prop.Config.Interfaces {
			api[itf.Name] = [2]bool{itf.SecurityGroups != nil, itf.ConnectionTracking != nil}
		}
	}
	groups := func(ids []string) []string {
		out := []string{}
		for _, id := range ids {
			if g := m.Group(id); g == nil || !g.Synthesized {
				out = append(out, id)
			}
		}
		return out
	}
	one := func(im *rules.IfaceModel, eni string, addrs []netip.Addr) store.MemberInterface {
		mi := store.MemberInterface{Name: im.Name, NetworkInterfaceID: eni, Addresses: []string{}, Groups: groups(im.Groups),
			FileGroups: !im.DefaultGroup && !api[im.Name][0], FileConnectionTracking: im.TimeoutsSet && !api[im.Name][1]}
		for _, a := range addrs {
			mi.Addresses = append(mi.Addresses, a.Unmap().WithZone("").String())
		}
		return mi
	}
	rec := store.Member{HostID: f.host, Interfaces: []store.MemberInterface{}}
	for i := range m.Interfaces {
		im := &m.Interfaces[i]
		var addrs []netip.Addr
		if f.addrs != nil {
			addrs = f.addrs(im.Name)
		}
		rec.Interfaces = append(rec.Interfaces, one(im, store.InterfaceENI(f.host, im.Name), addrs))
	}
	for i := range m.Ports {
		pm := &m.Ports[i]
		mi := one(&pm.IfaceModel, pm.ENI, pm.Addrs)
		mi.InstanceID = pm.InstanceID
		rec.Ports = append(rec.Ports, mi)
	}
	return rec
}

// check pings etcd every f.probe and logs each change of connectivity once.
func (f *fleet) check(ctx context.Context) {
	t := time.NewTicker(f.probe)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, f.probe)
		err := f.st.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch was := f.connected.Swap(err == nil); {
		case was && err != nil:
			f.log.Warn("etcd unreachable: keeping the running policy until it returns", zap.String("endpoints", f.eps),
				zap.Uint64("applied_revision", f.applied.Load()), zap.Error(err))
		case !was && err == nil:
			f.log.Info("etcd reachable: catching up", zap.String("endpoints", f.eps), zap.Uint64("applied_revision", f.applied.Load()))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// onApplied records a state put to the controller (store.Source.OnApplied).
func (f *fleet) onApplied(snap *store.Snapshot, err error) {
	if err != nil {
		f.log.Error("the fleet's state does not validate with this host's config: keeping the running policy",
			zap.Uint64("revision", snap.Revision), zap.Error(err))
		return
	}
	f.applied.Store(snap.Revision)
	f.save(snap)
}

func (f *fleet) save(snap *store.Snapshot) {
	if err := store.SaveCache(f.dir, snap); err != nil {
		f.log.Warn("cannot cache the applied etcd state: a start with etcd unreachable will be refused", zap.Error(err))
	}
}

// onMembers records a view of the fleet's members put to the controller
// (store.MemberSource.OnApplied). A view without this host while it holds its lease means
// its key went (deleted by hand): the registration checks, and joins again if so.
func (f *fleet) onMembers(view *store.Members, err error) {
	if err != nil {
		f.log.Error("the fleet's members do not validate with this host's config: keeping the running policy",
			zap.Int64("revision", view.Revision), zap.Error(err))
		return
	}
	f.saveMembers(view)
	if f.reg != nil && view.Host(f.host) == nil {
		if st, _, _ := f.reg.Status(); st == store.LeaseHeld {
			f.reg.Verify()
		}
	}
}

func (f *fleet) saveMembers(view *store.Members) {
	if err := store.SaveMembersCache(f.dir, view); err != nil {
		f.log.Warn("cannot cache the fleet's members: a start with etcd unreachable will start with none", zap.Error(err))
	}
}

// register adds the store's metrics to reg.
func (f *fleet) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sgd_store_connected",
			Help: "1 when etcd answers this host (fleet mode), 0 while it keeps its last applied state."}, func() float64 {
			if f.connected.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sgd_store_applied_revision",
			Help: "The etcd revision of the API state this host has in force."}, func() float64 {
			return float64(f.applied.Load())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sgd_fleet_members",
			Help: "The hosts of the fleet this host sees (member records in etcd, this host's own included)."}, func() float64 {
			return float64(len(f.members.View().Hosts))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sgd_fleet_lease_held",
			Help: "1 while this host's member record is published under its lease, 0 while it is not (lost, refused, waiting)."}, func() float64 {
			if f.lease() == store.LeaseHeld {
				return 1
			}
			return 0
		}),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// lease is the membership's state (none before run).
func (f *fleet) lease() store.LeaseState {
	if f.reg == nil {
		return store.LeaseNone
	}
	st, _, _ := f.reg.Status()
	return st
}

// StoreStatus is fleet mode in `sgd status`.
type StoreStatus struct {
	Backend         string `json:"backend"` // "etcd"
	Endpoints       string `json:"endpoints"`
	Connected       bool   `json:"connected"`
	AppliedRevision uint64 `json:"applied_revision"`
	// HostID is this host's id in the fleet; Lease its membership's state (store.LeaseState:
	// none, waiting, held, lost, duplicate, left) and LeaseTTL the TTL etcd granted, in
	// seconds (0 before it granted one).
	HostID   string `json:"host_id"`
	Lease    string `json:"lease"`
	LeaseTTL int    `json:"lease_ttl_seconds"`
	// Members are the ids of the hosts this host sees (its own included when published),
	// as of MembersRevision.
	Members         []string `json:"members"`
	MembersRevision int64    `json:"members_revision"`
}

func (f *fleet) status() *StoreStatus {
	s := &StoreStatus{Backend: "etcd", Endpoints: f.eps, Connected: f.connected.Load(), AppliedRevision: f.applied.Load(),
		HostID: f.host, Lease: string(store.LeaseNone), Members: []string{}}
	if f.reg != nil {
		st, _, ttl := f.reg.Status()
		s.Lease, s.LeaseTTL = string(st), int(ttl.Seconds())
	}
	view := f.members.View()
	s.MembersRevision = view.Revision
	for _, m := range view.Hosts {
		s.Members = append(s.Members, m.HostID)
	}
	return s
}
