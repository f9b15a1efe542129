package daemon

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/ec2api"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
	"github.com/sgd-firewall/sgd/internal/store"
	"github.com/sgd-firewall/sgd/internal/store/etcdtest"
)

// Fleet mode without namespaces: "hosts" in one process, each with its own fleet (the
// daemon's: openFleet, run), controller, real filter.Engine and EC2 API, on one real etcd.

const (
	fleetKeyID  = "AKIDSGDFLEET00000001"
	fleetSecret = "sgd-fleet-test-secret-do-not-use-000000"
	fleetFile   = "security_groups:\n  - {group_id: sg-file, group_name: file, description: from the file}\n"
)

type host struct {
	t      *testing.T
	id     string
	addr   string // eth0's address
	dir    string // the state directory
	fl     *fleet
	ctl    *controller.Controller
	engine *filter.Engine
	reg    *prometheus.Registry
	client *ec2.Client
	cancel context.CancelFunc
	once   sync.Once // the host stops once: killed or stopped
}

// hostOptions say how a test host starts; the zero value but for the etcd endpoint is a
// host "h<N>" with fleetFile, eth0 at 192.0.2.<10·N>, a TTL of 2 s.
type hostOptions struct {
	id, addr string
	etcd     string // client URL (the server's, or a proxy's)
	file     string // the config file's text
	dir      string // a state directory to start on again
	ttl      int    // member_ttl in seconds
	log      *zap.Logger
}

var hostCount atomic.Int32

func newHost(t *testing.T, o hostOptions) *host {
	t.Helper()
	h, err := startHost(t, o)
	if err != nil {
		t.Fatalf("start host %s: %v", o.id, err)
	}
	return h
}

// startHost starts a host as the daemon does: openFleet, the controller with its sources,
// run (join), the membership publisher last, and the host's API.
func startHost(t *testing.T, o hostOptions) (*host, error) {
	t.Helper()
	n := hostCount.Add(1)
	if o.id == "" {
		o.id = fmt.Sprintf("h%d", n)
	}
	if o.addr == "" {
		o.addr = fmt.Sprintf("192.0.2.%d", 10*n%250)
	}
	if o.file == "" {
		o.file = fleetFile
	}
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.ttl == 0 {
		o.ttl = 2
	}
	if o.log == nil {
		o.log = zap.NewNop()
	}
	file := filepath.Join(o.dir, "sgd.yaml")
	if err := os.WriteFile(file, []byte(o.file), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	set := settings.Daemon{StateDir: filepath.Join(o.dir, "state"), Etcd: settings.Etcd{Endpoints: o.etcd, Prefix: settings.DefaultEtcdPrefix,
		HostID: o.id, MemberTTL: o.ttl}}
	fl, err := openFleet(ctx, set, o.log)
	if err != nil {
		cancel()
		return nil, err
	}
	fl.probe = 50 * time.Millisecond
	h := &host{t: t, id: o.id, addr: o.addr, dir: o.dir, fl: fl, reg: prometheus.NewRegistry(), cancel: cancel}
	localAddrs := func(name string) []netip.Addr {
		if name == "eth0" {
			return []netip.Addr{netip.MustParseAddr(o.addr)}
		}
		return nil
	}
	h.engine = filter.New(filter.Options{Table: conntrack.New(conntrack.Config{}), Now: func() int64 { return 1 }, Zones: filter.NewZones()})
	h.ctl = controller.New(controller.Options{Sources: append([]controller.Source{controller.NewFile(file)}, fl.sources()...),
		Env: rules.Env{LocalAddrs: localAddrs}})
	s, err := h.ctl.Load(ctx)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if err := h.ctl.Start(ctx, s, controller.Judge(h.engine)); err != nil {
		t.Fatal(err)
	}
	if err := fl.register(h.reg); err != nil {
		t.Fatal(err)
	}
	if err := fl.run(ctx, h.ctl, localAddrs); err != nil {
		cancel()
		fl.close()
		return nil, err
	}
	if err := h.ctl.Attach(ctx, fl.publisher()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ec2api.New(ec2api.Options{Store: fl.src, Apply: fl.src.Applier(h.ctl),
		Running:     func() *rules.Model { return h.ctl.Running().Model },
		Credentials: ec2api.Credentials{fleetKeyID: fleetSecret},
		HostID:      fl.host, Members: func() []store.Member { return fl.members.View().Hosts },
		Interfaces: func() []ec2api.Interface {
			return []ec2api.Interface{{Name: "eth0", Addresses: []string{o.addr}}}
		}}))
	h.client = ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider(fleetKeyID, fleetSecret, ""), RetryMaxAttempts: 1})
	t.Cleanup(func() {
		srv.Close()
		h.stop()
	})
	return h, nil
}

