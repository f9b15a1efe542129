package store_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/store"
	"github.com/sgd-firewall/sgd/internal/store/etcdtest"
)

// Fleet convergence (SPEC 3.1, 4.6): N simulated hosts in this process, each as sgd runs
// fleet mode — its own etcd client (store.Etcd) watching the API's state, a store.Source
// following the watch into its own controller, which validates, compiles and publishes
// to its own judge (filter.Engine) — plus, as each host publishes its members, a lease of
// its own with a member key under it, kept alive. One real etcd (embedded) serves them
// all. A writer commits a change through store.Etcd, as an API would; the figure is the
// time from the start of that commit to the moment each host's controller has published
// the new state to its judge (store.Source.OnApplied).
//
// Run by hand (2 cores: the hosts share them, so the figure is this machine's, not a
// fleet's, whose hosts each have their own):
//
//	go test -run '^$' -bench FleetConvergence -benchtime 20x -count 3 ./internal/store/ -args -sgd.fleet-hosts=1000
//
// TestFleetConvergence runs the same with a few hosts in CI, to keep it working; it
// asserts what converged, not how fast.

var fleetHosts = flag.Int("sgd.fleet-hosts", 1000, "simulated hosts of BenchmarkFleetConvergence")

// simHost is one simulated host of the fleet.
type simHost struct {
	id     int
	st     *store.Etcd
	src    *store.Source
	ctl    *controller.Controller
	engine *filter.Engine
	member *clientv3.Client // the member key's lease is kept alive on this one
}

// fleetSim is the fleet and the writes' bookkeeping.
type fleetSim struct {
	srv    *etcdtest.Server
	writer *store.Etcd
	snap   *store.Snapshot // the writer's last committed state
	hosts  []*simHost

	mu      sync.Mutex
	target  uint64          // the revision being waited for
	start   time.Time       // when its commit began
	took    []time.Duration // per host: from start to applied (0: not yet)
	pending int
	done    chan struct{}
	bad     []string // reloads that failed
}

// simGroups is the fleet's state before the writes: a few groups in the shape of the
// README's, with eth0 (every host's) attached to sg-web and sg-app.
func simGroups() *store.Snapshot {
	port := func(p int) *int { return &p }
	n := 0
	rule := func(proto string, from, to int, cidr, group string) store.Rule {
		n++
		r := store.Rule{ID: fmt.Sprintf("sgr-%017x", n), Protocol: proto, CidrIPv4: cidr, ReferencedGroupID: group}
		if proto != "-1" {
			r.FromPort, r.ToPort = port(from), port(to)
		}
		return r
	}
	all := func() []store.Rule { return []store.Rule{rule("-1", 0, 0, "0.0.0.0/0", "")} }
	web := store.Group{ID: "sg-web", Name: "web", Description: "web servers", Egress: all(), Ingress: []store.Rule{
		rule("tcp", 80, 80, "0.0.0.0/0", ""), rule("tcp", 443, 443, "0.0.0.0/0", ""), rule("tcp", 22, 22, "", "sg-mgmt")}}
	for i := range 20 {
		web.Ingress = append(web.Ingress, rule("tcp", 8000+i, 8000+i, fmt.Sprintf("198.51.100.%d/32", i), ""))
	}
	return &store.Snapshot{
		Groups: []store.Group{web,
			{ID: "sg-app", Name: "app", Description: "app tier", Egress: all(), Ingress: []store.Rule{rule("tcp", 9000, 9100, "", "sg-web")}},
			{ID: "sg-db", Name: "db", Description: "databases", Egress: all(), Ingress: []store.Rule{rule("tcp", 3306, 3306, "", "sg-app")}},
			{ID: "sg-mgmt", Name: "mgmt", Description: "management", Egress: all()}},
		Interfaces: []store.Attachment{{Interface: "eth0", Groups: []string{"sg-web", "sg-app"}}},
	}
}

