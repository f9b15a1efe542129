package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/sgd-firewall/sgd/internal/daemon"
	"github.com/sgd-firewall/sgd/internal/lab"
	"github.com/sgd-firewall/sgd/internal/settings"
)

// demoFleetHelp is `sgd demo --help`'s paragraph on --fleet.
const demoFleetHelp = `With --fleet, the fleet-mode scenario instead (SPEC 4.6): three hosts, A, B and C, each a
namespace running ` + "`sgd run`" + ` on its own eth0 with its EC2 API on its loopback, and one etcd
(Debian's /usr/bin/etcd, package etcd-server), all on one bridge. Groups are created
through A's API: db allows tcp/3306 from web, and B's eth0 carries db. Then, live, and with
no members: anywhere: A → B:3306 times out; A gains web (ModifyNetworkInterfaceAttribute
sent to C's API) and connects within about a second; A loses web and new connections time
out again; A's sgd is killed (SIGKILL) while A carries web, and once its lease expires
(member_ttl 3 s) A no longer matches on B. About 15 s (8 s with --timeout 1s); the same
cleanup, --timeout and --keep. Needs root, iproute2, iptables and etcd.`

// The fleet's addresses (RFC 5737) and settings.
var (
	fleetEtcd4 = netip.MustParseAddr("192.0.2.2")
	fleetAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("192.0.2.12"), netip.MustParseAddr("192.0.2.13")}
)

const (
	fleetDBPort  = 3306
	fleetAPI     = "127.0.0.1:8787" // each host's EC2 API, on the loopback of its namespace
	fleetTTL     = 3                // daemon.etcd.member_ttl, seconds: the lease case 4 waits out
	fleetKeyID   = "AKIDSGDFLEETDEMO0001"
	fleetProfile = "demo"
	// fleetProbe is how long one attempt is given while the demo waits for a change to
	// show: far more than a connection between namespaces takes, short enough that a
	// dropped SYN is noticed at once; a blocked case is then confirmed with --timeout.
	fleetProbe = 200 * time.Millisecond
	// fleetWithin is "about a second" for a change through the API to reach another
	// host's packet path: SPEC 4.6 promises 1 s (p99); twice that on a loaded machine.
	fleetWithin = 2 * time.Second
	// fleetStagger is how often the demo starts a new attempt while it waits.
	fleetStagger = 20 * time.Millisecond
)

// fleetHost is one host of the fleet demo.
type fleetHost struct {
	name string // "A"
	id   string // daemon.etcd.host_id: "host-a"
	addr netip.Addr
	lab  *lab.Host
	cfg  string // its config file
	sock string // its status socket
	sgd  *lab.Proc
	api  *ec2.Client // its EC2 API, dialled inside its namespace
	eni  string      // its eth0's ENI id, as the API lists it
}

// fleetDemo is the fleet lab while the demo runs.
type fleetDemo struct {
	o       demoOptions
	l       *lab.Lab
	a, b, c *fleetHost
	groups  map[string]string // name → id
	t0      time.Time         // the first API call: the timeline's zero
	events  []fleetEvent
	kept    net.Conn // case 2's connection, which case 3 sends through
	w       func(format string, a ...any)
}

// fleetEvent is one line of the timeline.
type fleetEvent struct {
	t    time.Time
	what string
}

// at notes an event on the timeline.
func (f *fleetDemo) at(t time.Time, format string, a ...any) {
	f.events = append(f.events, fleetEvent{t, fmt.Sprintf(format, a...)})
}

