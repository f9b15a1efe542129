package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/settings"
	"github.com/sgd-firewall/sgd/internal/store"
)

// fleet is fleet mode's state while sgd runs (SPEC 4.6): the API's objects in etcd, as one
// of the controller's sources whether or not this host serves the API, followed through a
// watch.
//
// Start: sgd reads etcd; when etcd cannot be reached it starts from the state it last
// applied, cached in the state directory (store.SaveCache after every applied revision),
// and says it is stale; with no cache either it refuses to start: there is nothing it
// "last had", and enforcing the file alone could be more open than the fleet's groups
// (an interface attached to a group through the API would fall back to none, or to the
// file's). Running: a lost connection keeps the running policy (the watch resumes on its
// own and catches up), logged once each way, with sgd_store_connected and `sgd status`.
type fleet struct {
	st    *store.Etcd
	src   *store.Source
	dir   string // the state directory, where the cache is
	eps   string
	log   *zap.Logger
	probe time.Duration // how often connectivity is checked

	connected atomic.Bool
	applied   atomic.Uint64 // the revision last put in force
}

// fleetProbe is how often a host checks that etcd answers (sgd_store_connected).
const fleetProbe = time.Second

// openFleet connects to etcd and loads the fleet's state, or the cache (see fleet).
func openFleet(ctx context.Context, set settings.Daemon, log *zap.Logger) (*fleet, error) {
	tc, err := etcdTLS(set.Etcd)
	if err != nil {
		return nil, err
	}
	st, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: set.Etcd.EndpointList(), Prefix: set.Etcd.Prefix, TLS: tc,
		RequestTimeout: 3 * time.Second, Logger: log})
	if err != nil {
		return nil, err
	}
	f := &fleet{st: st, dir: set.StateDir, eps: set.Etcd.Endpoints, log: log, probe: fleetProbe}
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
	f.applied.Store(snap.Revision)
	f.src.OnApplied(f.onApplied)
	return f, nil
}

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

// run follows the store and checks the connection until ctx is done; r is the controller.
func (f *fleet) run(ctx context.Context, r store.Reloader) {
	go f.src.Follow(ctx, f.st.Watch(ctx, f.src.Revision()), r)
	go f.check(ctx)
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
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// StoreStatus is fleet mode in `sgd status`.
type StoreStatus struct {
	Backend         string `json:"backend"` // "etcd"
	Endpoints       string `json:"endpoints"`
	Connected       bool   `json:"connected"`
	AppliedRevision uint64 `json:"applied_revision"`
}

func (f *fleet) status() *StoreStatus {
	return &StoreStatus{Backend: "etcd", Endpoints: f.eps, Connected: f.connected.Load(), AppliedRevision: f.applied.Load()}
}