// newFleetSim starts etcd, commits the initial state and starts n hosts.
func newFleetSim(tb testing.TB, n int) *fleetSim {
	tb.Helper()
	f := &fleetSim{srv: etcdtest.Start(tb)}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	var err error
	if f.writer, err = store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: []string{f.srv.Client}}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.writer.Close() })
	f.snap = simGroups()
	if err := f.writer.Commit(ctx, f.snap); err != nil {
		tb.Fatalf("commit the initial state: %v", err)
	}
	file := filepath.Join(tb.TempDir(), "sgd.yaml")
	if err := os.WriteFile(file, []byte("interfaces:\n  - name: eth0\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	f.hosts = make([]*simHost, n)
	// Started side by side, a few at a time: each dial and first load is a round trip.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			h, err := f.startHost(ctx, i, file)
			if err != nil {
				errs <- fmt.Errorf("host %d: %w", i, err)
				return
			}
			f.hosts[i] = h
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		for _, h := range f.hosts {
			h.member.Close()
			h.st.Close()
		}
	})
	return f
}

func (f *fleetSim) startHost(ctx context.Context, id int, file string) (*simHost, error) {
	h := &simHost{id: id}
	var err error
	if h.st, err = store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: []string{f.srv.Client}}); err != nil {
		return nil, err
	}
	if h.src, err = store.NewSource(ctx, h.st); err != nil {
		return nil, err
	}
	h.engine = filter.New(filter.Options{Table: conntrack.New(conntrack.Config{Capacity: 1024, Shards: 1}),
		Now: func() int64 { return 1 }, Zones: filter.NewZones()})
	h.ctl = controller.New(controller.Options{Sources: []controller.Source{controller.NewFile(file), h.src}})
	s, err := h.ctl.Load(ctx)
	if err != nil {
		return nil, err
	}
	if err := h.ctl.Start(ctx, s, controller.Judge(h.engine)); err != nil {
		return nil, err
	}
	h.src.OnApplied(func(snap *store.Snapshot, err error) { f.applied(h, snap, err) })
	go h.src.Follow(ctx, h.st.Watch(ctx, h.src.Revision()), h.ctl)

	// The host's member key under a lease of its own, kept alive, as hosts publish their
	// interfaces (SPEC 4.6).
	if h.member, err = clientv3.New(clientv3.Config{Endpoints: []string{f.srv.Client}, DialTimeout: 5 * time.Second,
		Logger: zap.NewNop()}); err != nil {
		return nil, err
	}
	lease, err := h.member.Grant(ctx, 10)
	if err != nil {
		return nil, err
	}
	member, _ := json.Marshal(map[string]any{"host_id": fmt.Sprintf("host-%04d", id), "interfaces": []map[string]any{{
		"name": "eth0", "addresses": []string{fmt.Sprintf("10.%d.%d.%d", id>>16&255, id>>8&255, id&255)}, "groups": []string{"sg-web", "sg-app"}}}})
	if _, err := h.member.Put(ctx, fmt.Sprintf("%smembers/host-%04d", store.DefaultEtcdPrefix, id), string(member), clientv3.WithLease(lease.ID)); err != nil {
		return nil, err
	}
	alive, err := h.member.KeepAlive(ctx, lease.ID)
	if err != nil {
		return nil, err
	}
	go func() {
		for range alive {
		}
	}()
	return h, nil
}

// applied is each host's OnApplied: the first report at or past the target revision is
// that host's time.
func (f *fleetSim) applied(h *simHost, snap *store.Snapshot, err error) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.bad = append(f.bad, fmt.Sprintf("host %d, revision %d: %v", h.id, snap.Revision, err))
		return
	}
	if f.done == nil || snap.Revision < f.target || f.took[h.id] != 0 {
		return
	}
	f.took[h.id] = now.Sub(f.start)
	if f.pending--; f.pending == 0 {
		close(f.done)
	}
}

// write commits one more rule to sg-web, as an API would, and waits until every host has
// applied it; it returns each host's time.
func (f *fleetSim) write(tb testing.TB, k int) []time.Duration {
	tb.Helper()
	next := f.snap.Clone()
	p := 10000 + k%50000
	next.Groups[0].Ingress = append(next.Groups[0].Ingress, store.Rule{ID: fmt.Sprintf("sgr-%017x", 1<<40+k), Protocol: "tcp",
		FromPort: &p, ToPort: &p, CidrIPv4: "203.0.113.0/24"})
	f.mu.Lock()
	f.took, f.pending, f.done = make([]time.Duration, len(f.hosts)), len(f.hosts), make(chan struct{})
	f.target = f.snap.Revision + 1 // below the commit's own revision: nothing older can pass
	f.start = time.Now()
	done := f.done
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.writer.Commit(ctx, next); err != nil {
		tb.Fatalf("write %d: %v", k, err)
	}
	f.snap = next
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		f.mu.Lock()
		defer f.mu.Unlock()
		tb.Fatalf("write %d (revision %d): %d of %d hosts had not applied it after 60s; failed reloads: %v", k, next.Revision, f.pending, len(f.hosts), f.bad)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bad) > 0 {
		tb.Fatalf("failed reloads: %v", f.bad)
	}
	return slices.Clone(f.took)
}