// fmtSeconds prints 0.00 s, 12.34 s.
func fmtSeconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// runFleetDemo is `sgd demo --fleet`; findEtcd is lab.FindEtcd but in tests.
func runFleetDemo(o demoOptions, findEtcd func() (string, error), stdout, stderr io.Writer) (code int) {
	const name = "sgd demo --fleet"
	etcdBin, err := findEtcd()
	if err != nil {
		fmt.Fprintf(stderr, "%s: etcd is not installed: the fleet demo runs Debian's %s (on Debian: apt-get install etcd-server)\n", name, lab.EtcdBin)
		return 1
	}
	d := openDemo(name, []string{"ip", "iptables", "ip6tables", "iptables-restore", "ip6tables-restore"}, o.keep, stderr)
	if d == nil {
		return 1
	}
	defer d.finish(&code)
	ctx := d.ctx
	f := &fleetDemo{o: o, l: d.l, groups: map[string]string{}, w: func(format string, a ...any) { fmt.Fprintf(stdout, format, a...) }}
	d.remove = f.cleanup

	if err := f.setUp(ctx, etcdBin); err != nil {
		return demoFail(ctx, stderr, "set up the fleet", err)
	}
	cases := []struct {
		title string
		run   func(context.Context) fleetResult
	}{
		{"A → B tcp/3306 — A carries app; db allows tcp/3306 only from web", f.caseOutside},
		{"A gains web: ModifyNetworkInterfaceAttribute on A's " + f.a.eni + ", sent to C's API → A → B tcp/3306", f.caseGains},
		{"A loses web: back to app alone, through C's API → A → B tcp/3306", f.caseLoses},
		{"A's sgd killed (SIGKILL) while A carries web → A → B tcp/3306", f.caseKilled},
	}
	good := 0
	defer func() {
		if f.kept != nil {
			f.kept.Close()
		}
	}()
	for i, c := range cases {
		f.w("%2d  %s\n", i+1, c.title)
		r := c.run(ctx)
		if ctx.Err() != nil {
			f.w("    (interrupted)\n\nInterrupted: stopping sgd and etcd, removing the namespaces.\n")
			return 130
		}
		for _, line := range r.lines {
			f.w("    %s\n", line)
		}
		if r.ok {
			good++
			f.w("    ✓ %s\n\n", r.lesson)
		} else {
			f.w("    ✗ UNEXPECTED: %s — %s\n\n", r.why, r.lesson)
		}
	}

	f.w("Timeline (from the first API call; B's log lines are its own timestamps, to the millisecond):\n")
	slices.SortStableFunc(f.events, func(x, y fleetEvent) int { return x.t.Compare(y.t) })
	for _, e := range f.events {
		f.w("  %9s  %s\n", "+"+fmtSeconds(e.t.Sub(f.t0)), e.what)
	}
	f.w("\nSummary: %d of %d cases behaved as an AWS Security Group would (fleet).\n", good, len(cases))
	if line := demoCounters(ctx, f.b.lab.NS); line != "" {
		f.w("  on B: %s\n", line)
	}
	if good != len(cases) {
		code = 1
		for _, h := range f.hosts() {
			f.w("\nsgd on %s, its log ends:\n%s\n", h.name, indentText(h.sgd.Tail(12), "  "))
		}
	}
	if o.keep {
		f.keepHints()
		return code
	}
	f.w("\nCleaning up: stopping sgd on B and C (they revoke their leases and remove their rules), then etcd and the db server; deleting %d namespaces.\n",
		len(f.l.Namespaces()))
	return code
}

func (f *fleetDemo) hosts() []*fleetHost { return []*fleetHost{f.a, f.b, f.c} }

// cleanup stops the hosts' sgd first, while etcd still answers (each revokes its lease
// and removes its rules), then everything else (lab.Cleanup).
func (f *fleetDemo) cleanup() error {
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, h := range f.hosts() {
		if h == nil || h.sgd == nil {
			continue
		}
		wg.Go(func() { errs[i] = h.sgd.Stop(5 * time.Second) })
	}
	wg.Wait()
	return errors.Join(append(errs, f.l.Cleanup())...)
}

// fleetConfig is a host's config file: eth0 with no groups (the API attaches them), its
// API on its loopback, fleet mode on the demo's etcd.
func fleetConfig(h *fleetHost, etcdURL, dir string, failOpen bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# sgd demo --fleet: host %s (%s). No groups and no members: here: the fleet's API attaches groups, and etcd holds who is in them.\n", h.name, h.addr)
	fmt.Fprintf(&b, "interfaces:\n  - name: %s                   # its groups: what the EC2 API attaches (AWS's default group until then)\n", demoIface)
	fmt.Fprintf(&b, "daemon:\n  api_listen: %s     # the EC2 API, on the loopback of the host's namespace\n", fleetAPI)
	fmt.Fprintf(&b, "  api_credentials_file: %s\n", filepath.Join(dir, "credentials"))
	fmt.Fprintf(&b, "  state_dir: %s\n", filepath.Join(dir, "state-"+h.id))
	fmt.Fprintf(&b, "  status_socket: %s\n", h.sock)
	if failOpen {
		b.WriteString("  fail_open: true                # case 4: once this sgd is killed, A's packets still leave; only B judges them\n")
	}
	fmt.Fprintf(&b, "  etcd:\n    endpoints: [%q]\n    host_id: %s\n    member_ttl: %d                # seconds: a dead host's record lasts this long\n", etcdURL, h.id, fleetTTL)
	return b.String()
}

