package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/metrics"
	"github.com/sgd-firewall/sgd/internal/netfilter"
	"github.com/sgd-firewall/sgd/internal/nfqueue"
	"github.com/sgd-firewall/sgd/internal/offload"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
)

// Options start a daemon.
type Options struct {
	ConfigPath string
	// Overrides are command-line settings; set fields win over the config's daemon section.
	Overrides settings.Section
	Version   string
	// Netfilter runs the iptables commands (zero value: netfilter.DefaultOptions()).
	Netfilter *netfilter.Options
	// SSHConnection is $SSH_CONNECTION of the session sgd is started from ("": none), for
	// the lock-out warning, which goes to Stderr (nil: the log only) and the log.
	SSHConnection string
	Stderr        io.Writer
}

// Daemon is a running sgd.
type Daemon struct {
	opt     Options
	set     settings.Daemon
	log     *zap.Logger
	start   time.Time
	epoch   time.Time // the monotonic clock's zero
	table   *conntrack.Table
	engine  *filter.Engine
	workers []*filter.Worker
	nf      *netfilter.Manager
	zones   *filter.Zones // interface zones, shared by the engine and the fast path's labels
	metrics *metrics.Metrics
	flows   *flowLog
	debug   bool                   // the log takes debug lines (each new flow, with its rule)
	file    *controller.File       // the config file, the controller's one source
	ctl     *controller.Controller // the only writer of the running policy
	adopted map[string]int         // established connections adopted at start, per interface
	fleet   *fleet                 // fleet mode's store; nil otherwise
	off     *offloader             // the kernel fast path's bookkeeping; nil when it is off
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
	file := controller.NewFile(opt.ConfigPath)
	env := rules.Env{LocalAddrs: LocalAddrs}
	want, err := controller.Load(ctx, env, file)
	if err != nil {
		return &ConfigError{err}
	}
	m, pol := want.Model, want.Policy
	set := settings.Resolve(file.Settings(), opt.Overrides)
	log, err := NewLogger(set.LogLevel, set.LogFormat)
	if err != nil {
		return err // the file's settings validated: a flag's value (sgd run checks them first)
	}
	defer log.Sync()
	sources := []controller.Source{file}
	var fl *fleet
	if set.Etcd.Fleet() {
		// Fleet mode: the fleet's groups are in force on this host whether or not it
		// serves the API (which, when it does, writes them).
		if fl, err = openFleet(ctx, set, log); err != nil {
			return fmt.Errorf("fleet mode: %w", err)
		}
		defer fl.close()
		sources = append(sources, fl.sources()...)
	}
	var ea *api
	if set.APIListen != "" {
		if ea, err = openAPI(ctx, set, fl); err != nil {
			return err
		}
		defer ea.close()
		if fl == nil {
			sources = append(sources, ea.src)
		}
	}
	if len(sources) > 1 {
		// The API's store is a source of what is in force from the start: load again with it.
		if want, err = controller.Load(ctx, env, sources...); err != nil {
			return &ConfigError{err}
		}
		m, pol = want.Model, want.Policy
	}
	d := &Daemon{opt: opt, set: set, log: log, start: time.Now(), zones: filter.NewZones(), file: file, fleet: fl}
	d.epoch = d.start
	d.debug = log.Core().Enabled(zap.DebugLevel)
	nfo := netfilter.DefaultOptions()
	if opt.Netfilter != nil {
		nfo = *opt.Netfilter
	}
	// Refuse what filters nothing before anything is touched (SPEC 4.8).
	missing, err := CheckInterfaces(pol, set.AllowMissingInterfaces)
	if err != nil {
		return &ConfigError{err}
	}
	if len(missing) > 0 {
		log.Warn("configured interfaces do not exist; sgd filters each from the moment it appears", zap.Strings("missing", missing))
	}
	d.nf = netfilter.New(nfo)
	var hoff *controller.HookOffload
	if set.FastPath {
		hoff = &controller.HookOffload{Ensure: offload.Ensure, Prune: offload.Prune}
	}
	hooks := controller.NewHooks(d.nf, hookSpec(set), d.zones, hoff)
	if err := hooks.Check(pol); err != nil {
		return &ConfigError{err}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	d.table = conntrack.New(conntrack.Config{Capacity: set.MaxTracked})
	go d.table.Run(ctx, time.Second, d.now)
	eopt := filter.Options{Table: d.table, Now: d.now, AllowRelatedICMP: set.AllowRelatedICMP, ExemptDHCP: set.ExemptDHCP, Zones: d.zones}
	if set.FastPath {
		stop, err := d.startOffload(ctx, &eopt)
		if err != nil {
			return err
		}
		defer func() { cancel(); stop() }() // its event listener ends with ctx
	}
	d.engine = filter.New(eopt)
	for range set.QueueCount {
		d.workers = append(d.workers, d.engine.NewWorker())
	}
	copt := controller.Options{Sources: sources, Env: env, Log: log}
	if set.MetricsListen != "" {
		d.metrics = metrics.New(metrics.Options{Snapshot: d.snapshot, Queues: d.queueNumbers(), Version: opt.Version, GoVersion: runtime.Version()})
		copt.Metrics = d.metrics
	}
	d.ctl = controller.New(copt)
	if fl != nil && d.metrics != nil {
		if err := fl.register(d.metrics.Registry()); err != nil {
			return err
		}
	}
	// The judge takes the policy before the queues have readers: until it has one, the
	// engine drops every packet. The hooks join once the queues read (below).
	if err := d.ctl.Start(ctx, want, controller.Judge(d.engine), guard{}); err != nil {
		return err
	}

	if fl != nil {
		// From here on, every host's change reaches this one's packet path, and this host's
		// interfaces are members of their groups on every host (refused, with nothing
		// installed yet, when another live host has this one's id).
		if err := fl.run(ctx, d.ctl, env.LocalAddrs); err != nil {
			return fmt.Errorf("fleet mode: %w", err)
		}
		log.Info("fleet mode: following etcd", zap.String("endpoints", set.Etcd.Endpoints),
			zap.String("prefix", set.Etcd.Prefix), zap.Uint64("revision", fl.applied.Load()), zap.String("host_id", set.Etcd.HostID))
	}
	if d.off != nil {
		go d.off.run(ctx)
	}
	if d.metrics != nil {
		if err := metrics.Serve(ctx, set.MetricsListen, d.metrics.Handler(), func(err error) {
			log.Error("metrics server stopped", zap.Error(err))
		}); err != nil {
			return fmt.Errorf("metrics on %s: %w", set.MetricsListen, err)
		}
	}
	if ea != nil {
		// Bound before anything is installed, so that a taken port changes nothing.
		if err := d.serveAPI(ctx, ea); err != nil {
			return fmt.Errorf("EC2 API on %s: %w", set.APIListen, err)
		}
		store := "state_dir " + set.StateDir
		if fl != nil {
			store = "etcd " + set.Etcd.Endpoints
		}
		log.Info("EC2 API listening", zap.String("address", set.APIListen), zap.String("store", store))
	}
	if set.FlowLogFile != "" {
		fl, err := newFlowLog(set.FlowLogFile, time.Duration(set.FlowLogInterval)*time.Second, set.AccountID, len(d.workers))
		if err != nil {
			// Not the config's fault: name the setting, the path and what the system said.
			name := "daemon.flow_log_file"
			if opt.Overrides.FlowLogFile != "" {
				name = "--flow-log"
			}
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return fmt.Errorf("%s %s: %w", name, set.FlowLogFile, err)
		}
		d.flows = fl
		go fl.run(ctx, log)
	}

	queues, err := nfqueue.Open(nfqueue.Config{Num: set.QueueNum, Count: set.QueueCount}, d.readers(), func(err error) { log.Error("queue", zap.Error(err)) })
	if err != nil {
		return fmt.Errorf("open queues %d–%d (is another sgd running?): %w", set.QueueNum, set.QueueNum+set.QueueCount-1, err)
	}
	defer queues.Close()

	// Before the hooks go in: the host's open connections become tracked flows, and the
	// person starting sgd over SSH hears whether the config would cut them off.
	if set.AdoptEstablished {
		d.adopt()
	}
	d.warnLockout(pol)
	bridge := &bridgeCalls{log: log, sysfs: "/sys/class/net"}
	defer bridge.restore()
	if err := d.ctl.Attach(ctx, bridge); err != nil {
		return &ConfigError{err}
	}
	if err := d.ctl.Attach(ctx, hooks); err != nil {
		_ = d.nf.Remove(context.Background())
		return fmt.Errorf("install netfilter rules: %w", err)
	}
	if fl != nil {
		_ = d.ctl.Attach(ctx, fl.publisher()) // last: it publishes what every other publisher took; it fails never
	}
	log.Info("started",
		zap.String("version", opt.Version), zap.String("config", opt.ConfigPath), zap.String("config_hash", want.Version[:12]),
		zap.Strings("interfaces", pol.InterfaceNames()), zap.Strings("ports", pol.PortNames()), zap.Int("groups", len(m.Groups)), zap.Int("rules", len(pol.Rules)-1),
		zap.Uint16("queue_num", set.QueueNum), zap.Uint16("queue_count", set.QueueCount), zap.Bool("fail_open", set.FailOpen),
		zap.Bool("fast_path", set.FastPath), zap.String("metrics", set.MetricsListen),
		zap.Bool("audit", set.Audit), zap.Bool("adopt_established", set.AdoptEstablished), zap.Strings("missing_interfaces", missing))
	if set.Audit {
		log.Warn("AUDIT MODE: every packet is judged, tracked, counted and logged, and none is dropped; " +
			"what would have been dropped is counted as verdict would_drop")
	}
	go func() {
		if err := d.ctl.FollowHost(ctx); err != nil {
			log.Warn("not following the host's devices: an interface that appears later is filtered, but its addresses are learnt only at a reload", zap.Error(err))
		}
	}()

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

// CheckNetfilter reports whether p's interfaces can be filtered with the settings of the
// config's daemon: section: the check `sgd run` makes before it installs rules (names it
// can put in a rule, and no bridge port or bond member among the devices of this host).
func CheckNetfilter(p *rules.Policy, file settings.Section) error {
	set := settings.Resolve(file, settings.Section{})
	var off *controller.HookOffload
	if set.FastPath {
		off = &controller.HookOffload{}
	}
	return controller.NewHooks(nil, hookSpec(set), filter.NewZones(), off).Check(p)
}

// hookSpec is what the netfilter rules are made of besides the devices and the fast path.
func hookSpec(set settings.Daemon) netfilter.Spec {
	return netfilter.Spec{QueueNum: set.QueueNum, QueueCount: set.QueueCount, FailOpen: set.FailOpen}
}

// reload has the controller load the config again and, when it is good, publish it: the
// very next packet sees it. A bad file changes nothing but a log line and a counter.
func (d *Daemon) reload(ctx context.Context, why string) error {
	err := d.ctl.Reload(ctx, why)
	if err == nil && settings.Resolve(d.file.Settings(), d.opt.Overrides) != d.set {
		// Queues, limits and listeners are bound at start; say so rather than half-apply.
		d.log.Warn("daemon settings changed in the config; they take effect at the next restart (rules and interfaces reload now)")
	}
	if err == nil {
		// A reload may name a device to come (TestReloadAddsAndRemovesInterfaces): it is
		// taken, as with allow_missing_interfaces, since sgd already runs; say so.
		if missing := d.missingInterfaces(); len(missing) > 0 {
			d.log.Warn("configured interfaces do not exist; sgd filters each from the moment it appears", zap.Strings("missing", missing))
		}
	}
	return err
}

// snapshot is what a metrics scrape reads.
func (d *Daemon) snapshot() metrics.Snapshot {
	var s metrics.Snapshot
	d.readOffloaded()
	pk, by := d.engine.Counters()
	for dir := range 2 {
		for r := range filter.NumReasons {
			reason := filter.Reason(r)
			if pk[dir][r] == 0 {
				continue
			}
			c := metrics.Count{Direction: filter.Dir(dir).String(), Verdict: d.verdict(reason), Reason: reason.String()}
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
	s.OffloadedFlows = d.table.Offloaded()
	s.OffloadedPackets, _ = d.engine.Offloaded()
	s.Interfaces = append(s.Interfaces, d.ctl.Running().Policy.DeviceNames()...)
	s.Missing = d.missingInterfaces()
	return s
}

// verdict is the verdict label of packets judged for reason: in audit mode, nothing is
// dropped, and what would have been is "would_drop".
func (d *Daemon) verdict(r filter.Reason) string {
	if d.set.Audit && r.Verdict() == filter.Drop {
		return verdictWouldDrop
	}
	return r.Verdict().String()
}

// verdictWouldDrop is the verdict label (metrics, status) of a packet the rules drop
// that audit mode let through.
const verdictWouldDrop = "would_drop"

var errNoDaemon = errors.New("no sgd daemon is running")

// addrString renders an address for logs and flow records ("-" when absent).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}