// check wants every host's judge to hold the policy its controller runs, with the last
// write's rule in it.
func (f *fleetSim) check(tb testing.TB) {
	tb.Helper()
	last := f.snap.Groups[0].Ingress[len(f.snap.Groups[0].Ingress)-1].ID
	for _, h := range f.hosts {
		run := h.ctl.Running()
		if h.engine.Policy() != run.Policy {
			tb.Errorf("host %d: the judge's policy is not the controller's", h.id)
		}
		found := false
		for _, g := range run.Model.Groups {
			for _, r := range g.Ingress {
				found = found || r.ID == last
			}
		}
		if !found || h.src.Revision() != f.snap.Revision {
			tb.Errorf("host %d: runs revision %d without rule %s; want revision %d with it", h.id, h.src.Revision(), last, f.snap.Revision)
		}
	}
}

// figures are a run's percentiles: over every (host, write) pair, and over the writes'
// slowest host (the time to "applied on every host").
type figures struct {
	p50, p99, max    time.Duration
	allP50, allP99   time.Duration
	samples, nwrites int
}

func summarize(runs [][]time.Duration) figures {
	var all, slowest []time.Duration
	for _, r := range runs {
		all = append(all, r...)
		slowest = append(slowest, slices.Max(r))
	}
	slices.Sort(all)
	slices.Sort(slowest)
	q := func(s []time.Duration, p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return figures{p50: q(all, 0.5), p99: q(all, 0.99), max: all[len(all)-1], allP50: q(slowest, 0.5), allP99: q(slowest, 0.99),
		samples: len(all), nwrites: len(runs)}
}

func (g figures) String() string {
	return fmt.Sprintf("%d writes × hosts = %d samples: per host p50 %v, p99 %v, max %v; every host (slowest per write) p50 %v, p99 %v",
		g.nwrites, g.samples, g.p50.Round(time.Millisecond), g.p99.Round(time.Millisecond), g.max.Round(time.Millisecond),
		g.allP50.Round(time.Millisecond), g.allP99.Round(time.Millisecond))
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Every simulated host applies every write, compiled and published to its judge.
func TestFleetConvergence(t *testing.T) {
	const hosts, writes = 20, 5
	f := newFleetSim(t, hosts)
	var runs [][]time.Duration
	for k := range writes {
		took := f.write(t, k)
		for i, d := range took {
			if d <= 0 {
				t.Fatalf("write %d: host %d has no time", k, i)
			}
		}
		runs = append(runs, took)
	}
	f.check(t)
	t.Logf("%d hosts: %v", hosts, summarize(runs))
}

func BenchmarkFleetConvergence(b *testing.B) {
	start := time.Now()
	f := newFleetSim(b, *fleetHosts)
	b.Logf("%d hosts started in %v", *fleetHosts, time.Since(start).Round(time.Millisecond))
	var runs [][]time.Duration
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for k := 0; b.Loop(); k++ {
		runs = append(runs, f.write(b, k))
	}
	b.StopTimer()
	// The process's CPU time per host per write: what one host spends applying a change
	// (its share of etcd's work included), less sensitive than the latencies to what else
	// the machine runs.
	perApply := (cpuTime(b) - cpu0) / time.Duration(len(runs)*len(f.hosts))
	f.check(b)
	g := summarize(runs)
	b.ReportMetric(float64(g.p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(g.p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(g.max.Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(g.allP99.Microseconds())/1000, "all-p99-ms")
	b.ReportMetric(float64(perApply.Microseconds())/1000, "cpu-ms/apply")
	b.Logf("%d hosts: %v; CPU %v per host per write", *fleetHosts, g, perApply.Round(time.Microsecond))
}