// setUp builds the namespaces, starts etcd, B's db server and the three sgd, creates the
// groups through A's API and attaches them, and prints what it did.
func (f *fleetDemo) setUp(ctx context.Context, etcdBin string) error {
	w, l := f.w, f.l
	w("sgd demo --fleet — three hosts, one etcd: a group reference that follows its members from host to host, live, in network namespaces\n\n")
	setupCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	etcdHost := &lab.Host{Role: "etcd", Dev: demoIface, Port: "vetcd", Addrs: []netip.Prefix{prefix(fleetEtcd4, 24)}}
	var hs []*fleetHost
	for i, name := range []string{"A", "B", "C"} {
		role := strings.ToLower(name)
		hs = append(hs, &fleetHost{name: name, id: "host-" + role, addr: fleetAddrs[i], sock: filepath.Join(l.Dir(), "sgd-host-"+role+".sock"),
			lab: &lab.Host{Role: role, Dev: demoIface, Port: "v" + role, Addrs: []netip.Prefix{prefix(fleetAddrs[i], 24)}}})
	}
	f.a, f.b, f.c = hs[0], hs[1], hs[2]
	if err := l.Star(setupCtx, "fabric", etcdHost, f.a.lab, f.b.lab, f.c.lab); err != nil {
		return fmt.Errorf("build the namespaces: %w", err)
	}
	version := etcdVersion(setupCtx, etcdBin)
	w("  etcd  %-11s %s, one member, started by the demo: the fleet's groups, rules, attachments and members\n", fleetEtcd4, version)
	w("  A     %-11s sgd run on its eth0, EC2 API on %s in its namespace; fail_open (case 4)\n", f.a.addr, fleetAPI)
	w("  B     %-11s sgd run on its eth0, EC2 API on %s; a db server listens on tcp/%d\n", f.b.addr, fleetAPI, fleetDBPort)
	w("  C     %-11s sgd run on its eth0, EC2 API on %s\n", f.c.addr, fleetAPI)
	w("  (namespaces %s; each eth0 is a veth whose other end is a port of the fabric's bridge br0)\n\n", l.Name("*"))

	etcd, err := l.StartEtcd(setupCtx, etcdBin, etcdHost.NS, "demo", fleetEtcd4)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	secret, err := randomSecret()
	if err != nil {
		return err
	}
	creds := filepath.Join(l.Dir(), "credentials")
	if err := os.WriteFile(creds, fmt.Appendf(nil, "[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", fleetProfile, fleetKeyID, secret), 0o600); err != nil {
		return fmt.Errorf("write the API's credentials: %w", err)
	}
	for _, h := range f.hosts() {
		h.cfg = filepath.Join(l.Dir(), "sgd-"+h.id+".yaml")
		if err := os.WriteFile(h.cfg, []byte(fleetConfig(h, etcd.URL(), l.Dir(), h == f.a)), 0o600); err != nil {
			return fmt.Errorf("write %s's config: %w", h.name, err)
		}
		h.api = fleetClient(h.lab.NS, secret)
	}
	text, _ := os.ReadFile(f.a.cfg)
	w("A's config (%s; B's and C's differ only in their names and have no fail_open):\n", f.a.cfg)
	for _, line := range strings.Split(strings.TrimRight(string(text), "\n"), "\n") {
		w("  │ %s\n", line)
	}
	w("\n")

	db, err := l.Start(f.b.lab.NS, "db server on B", f.o.sgd, "demo", demoServeVerb, fmt.Sprintf("db=:%d", fleetDBPort))
	if err == nil {
		err = db.WaitFor(setupCtx, "ready")
	}
	if err != nil {
		return fmt.Errorf("start B's db server: %w", err)
	}
	for _, h := range f.hosts() {
		h.sgd, err = l.Start(h.lab.NS, "sgd on "+h.name, f.o.sgd, "run", "--config", h.cfg, "--log-format", "json", "--log-level", "info")
		if err != nil {
			return fmt.Errorf("start sgd on %s: %w", h.name, err)
		}
	}
	for _, h := range f.hosts() {
		if err := h.sgd.WaitFor(setupCtx, `"msg":"started"`); err != nil {
			return fmt.Errorf("start sgd on %s: %w", h.name, err)
		}
	}
	w("Running: etcd (pid %d); B's db server (pid %d); sgd on A (pid %d), B (pid %d) and C (pid %d), each following etcd at %s\n",
		etcd.PID(), db.PID(), f.a.sgd.PID(), f.b.sgd.PID(), f.c.sgd.PID(), etcd.URL())
	w("and publishing its eth0 (address, groups) at %smembers/<host_id> under a %d s lease.\n\n", settings.DefaultEtcdPrefix, fleetTTL)
	return f.createGroups(setupCtx)
}

