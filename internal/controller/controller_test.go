package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/netfilter"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// Reloads through the real judge (filter.Engine) and the real Hooks publisher, with
// netfilter's Apply recorded instead of run (iptables needs root; test/netns runs it).

// applier records what Hooks installs; fail makes the next Apply calls fail.
type applier struct {
	applied [][]string // the interfaces of every Apply
	fail    int
}

func (a *applier) Apply(_ context.Context, s netfilter.Spec) error {
	a.applied = append(a.applied, s.Interfaces)
	if a.fail > 0 {
		a.fail--
		return errors.New("iptables-restore: exit status 1")
	}
	return nil
}

// recorder records what the controller tells the metrics, in order.
type recorder struct{ events []string }

func (r *recorder) SetConfigInfo(v string) { r.events = append(r.events, "info "+short(v)) }
func (r *recorder) ConfigLoaded(time.Time) { r.events = append(r.events, "loaded") }
func (r *recorder) ReloadResult(ok bool, _ time.Time) {
	r.events = append(r.events, fmt.Sprint("reload ", ok))
}

// rig is a controller started on a config file, publishing to an engine and to hooks.
type rig struct {
	t      *testing.T
	path   string
	ctl    *Controller
	engine *filter.Engine
	nf     *applier
	rec    *recorder
}

// config is a one-group config on the given interfaces allowing tcp/port in.
func config(port int, ifaces ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "security_groups:\n  - group_id: sg-a\n    ingress:\n      - {ip_protocol: tcp, from_port: %d, to_port: %d, cidr_ipv4: 0.0.0.0/0}\n", port, port)
	b.WriteString("interfaces:\n")
	for _, name := range ifaces {
		fmt.Fprintf(&b, "  - {name: %s, security_groups: [sg-a]}\n", name)
	}
	return b.String()
}

func start(t *testing.T, src string) *rig {
	t.Helper()
	r := &rig{t: t, path: filepath.Join(t.TempDir(), "sgd.yaml"), nf: &applier{}, rec: &recorder{}}
	r.write(src)
	zones := filter.NewZones()
	r.engine = filter.New(filter.Options{Table: conntrack.New(conntrack.Config{}), Now: func() int64 { return 1 }, Zones: zones})
	file := NewFile(r.path)
	r.ctl = New(Options{Sources: []Source{file}, Metrics: r.rec})
	want, err := r.ctl.Load(context.Background())
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if err := r.ctl.Start(context.Background(), want, Judge(r.engine)); err != nil {
		t.Fatalf("Start = %v", err)
	}
	hooks := NewHooks(r.nf, netfilter.Spec{QueueNum: 100, QueueCount: 1, Offload: &netfilter.Offload{}}, zones)
	if err := r.ctl.Attach(context.Background(), hooks); err != nil {
		t.Fatalf("Attach(hooks) = %v", err)
	}
	return r
}

func (r *rig) write(src string) {
	r.t.Helper()
	if err := os.WriteFile(r.path, []byte(src), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// allows says whether the judge's policy allows tcp to port on eth0.
func (r *rig) allows(port uint16) bool {
	ex := r.engine.Policy().Explain(rules.Query{Iface: "eth0", Direction: rules.Ingress, Proto: 6,
		Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddr("192.0.2.10"), Port: port})
	return ex.Allowed
}

func TestReload(t *testing.T) {
	r := start(t, config(22, "eth0"))
	first := r.ctl.Running()
	if r.engine.Policy() != first.Policy || !r.allows(22) {
		t.Fatalf("after Start the judge has %p; want the running policy %p allowing tcp/22", r.engine.Policy(), first.Policy)
	}
	if got := fmt.Sprint(r.nf.applied); got != "[[eth0]]" {
		t.Errorf("after Start, Apply calls = %s; want [[eth0]]", got)
	}

	// A good reload with the same interfaces: the judge has it, the hooks are left alone.
	r.write(config(80, "eth0"))
	if err := r.ctl.Reload(context.Background(), "test"); err != nil {
		t.Fatalf("Reload = %v", err)
	}
	if r.allows(22) || !r.allows(80) || r.engine.Policy() != r.ctl.Running().Policy {
		t.Errorf("after a good reload the judge does not have the new policy")
	}
	if len(r.nf.applied) != 1 {
		t.Errorf("a reload that keeps the interfaces applied netfilter rules: %v", r.nf.applied)
	}
	second := r.ctl.Running()

	// A bad file: nothing changes but a counter (SPEC 2.4).
	before := r.ctl.Running()
	r.write(config(80, "eth0") + "bogus: 1\n")
	err := r.ctl.Reload(context.Background(), "test")
	if err == nil || !strings.Contains(err.Error(), rules.CodeUnknownParameter) {
		t.Fatalf("Reload(bad file) = %v; want %s", err, rules.CodeUnknownParameter)
	}
	if r.ctl.Running() != before || r.engine.Policy() != before.Policy || len(r.nf.applied) != 1 {
		t.Errorf("a rejected reload changed the running state")
	}

	// A policy the hooks refuse (a name iptables cannot take): checked before anything
	// is published.
	r.write(config(443, "eth0", "eth+"))
	if err := r.ctl.Reload(context.Background(), "test"); err == nil {
		t.Fatal("Reload(eth+) = nil; want netfilter's refusal")
	}
	if r.engine.Policy() != before.Policy || len(r.nf.applied) != 1 {
		t.Errorf("a policy the hooks refused was published")
	}

	// The hooks fail to change: the judge gets the previous policy back, and the hooks
	// are put back as they were.
	r.write(config(443, "eth0", "eth1"))
	r.nf.fail = 1
	err = r.ctl.Reload(context.Background(), "test")
	if err == nil || !strings.Contains(err.Error(), "install netfilter rules for the new interfaces") {
		t.Fatalf("Reload(hooks fail) = %v; want the install error", err)
	}
	if r.engine.Policy() != before.Policy || r.ctl.Running() != before || r.allows(443) {
		t.Errorf("after a failed hooks change the judge has not the previous policy back")
	}
	if got := fmt.Sprint(r.nf.applied[1:]); got != "[[eth0 eth1] [eth0]]" {
		t.Errorf("Apply calls after the failure = %s; want the new interfaces, then the previous ones again", got)
	}

	// Then it works: the hooks change, the judge has it.
	if err := r.ctl.Reload(context.Background(), "test"); err != nil {
		t.Fatalf("Reload = %v", err)
	}
	if !r.allows(443) || fmt.Sprint(r.nf.applied[len(r.nf.applied)-1]) != "[eth0 eth1]" {
		t.Errorf("after a good reload adding eth1: judge allows 443 = %v, last Apply %v", r.allows(443), r.nf.applied[len(r.nf.applied)-1])
	}

	running, reloads := r.ctl.Status()
	if reloads.OK != 2 || reloads.Failed != 3 || reloads.LastError != "" || reloads.Last.IsZero() || running.Model.Hash != running.Version {
		t.Errorf("Status = %+v; want 2 good and 3 failed reloads, no last error", reloads)
	}
	want := []string{"info " + short(first.Version), "loaded",
		"info " + short(second.Version), "reload true",
		"reload false", "reload false", "reload false",
		"info " + short(running.Version), "reload true"}
	if !slices.Equal(r.rec.events, want) {
		t.Errorf("metrics events =\n%q\nwant\n%q", r.rec.events, want)
	}
}