// stop is a clean stop: the lease is revoked.
func (h *host) stop() {
	h.once.Do(func() {
		h.cancel()
		h.fl.close()
	})
}

// kill is SIGKILL as etcd sees it: the keepalives stop, nothing is revoked.
func (h *host) kill() {
	h.once.Do(func() {
		h.cancel()
		h.fl.st.Close()
	})
}

// eni is the ENI id of the host's eth0, as its API (or any host's) lists it.
func (h *host) eni() string { return store.InterfaceENI(h.id, "eth0") }

// allows says whether the host's packet path lets a first TCP packet from src to port in on eth0.
func (h *host) allows(src string, port uint16) bool {
	pol := h.engine.Policy()
	ex := filter.Explain(pol, filter.ReadHost(pol.InterfaceNames()), true, rules.Query{Iface: "eth0", Direction: rules.Ingress, Proto: 6,
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(h.addr), SrcPort: 40000, Port: port})
	return ex.Allowed && ex.Exempt == ""
}

// gauge reads one of the host's store metrics.
func (h *host) gauge(name string) float64 {
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	h.t.Fatalf("no metric %s", name)
	return 0
}

// eventually is how long the fleet tests wait for a change to reach another host: a bound
// for "it happens", not a speed. How fast it happens (SPEC 3.1: an API write applied
// within 1 s) is the fleet convergence benchmark's to measure; a timed assertion here
// would fail on a loaded machine (it did, next to the netns suites).
const eventually = 10 * time.Second

// within polls cond until it holds or d passes.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func perm(port int32, cidr string) []types.IpPermission {
	return []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(port), ToPort: aws.Int32(port),
		IpRanges: []types.IpRange{{CidrIp: aws.String(cidr)}}}}
}

func TestFleetFollows(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b := newHost(t, hostOptions{etcd: srv.Client}), newHost(t, hostOptions{etcd: srv.Client})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A group and a rule through A's API, the attachment through B's: B enforces all of it.
	cg, err := a.client.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("ssh"), Description: aws.String("ssh")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: cg.GroupId,
		IpPermissions: perm(22, "203.0.113.42/32")}); err != nil {
		t.Fatal(err)
	}
	// B's API knows A's group as soon as its watch brought it. Each host's eth0 is an ENI
	// of its own: B attaches its own, and A's through A's API.
	within(t, eventually, "B sees A's group", func() bool { return b.fl.src.Snapshot().Group(*cg.GroupId) != nil })
	if _, err := b.client.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: aws.String(b.eni()), Groups: []string{*cg.GroupId}}); err != nil {
		t.Fatal(err)
	}
	if !b.allows("203.0.113.42", 22) {
		t.Fatal("B does not allow 203.0.113.42:22 after its own API's attachment")
	}
	time.Sleep(100 * time.Millisecond) // A has had B's attachment: it is not A's
	if a.allows("203.0.113.42", 22) {
		t.Fatal("A applies B's attachment of B's eth0")
	}
	if _, err := a.client.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: aws.String(a.eni()), Groups: []string{*cg.GroupId}}); err != nil {
		t.Fatal(err)
	}
	within(t, eventually, "A allows the packet", func() bool { return a.allows("203.0.113.42", 22) })
	within(t, eventually, "both hosts at one revision", func() bool {
		return a.gauge("sgd_store_applied_revision") == b.gauge("sgd_store_applied_revision")
	})
	if a.gauge("sgd_store_connected") != 1 {
		t.Errorf("connected A %v; want 1", a.gauge("sgd_store_connected"))
	}

	// Revoked through B: A stops allowing it.
	if _, err := b.client.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: cg.GroupId,
		IpPermissions: perm(22, "203.0.113.42/32")}); err != nil {
		t.Fatal(err)
	}
	within(t, eventually, "A stops allowing after B's revoke", func() bool { return !a.allows("203.0.113.42", 22) })

	// A rule back, then etcd stops: both keep their policy, say disconnected, refuse changes.
	if _, err := a.client.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: cg.GroupId,
		IpPermissions: perm(443, "198.51.100.0/24")}); err != nil {
		t.Fatal(err)
	}
	within(t, eventually, "B allows 443", func() bool { return b.allows("198.51.100.7", 443) })
	srv.Stop()
	for _, h := range []*host{a, b} {
		within(t, 5*time.Second, "disconnected", func() bool { return h.gauge("sgd_store_connected") == 0 })
		if !h.allows("198.51.100.7", 443) || h.allows("203.0.113.42", 22) {
			t.Error("with etcd stopped a host's policy changed")
		}
	}
	short, scancel := context.WithTimeout(ctx, 10*time.Second)
	if _, err := a.client.AuthorizeSecurityGroupIngress(short, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: cg.GroupId,
		IpPermissions: perm(80, "0.0.0.0/0")}); err == nil {
		t.Error("a change with etcd stopped succeeded")
	}
	scancel()
	if a.allows("192.0.2.99", 80) {
		t.Error("a change refused by the store is in force")
	}

	// etcd back: connected again, and a new change reaches the other host.
	srv.Start()
	for _, h := range []*host{a, b} {
		within(t, 15*time.Second, "reconnected", func() bool { return h.gauge("sgd_store_connected") == 1 })
	}
	var ok bool
	for range 50 { // the API's client may need a moment to get its connection back
		if _, err = b.client.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: cg.GroupId,
			IpPermissions: perm(8080, "0.0.0.0/0")}); err == nil {
			ok = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !ok {
		t.Fatalf("a change after etcd returned: %v", err)
	}
	within(t, eventually, "A allows 8080 after etcd returned", func() bool { return a.allows("192.0.2.99", 8080) })
	if !a.allows("198.51.100.7", 443) {
		t.Error("A lost 443")
	}
}