// createGroups makes web, db (tcp/3306 from web) and app through A's API, attaches db to
// B's eth0 and app to A's, and waits until both hosts enforce them.
func (f *fleetDemo) createGroups(ctx context.Context) error {
	w, a := f.w, f.a
	w("Through A's EC2 API (aws-sdk-go-v2, requests signed with the demo's key):\n")
	f.t0 = time.Now()
	for _, g := range []struct{ name, desc, about string }{
		{"web", "web servers", "no rules of its own: the name db's rule refers to"},
		{"db", "databases", "its rule follows"},
		{"app", "application servers", "what A carries when it is not a web server; no rules of its own"},
	} {
		out, err := a.api.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(g.name), Description: aws.String(g.desc)})
		if err != nil {
			return fmt.Errorf("CreateSecurityGroup %s: %w", g.name, err)
		}
		f.groups[g.name] = aws.ToString(out.GroupId)
		w("  CreateSecurityGroup %-4s → %s  (%s)\n", g.name, f.groups[g.name], g.about)
	}
	au, err := a.api.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(f.groups["db"]),
		IpPermissions: []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(fleetDBPort), ToPort: aws.Int32(fleetDBPort),
			UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String(f.groups["web"]), Description: aws.String("MySQL from the web servers")}}}}})
	if err != nil {
		return fmt.Errorf("AuthorizeSecurityGroupIngress db: %w", err)
	}
	rule := ""
	if len(au.SecurityGroupRules) == 1 {
		rule = aws.ToString(au.SecurityGroupRules[0].SecurityGroupRuleId)
	}
	w("  AuthorizeSecurityGroupIngress db tcp/%d from web → %s\n", fleetDBPort, rule)
	if err := f.findENIs(ctx); err != nil {
		return err
	}
	for _, m := range []struct {
		h     *fleetHost
		group string
		note  string
	}{{f.b, "db", "another host's ENI: B puts it in force"}, {f.a, "app", "A's own"}} {
		if _, err := a.api.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(m.h.eni),
			Groups: []string{f.groups[m.group]}}); err != nil {
			return fmt.Errorf("ModifyNetworkInterfaceAttribute %s's %s: %w", m.h.name, m.h.eni, err)
		}
		w("  ModifyNetworkInterfaceAttribute %s (%s's eth0) --groups %s  (%s)\n", m.h.eni, m.h.name, m.group, m.note)
	}
	f.at(time.Now(), "groups web, db, app created through A's API; db on B's eth0, app on A's")
	for _, g := range []struct {
		h     *fleetHost
		group string
	}{{f.b, "db"}, {f.a, "app"}} {
		if err := f.waitGroups(ctx, g.h, f.groups[g.group]); err != nil {
			return err
		}
	}
	w("\nDescribeNetworkInterfaces on C's API lists every host's eth0, each with its ENI id and the tag %s:\n", "sgd:host-id")
	enis, err := f.describe(ctx, f.c)
	if err != nil {
		return err
	}
	for _, h := range f.hosts() {
		n := enis[h.id]
		var names []string
		for _, g := range n.Groups {
			names = append(names, aws.ToString(g.GroupName))
		}
		addr := aws.ToString(n.PrivateIpAddress)
		if addr == "" {
			addr = "(C's own)"
		}
		w("  %s  %s=%s  %-11s groups: %s\n", aws.ToString(n.NetworkInterfaceId), "sgd:host-id", h.id, addr, strings.Join(names, ", "))
	}
	w("No host lists members: B learns who is in web from the other hosts' records in etcd.\n\n")
	return nil
}

