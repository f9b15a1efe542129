package ec2api

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/store"
)

const (
	testKeyID  = "AKIDSGDTEST000000001"
	testSecret = "sgd-test-secret-do-not-use-0000000000000"
)

// fileConfig is the config file every rig starts from: one group of the file's own
// (read-only through the API), no interfaces (the API attaches groups to eth0).
const fileConfig = `security_groups:
  - group_id: sg-file
    group_name: file-web
    description: from the file
    ingress:
      - {ip_protocol: tcp, from_port: 80, to_port: 80, cidr_ipv4: 0.0.0.0/0}
`

// rig is the API as the daemon will run it: a real store in a temp dir, the config file,
// a controller publishing to a real filter.Engine, the handler on a loopback server.
type rig struct {
	t       testing.TB
	dir     string
	file    string
	st      *store.Dir
	src     *store.Source
	ctl     *controller.Controller
	engine  *filter.Engine
	srv     *httptest.Server
	reg     *prometheus.Registry
	metrics *Metrics
	client  *ec2.Client
	// host and options are fleet mode's: the host id the store proposes attachments of,
	// and a change of the handler's options before it starts.
	host    string
	options func(*Options)
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, dir: t.TempDir()}
	r.file = filepath.Join(r.dir, "sgd.yaml")
	if err := os.WriteFile(r.file, []byte(fileConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	r.open(filepath.Join(r.dir, "state"))
	return r
}

// open (re)starts everything but the temp dir on the state directory at path.
func (r *rig) open(path string) {
	t := r.t
	t.Helper()
	ctx := context.Background()
	var err error
	if r.st, err = store.OpenDir(path); err != nil {
		t.Fatal(err)
	}
	if r.src, err = store.NewSource(ctx, r.st); err != nil {
		t.Fatal(err)
	}
	r.src.ForHost(r.host)
	r.engine = filter.New(filter.Options{Table: conntrack.New(conntrack.Config{}), Now: func() int64 { return 1 }, Zones: filter.NewZones()})
	r.ctl = controller.New(controller.Options{Sources: []controller.Source{controller.NewFile(r.file), r.src}})
	s, err := r.ctl.Load(ctx)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if err := r.ctl.Start(ctx, s, controller.Judge(r.engine)); err != nil {
		t.Fatal(err)
	}
	r.reg = prometheus.NewRegistry()
	m, err := NewMetrics(r.reg)
	r.metrics = m
	if err != nil {
		t.Fatal(err)
	}
	opt := Options{
		Store:       r.src,
		Apply:       r.src.Applier(r.ctl),
		Running:     func() *rules.Model { return r.ctl.Running().Model },
		Credentials: Credentials{testKeyID: testSecret},
		Interfaces:  func() []Interface { return []Interface{{Name: "eth0", Addresses: []string{"192.0.2.10"}}} },
		Metrics:     m,
	}
	if r.options != nil {
		r.options(&opt)
	}
	r.srv = httptest.NewServer(New(opt))
	r.client = ec2.New(ec2.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(r.srv.URL),
		Credentials:      credentials.NewStaticCredentialsProvider(testKeyID, testSecret, ""),
		RetryMaxAttempts: 1,
	})
	t.Cleanup(r.close)
}

func (r *rig) close() {
	if r.srv != nil {
		r.srv.Close()
		r.st.Close()
		r.srv = nil
	}
}

// restart closes the server and the store and opens them again on the same directory.
func (r *rig) restart() {
	r.close()
	r.open(filepath.Join(r.dir, "state"))
}

// allows says whether the packet path lets a first TCP packet from src to port in on
// eth0: filter.Explain, the judge's own decision with the screen stage before it.
func (r *rig) allows(src string, port uint16) bool {
	pol := r.engine.Policy()
	ex := filter.Explain(pol, filter.ReadHost(pol.InterfaceNames()), true, rules.Query{Iface: "eth0", Direction: rules.Ingress, Proto: 6,
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("192.0.2.10"), SrcPort: 40000, Port: port})
	return ex.Allowed && ex.Exempt == ""
}

func (r *rig) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	r.t.Cleanup(cancel)
	return ctx
}
