package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/metrics"
	"github.com/sgd-firewall/sgd/internal/netfilter"
	"github.com/sgd-firewall/sgd/internal/nfqueue"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// Options start a daemon.
type Options struct {
	ConfigPath string
	// Overrides are command-line settings; set fields win over the config's daemon section.
	Overrides rules.Daemon
	Version   string
	// Netfilter runs the iptables commands (zero value: netfilter.DefaultOptions()).
	Netfilter *netfilter.Options
}

// Daemon is a running sgd.
type Daemon struct {
	opt     Options
	set     Settings
	log     *zap.Logger
	start   time.Time
	epoch   time.Time // the monotonic clock's zero
	table   *conntrack.Table
	engine  *filter.Engine
	workers []*filter.Worker
	nf      *netfilter.Manager
	zones   *filter.Zones // interface zones, shared by the engine and the fast path's marks
	metrics *metrics.Metrics
	flows   *flowLog
	debug   bool // the log takes debug lines (each new flow, with its rule)

	mu         sync.Mutex // serialises reloads; guards the fields below
	model      *rules.Model
	spec       netfilter.Spec
	reloadsOK  uint64
	reloadsBad uint64
	lastReload time.Time
	lastError  string
}

// ConfigError is a configuration that failed to load or validate; the daemon did not start.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Run starts the daemon and blocks until ctx is done, then stops cleanly: it removes every
// netfilter rule it added and unbinds its queues. A config that does not validate returns
// a *ConfigError before anything is touched.
func Run(ctx context.Context, opt Options) error {
	// Take SIGHUP over first: its default action would kill the daemon with its rules
	// installed. One that arrives during start-up becomes a reload once running.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	m, err := rules.Load(opt.ConfigPath)
	if err != nil {
		return &ConfigError{err}
	}
	set := Resolve(m.Daemon, opt.Overrides)
	log, err := NewLogger(set.LogLevel, set.LogFormat)
	if err != nil {
		return &ConfigError{err}
	}
	defer log.Sync()
	pol, err := rules.Compile(m, rules.Env{LocalAddrs: LocalAddrs})
	if err != nil {
		return &ConfigError{err}
	}
	d := &Daemon{opt: opt, set: set, log: log, start: time.Now(), model: m, zones: filter.NewZones()}
	d.epoch = d.start
	d.debug = log.Core().Enabled(zap.DebugLevel)
	nfo := netfilter.DefaultOptions()
	if opt.Netfilter != nil {
		nfo = *opt.Netfilter
	}
	d.nf = netfilter.New(nfo)
	d.spec = d.netfilterSpec(m)
	if err := validateSpec(d.spec); err != nil {
		return &ConfigError{err}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	d.table = conntrack.New(conntrack.Config{Capacity: set.MaxTracked})
	go d.table.Run(ctx, time.Second, d.now)
	d.engine = filter.New(filter.Options{Table: d.table, Now: d.now, AllowRelatedICMP: set.AllowRelatedICMP,
		ExemptDHCP: set.ExemptDHCP, Zones: d.zones})
	for range set.QueueCount {
		d.workers = append(d.workers, d.engine.NewWorker())
	}
	d.engine.SetPolicy(pol, filter.ReadHost(pol.InterfaceNames()))

	if set.MetricsListen != "" {
		d.metrics = metrics.New(metrics.Options{Snapshot: d.snapshot, Queues: d.queueNumbers(), Version: opt.Version, GoVersion: runtime.Version()})
		d.metrics.SetConfigInfo(m.Hash)
		d.metrics.ConfigLoaded(d.start)
		if err := metrics.Serve(ctx, set.MetricsListen, d.metrics.Handler(), func(err error) {
			log.Error("metrics server stopped", zap.Error(err))
		}); err != nil {
			return fmt.Errorf("metrics on %s: %w", set.MetricsListen, err)
		}
	}
	if set.FlowLogFile != "" {
		fl, err := newFlowLog(set.FlowLogFile, time.Duration(set.FlowLogInterval)*time.Second, set.AccountID, len(d.workers))
		if err != nil {
			return &ConfigError{err}
		}
		d.flows = fl
		go fl.run(ctx, log)
	}

	queues, err := nfqueue.Open(nfqueue.Config{Num: set.QueueNum, Count: set.QueueCount}, d.readers(), func(err error) { log.Error("queue", zap.Error(err)) })
	if err != nil {
		return fmt.Errorf("open queues %d–%d (is another sgd running?): %w", set.QueueNum, set.QueueNum+set.QueueCount-1, err)
	}
	defer queues.Close()

	if err := d.nf.Apply(ctx, d.spec); err != nil {
		_ = d.nf.Remove(context.Background())
		return fmt.Errorf("install netfilter rules: %w", err)
	}
	log.Info("started",
		zap.String("version", opt.Version), zap.String("config", opt.ConfigPath), zap.String("config_hash", m.Hash[:12]),
		zap.Strings("interfaces", d.spec.Interfaces), zap.Int("groups", len(m.Groups)), zap.Int("rules", len(pol.Rules)-1),
		zap.Uint16("queue_num", set.QueueNum), zap.Uint16("queue_count", set.QueueCount), zap.Bool("fail_open", set.FailOpen),
		zap.Bool("fast_path", set.FastPath), zap.String("metrics", set.MetricsListen))

	if set.StatusSocket != "" {
		if err := d.serveStatus(ctx, set.StatusSocket); err != nil {
			log.Warn("status socket unavailable; `sgd status` will not reach this daemon (metrics still serve the counters)", zap.Error(err))
		}
	}
	notifyReady(log)
	go watchdog(ctx, log, d.queueNumbers(), queues.Beats)
	go d.watchReloads(ctx, hup)

	<-ctx.Done()
	log.Info("stopping: removing sgd's netfilter rules")
	rmCtx, rmCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rmCancel()
	if err := d.nf.Remove(rmCtx); err != nil {
		log.Error("remove netfilter rules", zap.Error(err))
		return err
	}
	if d.flows != nil {
		d.flows.flush(log)
	}
	log.Info("stopped")
	return nil
}

// now is the monotonic clock the table and engine share.
func (d *Daemon) now() int64 { return int64(time.Since(d.epoch)) }

func (d *Daemon) queueNumbers() []uint16 {
	var q []uint16
	for i := range d.set.QueueCount {
		q = append(q, d.set.QueueNum+i)
	}
	return q
}

// CheckNetfilter reports whether the model's interfaces can be filtered: the check
// `sgd run` makes before it installs rules (names it can put in a rule, and no bridge
// port or bond member among the devices of this host; see checkDevices).
func CheckNetfilter(m *rules.Model) error {
	d := &Daemon{set: Resolve(m.Daemon, rules.Daemon{}), zones: filter.NewZones()}
	return validateSpec(d.netfilterSpec(m))
}

// validateSpec is what must hold before s is installed, at start and at each reload.
func validateSpec(s netfilter.Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	return checkDevices(s.Interfaces)
}

func (d *Daemon) netfilterSpec(m *rules.Model) netfilter.Spec {
	s := netfilter.Spec{QueueNum: d.set.QueueNum, QueueCount: d.set.QueueCount, FailOpen: d.set.FailOpen}
	for _, itf := range m.Interfaces {
		s.Interfaces = append(s.Interfaces, itf.Name)
	}
	if d.set.FastPath {
		s.FastPathMask = FastPathMask
		s.Zones = make(map[string]uint16, len(s.Interfaces))
		for _, name := range s.Interfaces {
			s.Zones[name] = d.zones.Of(name)
		}
	}
	return s
}

// reload validates and compiles the config file and, when it is good, publishes it: the
// very next packet sees it. A bad file changes nothing but a log line and a counter.
func (d *Daemon) reload(ctx context.Context, why string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.reloadLocked(ctx)
	now := time.Now()
	if err != nil {
		d.reloadsBad++
		d.lastError = err.Error()
		d.log.Error("reload rejected; the running rules stay in force", zap.String("trigger", why), zap.Error(err))
	} else {
		d.reloadsOK++
		d.lastReload = now
		d.lastError = ""
		d.log.Info("reloaded", zap.String("trigger", why), zap.String("config_hash", d.model.Hash[:12]),
			zap.Strings("interfaces", d.spec.Interfaces), zap.Int("groups", len(d.model.Groups)))
	}
	if d.metrics != nil {
		// The hash first, so that any scrape begun after one that saw this reload counted
		// also sees its hash (one scrape gathers its collectors concurrently: no promise).
		if err == nil {
			d.metrics.SetConfigInfo(d.model.Hash)
		}
		d.metrics.ReloadResult(err == nil, now)
	}
	return err
}

func (d *Daemon) reloadLocked(ctx context.Context) error {
	m, err := rules.Load(d.opt.ConfigPath)
	if err != nil {
		return err
	}
	if Resolve(m.Daemon, d.opt.Overrides) != d.set {
		// Queues, limits and listeners are bound at start; say so rather than half-apply.
		d.log.Warn("daemon settings changed in the config; they take effect at the next restart (rules and interfaces reload now)")
	}
	pol, err := rules.Compile(m, rules.Env{LocalAddrs: LocalAddrs})
	if err != nil {
		return err
	}
	spec := d.netfilterSpec(m)
	if err := validateSpec(spec); err != nil {
		return err
	}
	// The policy is published before the hooks change: an added interface's first packets
	// find its groups, and a removed one's last packets are simply no longer filtered. If
	// the hooks cannot be changed, the previous policy and hooks are put back, so that a
	// rejected reload really leaves everything as it was.
	prev := d.engine.Policy()
	d.engine.SetPolicy(pol, filter.ReadHost(pol.InterfaceNames()))
	if !sameStrings(spec.Interfaces, d.spec.Interfaces) {
		if err := d.nf.Apply(ctx, spec); err != nil {
			d.engine.SetPolicy(prev, filter.ReadHost(prev.InterfaceNames()))
			if rerr := d.nf.Apply(ctx, d.spec); rerr != nil {
				d.log.Error("restore the previous netfilter rules", zap.Error(rerr))
			}
			return fmt.Errorf("install netfilter rules for the new interfaces: %w", err)
		}
	}
	d.model, d.spec = m, spec
	return nil
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// snapshot is what a metrics scrape reads.
func (d *Daemon) snapshot() metrics.Snapshot {
	var s metrics.Snapshot
	pk, by := d.engine.Counters()
	for dir := range 2 {
		for r := range filter.NumReasons {
			reason := filter.Reason(r)
			if pk[dir][r] == 0 {
				continue
			}
			c := metrics.Count{Direction: filter.Dir(dir).String(), Verdict: reason.Verdict().String(), Reason: reason.String()}
			c.Value = pk[dir][r]
			s.Packets = append(s.Packets, c)
			c.Value = by[dir][r]
			s.Bytes = append(s.Bytes, c)
			if reason == filter.ReasonTableFull {
				s.ConntrackAllowanceExceeded += pk[dir][r]
			}
		}
	}
	for k, n := range d.engine.RuleHits() {
		s.RuleHits = append(s.RuleHits, metrics.RuleHit{Group: k.Group, Rule: k.Rule, Value: n})
	}
	tcp, udp, icmp, other := d.table.CountByProto()
	s.TrackedFlows = map[string]int{"tcp": tcp, "udp": udp, "icmp": icmp, "other": other}
	d.mu.Lock()
	s.Interfaces = append(s.Interfaces, d.spec.Interfaces...)
	d.mu.Unlock()
	return s
}

var errNoDaemon = errors.New("no sgd daemon is running")

// addrString renders an address for logs and flow records ("-" when absent).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}