// findENIs reads each host's eth0 ENI id from A's DescribeNetworkInterfaces, once every
// host has published its record (10 s at most).
func (f *fleetDemo) findENIs(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		enis, err := f.describe(ctx, f.a)
		if err != nil {
			return err
		}
		var missing []string
		for _, h := range f.hosts() {
			if n, ok := enis[h.id]; ok {
				h.eni = aws.ToString(n.NetworkInterfaceId)
			} else {
				missing = append(missing, h.id)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("DescribeNetworkInterfaces on A's API lists no eth0 of %s after 10 s", strings.Join(missing, ", "))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// describe is DescribeNetworkInterfaces through h's API, of the eth0 of every host, by
// host id (the tag sgd:host-id).
func (f *fleetDemo) describe(ctx context.Context, h *fleetHost) (map[string]types.NetworkInterface, error) {
	out, err := h.api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []types.Filter{{Name: aws.String("description"), Values: []string{demoIface}}}})
	if err != nil {
		return nil, fmt.Errorf("DescribeNetworkInterfaces on %s's API: %w", h.name, err)
	}
	byHost := map[string]types.NetworkInterface{}
	for _, n := range out.NetworkInterfaces {
		for _, t := range n.TagSet {
			if aws.ToString(t.Key) == "sgd:host-id" {
				byHost[aws.ToString(t.Value)] = n
			}
		}
	}
	return byHost, nil
}

// waitGroups waits until h's sgd enforces exactly groups on its eth0 (`sgd status`).
func (f *fleetDemo) waitGroups(ctx context.Context, h *fleetHost, groups ...string) error {
	deadline := time.Now().Add(10 * time.Second)
	var last []string
	for {
		s, err := daemon.FetchStatus(ctx, h.sock)
		if err == nil {
			for _, itf := range s.Interfaces {
				if itf.Name == demoIface {
					last = slices.Sorted(slices.Values(itf.Groups))
				}
			}
			if slices.Equal(last, slices.Sorted(slices.Values(groups))) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sgd on %s: eth0 carries %v after 10 s; want %v (status: %v)", h.name, last, groups, err)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// setGroups sends ModifyNetworkInterfaceAttribute for A's eth0 to C's API and returns
// when the call returned.
func (f *fleetDemo) setGroups(ctx context.Context, names ...string) (time.Time, error) {
	var ids []string
	for _, n := range names {
		ids = append(ids, f.groups[n])
	}
	_, err := f.c.api.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: aws.String(f.a.eni), Groups: ids})
	done := time.Now()
	if err == nil {
		f.at(done, "C's API returned: A's eth0 carries %s", strings.Join(names, " + "))
	}
	return done, err
}

// fleetResult is what a case came to: the lines to print under its title, whether it
// behaved as a Security Group would (else why not), and its lesson.
type fleetResult struct {
	lines       []string
	ok          bool
	why, lesson string
}

func (r *fleetResult) say(format string, a ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, a...))
}

func (r *fleetResult) fail(format string, a ...any) fleetResult {
	r.ok, r.why = false, fmt.Sprintf(format, a...)
	return *r
}

func (f *fleetDemo) dbAddr() netip.AddrPort { return netip.AddrPortFrom(f.b.addr, fleetDBPort) }

// probe is the length of one attempt while waiting for a change.
func (f *fleetDemo) probe() time.Duration { return min(fleetProbe, f.o.timeout) }

// attempt is one connection from A to B's db given --timeout, described as the main demo
// describes its cases.
func (f *fleetDemo) attempt(ctx context.Context) (outcome, string) {
	start := time.Now()
	got, c, err := fleetDial(ctx, f.a.lab.NS, f.dbAddr(), f.o.timeout)
	took := time.Since(start)
	switch got {
	case connected:
		defer c.Close()
		return got, fmt.Sprintf("connected in %s — the server said %q", fmtDuration(took), demoExchange(c, "db"))
	case refused:
		return got, fmt.Sprintf("connection refused in %s", fmtDuration(took))
	case timedOut:
		return got, fmt.Sprintf("timed out after %s — no answer at all", fmtDuration(f.o.timeout))
	}
	return got, fmt.Sprintf("failed after %s: %v", fmtDuration(took), err)
}

func (f *fleetDemo) caseOutside(ctx context.Context) fleetResult {
	r := fleetResult{lesson: "A is in no group db allows: B drops the SYN silently, before its db server sees it (A's egress, app's default rule, let it out)"}
	began := time.Now()
	got, detail := f.attempt(ctx)
	r.say("%s", detail)
	if got != timedOut {
		return r.fail("a Security Group would give %q here", timedOut)
	}
	f.at(began, "A → B:%d: no answer (timed out after %s; A carries app)", fleetDBPort, fmtDuration(f.o.timeout))
	r.ok = true
	return r
}