// Racing writes through two hosts' APIs: each succeeds (Apply re-reads and retries on a
// conflict) or fails with a code; none that succeeded is lost.
func TestFleetRacingWrites(t *testing.T) {
	srv := etcdtest.Start(t)
	hosts := []*host{newHost(t, hostOptions{etcd: srv.Client}), newHost(t, hostOptions{etcd: srv.Client})}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const each = 8
	var mu sync.Mutex
	var made []string
	var wg sync.WaitGroup
	for i, h := range hosts {
		for j := range each {
			wg.Go(func() {
				name := fmt.Sprintf("g-%d-%d", i, j)
				out, err := h.client.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String(name)})
				if err != nil {
					if !strings.Contains(err.Error(), "api error") {
						t.Errorf("CreateSecurityGroup(%s) = %v; want success or an EC2 error code", name, err)
					}
					t.Logf("CreateSecurityGroup(%s) = %v", name, err)
					return
				}
				mu.Lock()
				made = append(made, *out.GroupId)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if len(made) < each {
		t.Errorf("%d of %d creates succeeded; the retries should make most succeed", len(made), 2*each)
	}
	for _, h := range hosts {
		within(t, eventually, "every host has every group", func() bool {
			snap := h.fl.src.Snapshot()
			for _, id := range made {
				if snap.Group(id) == nil {
					return false
				}
			}
			return true
		})
	}
}

// With etcd unreachable at start, sgd starts from its cache of the last applied state, or
// refuses to start when it has none.
func TestFleetStartWithoutEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	set := settings.Daemon{StateDir: dir, Etcd: settings.Etcd{Endpoints: srv.Client, Prefix: settings.DefaultEtcdPrefix, HostID: "a", MemberTTL: 2}}
	ctx := context.Background()
	fl, err := openFleet(ctx, set, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	snap := fl.src.Snapshot()
	snap.Groups = append(snap.Groups, store.Group{ID: "sg-0123456789abcdef0", Name: "cached"})
	if err := fl.st.Commit(ctx, snap); err != nil {
		t.Fatal(err)
	}
	fl.onApplied(snap, nil) // as the controller's reload reports it
	members := &store.Members{Revision: 9, Hosts: []store.Member{{HostID: "b", Interfaces: []store.MemberInterface{{Name: "eth0",
		Addresses: []string{"192.0.2.20"}, Groups: []string{"sg-0123456789abcdef0"}}}}}}
	fl.onMembers(members, nil) // as the members' reload reports it
	fl.st.Close()
	srv.Stop()

	fl, err = openFleet(ctx, set, zap.NewNop())
	if err != nil {
		t.Fatalf("openFleet with etcd stopped and a cache = %v", err)
	}
	defer fl.st.Close()
	if fl.src.Snapshot().Group("sg-0123456789abcdef0") == nil || fl.connected.Load() || fl.applied.Load() != snap.Revision {
		t.Errorf("started from %+v, connected %v, revision %d; want the cache of revision %d, disconnected",
			fl.src.Snapshot(), fl.connected.Load(), fl.applied.Load(), snap.Revision)
	}
	if v := fl.members.View(); !reflect.DeepEqual(v, members) {
		t.Errorf("started with the members %+v; want the cached %+v", v, members)
	}
	set.StateDir = t.TempDir()
	if _, err := openFleet(ctx, set, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "never from the file alone") {
		t.Errorf("openFleet with etcd stopped and no cache = %v; want a refusal", err)
	}
	set.Etcd.HostID = "a/b"
	if _, err := openFleet(ctx, set, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "daemon.etcd.host_id") {
		t.Errorf("openFleet with host id a/b = %v; want a refusal naming daemon.etcd.host_id", err)
	}
}