func (f *fleetDemo) caseGains(ctx context.Context) fleetResult {
	r := fleetResult{lesson: "C's API wrote the change to etcd; A, which owns the ENI, put it in force and published its record (address, groups) under its lease; B, watching the members, counts 192.0.2.11 in web — no members: on any host"}
	mark := len(f.b.sgd.Output())
	called := time.Now()
	done, err := f.setGroups(ctx, "app", "web")
	if err != nil {
		return r.fail("ModifyNetworkInterfaceAttribute through C's API: %v", err)
	}
	r.say("C's API returned in %s", fmtDuration(done.Sub(called)))
	after, c, ok := fleetConnects(ctx, f.a.lab.NS, f.dbAddr(), done, f.probe(), fleetWithin)
	if !ok {
		r.say("A → B:%d still does not connect %s after the call returned", fleetDBPort, fmtDuration(after))
		return r.fail("a Security Group would let A in once it carries web (SPEC 4.6: within 1 s)")
	}
	f.at(done.Add(after), "A → B:%d connected", fleetDBPort)
	said := demoExchange(c, "db")
	_ = c.SetDeadline(time.Time{})
	f.kept = c
	r.say("A → B:%d connected %s after the call returned (an attempt every %s from then on) — the server said %q", fleetDBPort, fmtDuration(after), fmtDuration(fleetStagger), said)
	if f.logged(f.b, mark, "fleet: a host's interfaces or groups changed", f.a.id) {
		r.say("B's sgd logged \"fleet: a host's interfaces or groups changed\" for %s (see the timeline)", f.a.id)
	}
	r.ok = true
	return r
}

func (f *fleetDemo) caseLoses(ctx context.Context) fleetResult {
	r := fleetResult{lesson: "A's record lists app alone: B no longer counts 192.0.2.11 in web, so new connections are dropped; the established one is a tracked flow and goes on, as in AWS"}
	done, err := f.setGroups(ctx, "app")
	if err != nil {
		return r.fail("ModifyNetworkInterfaceAttribute through C's API: %v", err)
	}
	after, tries, ok := fleetBlocked(ctx, f.a.lab.NS, f.dbAddr(), done, f.probe(), fleetWithin)
	if !ok {
		r.say("A → B:%d still connects %s after the call returned", fleetDBPort, fmtDuration(after))
		return r.fail("a Security Group would drop A's new connections once it no longer carries web (SPEC 4.6: within 1 s)")
	}
	f.at(done.Add(after), "A → B:%d times out again", fleetDBPort)
	r.say("%s", blockedLine(after, tries, f.probe(), "the call returned"))
	tracked := f.kept != nil && echoes(f.kept, "still here after A lost web\n")
	if tracked {
		r.say("the connection case 2 opened still carries data (a line sent, echoed back): it is a tracked flow")
	} else {
		r.say("the connection case 2 opened no longer carries data")
	}
	got, detail := f.attempt(ctx)
	r.say("a full attempt: %s", detail)
	switch {
	case got != timedOut:
		return r.fail("a Security Group would give %q here", timedOut)
	case !tracked:
		return r.fail("a Security Group keeps tracked connections when a group changes")
	}
	r.ok = true
	return r
}

func (f *fleetDemo) caseKilled(ctx context.Context) fleetResult {
	r := fleetResult{lesson: fmt.Sprintf("a host that dies drops out of its groups on every host when its lease expires (member_ttl %d s): nobody edited anything", fleetTTL)}
	done, err := f.setGroups(ctx, "app", "web")
	if err != nil {
		return r.fail("ModifyNetworkInterfaceAttribute through C's API: %v", err)
	}
	after, c, ok := fleetConnects(ctx, f.a.lab.NS, f.dbAddr(), done, f.probe(), fleetWithin)
	if !ok {
		return r.fail("A carries web again, yet A → B:%d does not connect %s after the call returned", fleetDBPort, fmtDuration(after))
	}
	c.Close()
	f.at(done.Add(after), "A → B:%d connected", fleetDBPort)
	r.say("A carries web again: A → B:%d connected %s after the call returned", fleetDBPort, fmtDuration(after))

	mark := len(f.b.sgd.Output())
	if err := f.a.sgd.Signal(syscall.SIGKILL); err != nil {
		return r.fail("kill sgd on A: %v", err)
	}
	killed := time.Now()
	select {
	case <-f.a.sgd.Done():
	case <-time.After(5 * time.Second):
		return r.fail("sgd on A (pid %d) still runs 5 s after SIGKILL", f.a.sgd.PID())
	case <-ctx.Done():
		return r
	}
	f.at(killed, "sgd on A killed (SIGKILL): its lease is not revoked, it expires")
	r.say("sgd on A (pid %d) killed: nothing revokes its lease; A fails open, so its packets still leave and only B decides", f.a.sgd.PID())
	got, c, _ := fleetDial(ctx, f.a.lab.NS, f.dbAddr(), f.o.timeout)
	if got != connected {
		r.say("right after the kill: A → B:%d %s", fleetDBPort, got)
		return r.fail("while A's lease lives, A is still a member of web (its record is in etcd)")
	}
	c.Close()
	r.say("right after the kill: connected — A's record, under its lease, still says web")
	limit := fleetTTL*time.Second + fleetWithin
	after, tries, ok := fleetBlocked(ctx, f.a.lab.NS, f.dbAddr(), killed, f.probe(), limit)
	if !ok {
		r.say("A → B:%d still connects %s after the kill", fleetDBPort, fmtDuration(after))
		return r.fail("A's lease (%d s) has expired: B should no longer count A in web", fleetTTL)
	}
	f.at(killed.Add(after), "A → B:%d times out: A's lease expired, B dropped its record", fleetDBPort)
	r.say("%s; member_ttl is %d s", blockedLine(after, tries, f.probe(), "the kill"), fleetTTL)
	if f.logged(f.b, mark, "fleet: a host left (its lease was revoked or expired)", f.a.id) {
		r.say("B's sgd logged \"fleet: a host left (its lease was revoked or expired)\" for %s (see the timeline)", f.a.id)
	}
	got, detail := f.attempt(ctx)
	r.say("a full attempt: %s", detail)
	if got != timedOut {
		return r.fail("a Security Group would give %q here", timedOut)
	}
	r.ok = true
	return r
}

// fleetDial connects from ns to dst, giving up after d.
func fleetDial(ctx context.Context, ns string, dst netip.AddrPort, d time.Duration) (outcome, net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	c, err := lab.DialContext(dctx, ns, "tcp", dst.String())
	switch {
	case err == nil:
		return connected, c, nil
	case errors.Is(err, syscall.ECONNREFUSED):
		return refused, nil, err
	case ctx.Err() == nil && (dctx.Err() != nil || isTimeout(err)):
		return timedOut, nil, err
	}
	return failed, nil, err
}

// fleetConnects connects from ns to dst until a connection is made, starting an attempt
// (each given probe) every fleetStagger, and returns how long after since the first
// connection was made, with that connection open; ok is false when none was within limit
// of since (or ctx ended). Overlapping attempts measure the moment to within fleetStagger
// although a SYN dropped just before the change is retransmitted only after a second.
func fleetConnects(ctx context.Context, ns string, dst netip.AddrPort, since time.Time, probe, limit time.Duration) (time.Duration, net.Conn, bool) {
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // the attempts still under way give up at once
	type made struct {
		c  net.Conn
		at time.Time
	}
	won := make(chan made, 1)
	tick := time.NewTicker(fleetStagger)
	defer tick.Stop()
	for {
		wg.Go(func() {
			if got, c, _ := fleetDial(wctx, ns, dst, probe); got == connected {
				select {
				case won <- made{c, time.Now()}:
				default:
					c.Close() // another attempt was first
				}
			}
		})
		select {
		case m := <-won:
			return m.at.Sub(since), m.c, true
		case <-ctx.Done():
			return time.Since(since), nil, false
		case <-tick.C:
		}
		if time.Since(since) > limit {
			return time.Since(since), nil, false
		}
	}
}

// fleetBlocked connects from ns to dst again and again, each attempt given probe, until
// one gets no answer, and returns how long after since that attempt began and how many
// attempts it took; ok is false when none did within limit of since (or ctx ended).
func fleetBlocked(ctx context.Context, ns string, dst netip.AddrPort, since time.Time, probe, limit time.Duration) (after time.Duration, tries int, ok bool) {
	for {
		began := time.Now()
		tries++
		got, c, _ := fleetDial(ctx, ns, dst, probe)
		if c != nil {
			c.Close()
		}
		switch {
		case ctx.Err() != nil:
			return time.Since(since), tries, false
		case got == timedOut:
			return began.Sub(since), tries, true
		case time.Since(since) > limit:
			return time.Since(since), tries, false
		}
		_ = sleepCtx(ctx, fleetStagger)
	}
}

// blockedLine says when new connections began to time out, after what.
func blockedLine(after time.Duration, tries int, probe time.Duration, what string) string {
	if tries == 1 {
		return fmt.Sprintf("new connections time out at once: the first one after %s (begun %s after it) got no answer in %s", what, fmtDuration(after), fmtDuration(probe))
	}
	return fmt.Sprintf("new connections time out from %s after %s: the first attempt to get no answer in %s began then, after %d that connected",
		fmtDuration(after), what, fmtDuration(probe), tries-1)
}

// echoes sends line through c and wants it back within a second.
func echoes(c net.Conn, line string) bool {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line); err != nil {
		return false
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && got == line
}

// logged finds, in h's sgd's JSON log from byte offset off on, the first line with
// message msg and host_id id, and puts it on the timeline at its own time. The line is
// waited for a little: B logs it when its watch sees the change, which the packet path
// may show first.
func (f *fleetDemo) logged(h *fleetHost, off int, msg, id string) bool {
	for range 20 {
		out := h.sgd.Output()
		for _, line := range strings.Split(out[min(off, len(out)):], "\n") {
			var e struct {
				Time   string `json:"time"`
				Msg    string `json:"msg"`
				HostID string `json:"host_id"`
			}
			if json.Unmarshal([]byte(line), &e) != nil || e.Msg != msg || e.HostID != id {
				continue
			}
			if t, err := time.Parse("2006-01-02T15:04:05.000Z0700", e.Time); err == nil {
				f.at(t, "%s's sgd logged %q (host_id %s)", h.name, msg, id)
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// demoAnswerDB is B's db server: a greeting line, then every line sent comes back.
func demoAnswerDB(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(c, "sgd-demo db: hello (a greeting, then an echo; not a real MySQL server)\n"); err != nil {
		return
	}
	_, _ = io.Copy(c, c)
}

// fleetClient is an EC2 API client for the API a host serves on its loopback: its
// connections are made inside the host's namespace.
func fleetClient(ns, secret string) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String("http://" + fleetAPI),
		Credentials:      credentials.NewStaticCredentialsProvider(fleetKeyID, secret, ""),
		RetryMaxAttempts: 1,
		HTTPClient: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return lab.DialContext(ctx, ns, network, addr)
			}}},
	})
}

// randomSecret is a secret access key for this run only.
func randomSecret() (string, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("a secret for the API: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// etcdVersion is "etcd 3.4.30 (/usr/bin/etcd)", from etcd --version.
func etcdVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(line, "etcd Version: "); ok {
				return "etcd " + strings.TrimSpace(v) + " (" + bin + ")"
			}
		}
	}
	return "etcd (" + bin + ")"
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keepHints prints how to explore the kept lab, and how to remove it.
func (f *fleetDemo) keepHints() {
	w, a, b, c := f.w, f.a, f.b, f.c
	w("\nThe fleet is still up (--keep); sgd on A was killed in case 4, B and C run on. Explore it, for example:\n")
	w("  %s status --socket %s               # B: its eth0's groups, etcd connected, the applied revision\n", f.o.sgd, b.sock)
	w("  ip netns exec %s %s run --config %s --log-format console &   # A back: it rejoins and matches in web again (kill %%1 before removing the fleet)\n", a.lab.NS, f.o.sgd, a.cfg)
	w("  AWS_SHARED_CREDENTIALS_FILE=%s AWS_PROFILE=%s AWS_REGION=us-east-1 \\\n", filepath.Join(f.l.Dir(), "credentials"), fleetProfile)
	w("    ip netns exec %s /usr/bin/aws --endpoint-url http://%s ec2 describe-network-interfaces   # C's API, with the AWS CLI\n", c.lab.NS, fleetAPI)
	w("  ip netns exec %s bash                     # a shell on A; B's db is %s\n", a.lab.NS, f.dbAddr())
	w("  configs: %s; logs: %s\n", strings.Join([]string{a.cfg, b.cfg, c.cfg}, ", "), filepath.Join(f.l.Dir(), "*.log"))
	w("Remove it with:\n")
	for _, cmd := range f.l.Keep() {
		w("  %s\n", cmd)
	}
}
