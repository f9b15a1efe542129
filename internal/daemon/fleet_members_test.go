package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sgd-firewall/sgd/internal/store/etcdtest"
)

// Membership across hosts (SPEC 4.6): hosts in one process, each with its own fleet,
// controller and engine, on one real etcd; no host's file has a members: entry.

// withEth0 is a host's file: eth0 listed without groups (the API gives it its groups).
const withEth0 = fleetFile + "interfaces: [{name: eth0}]\n"

// webDB makes, through h's API, sg-web and sg-db, whose one rule allows 3306 from sg-web.
func webDB(t *testing.T, ctx context.Context, h *host) (web, db string) {
	t.Helper()
	for _, name := range []string{"web", "db"} {
		out, err := h.client.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		if name == "web" {
			web = *out.GroupId
		} else {
			db = *out.GroupId
		}
	}
	if _, err := h.client.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: aws.String(db),
		IpPermissions: []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(3306), ToPort: aws.Int32(3306),
			UserIdGroupPairs: []types.UserIdGroupPair{{GroupId: aws.String(web)}}}}}); err != nil {
		t.Fatal(err)
	}
	return web, db
}

// pair starts hosts a (192.0.2.10) and b (192.0.2.20) with withEth0, as their options do
// not say otherwise, and waits until they see each other.
func pair(t *testing.T, ao, bo hostOptions) (a, b *host) {
	t.Helper()
	for _, o := range []*hostOptions{&ao, &bo} {
		if o.file == "" {
			o.file = withEth0
		}
	}
	ao.id, ao.addr, bo.id, bo.addr = "a", "192.0.2.10", "b", "192.0.2.20"
	a, b = newHost(t, ao), newHost(t, bo)
	meet(t, a, b)
	return a, b
}

// meet waits until every host sees every other's member record (then their APIs list
// each other's ENIs).
func meet(t *testing.T, hosts ...*host) {
	t.Helper()
	for _, h := range hosts {
		for _, o := range hosts {
			within(t, 5*time.Second, h.id+" sees "+o.id, func() bool { return h.fl.members.View().Host(o.id) != nil })
		}
	}
}

// attach sets the groups of an ENI through h's API (an ENI of any host).
func attach(t *testing.T, ctx context.Context, h *host, eni string, groups ...string) {
	t.Helper()
	if _, err := h.client.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: aws.String(eni), Groups: groups}); err != nil {
		t.Fatalf("ModifyNetworkInterfaceAttribute(%s, %v) through %s = %v", eni, groups, h.id, err)
	}
}

// Host a gains sg-web through the API: within 1 s b's sg-db rule "3306 from sg-web"
// matches a's address; a loses it: b stops; a comes back and is killed: b stops matching
// it after the lease's TTL. b's eth0 is given sg-db through a's API, by b's ENI id as a's
// DescribeNetworkInterfaces lists it.
func TestFleetMembership(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := pair(t, hostOptions{etcd: srv.Client}, hostOptions{etcd: srv.Client})
	web, db := webDB(t, ctx, a)
	other, err := a.client.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("other"), Description: aws.String("other")})
	if err != nil {
		t.Fatal(err)
	}

	// a's API lists b's eth0 (from b's member record) and attaches sg-db to it.
	within(t, eventually, "a's API lists b's eth0", func() bool {
		out, err := a.client.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
			Filters: []types.Filter{{Name: aws.String("tag:sgd:host-id"), Values: []string{"b"}}}})
		return err == nil && len(out.NetworkInterfaces) == 1 && *out.NetworkInterfaces[0].NetworkInterfaceId == b.eni() &&
			aws.ToString(out.NetworkInterfaces[0].PrivateIpAddress) == b.addr
	})
	attach(t, ctx, a, b.eni(), db)
	within(t, eventually, "b's eth0 carries sg-db", func() bool {
		g := b.ctl.Running().Model.Interfaces[0].Groups
		return len(g) == 1 && g[0] == db
	})
	if b.allows(a.addr, 3306) {
		t.Fatal("b allows a:3306 before a carries sg-web")
	}

	attach(t, ctx, a, a.eni(), web)
	within(t, eventually, "b allows a:3306 once a carries sg-web", func() bool { return b.allows(a.addr, 3306) })
	if b.allows("192.0.2.99", 3306) || b.allows(a.addr, 22) {
		t.Error("b allows more than 3306 from a")
	}
	if st := b.fl.status(); st.HostID != "b" || st.Lease != "held" || st.LeaseTTL != 2 || strings.Join(st.Members, ",") != "a,b" {
		t.Errorf("b's status = %+v; want host b, lease held (2 s), members a and b", st)
	}
	if n := b.gauge("sgd_fleet_members"); n != 2 || b.gauge("sgd_fleet_lease_held") != 1 {
		t.Errorf("sgd_fleet_members = %v, sgd_fleet_lease_held = %v; want 2 and 1", n, b.gauge("sgd_fleet_lease_held"))
	}
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint of the fleet's metrics: %v %v", problems, err)
	}

	attach(t, ctx, a, a.eni(), *other.GroupId)
	within(t, eventually, "b stops allowing a:3306 once a lost sg-web", func() bool { return !b.allows(a.addr, 3306) })

	attach(t, ctx, a, a.eni(), web)
	within(t, eventually, "b allows a:3306 again", func() bool { return b.allows(a.addr, 3306) })
	a.kill()
	within(t, 2*time.Second+5*time.Second, "b stops allowing a killed a after the TTL", func() bool { return !b.allows(a.addr, 3306) })
	if st := b.fl.status(); strings.Join(st.Members, ",") != "b" {
		t.Errorf("b sees members %v; want b alone", st.Members)
	}
}

// A clean stop revokes the lease: the host drops out at once, long before its TTL.
func TestFleetCleanStop(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := pair(t, hostOptions{etcd: srv.Client, ttl: 30}, hostOptions{etcd: srv.Client})
	web, db := webDB(t, ctx, a)
	attach(t, ctx, a, b.eni(), db)
	attach(t, ctx, a, a.eni(), web)
	within(t, eventually, "b allows a:3306", func() bool { return b.allows(a.addr, 3306) })
	a.stop()
	within(t, eventually, "b stops allowing a stopped a at once", func() bool { return !b.allows(a.addr, 3306) })
}

// A second live host with the same id is refused with the id and the setting named; the
// first one stays a member.
func TestFleetDuplicateHostID(t *testing.T) {
	srv := etcdtest.Start(t)
	a := newHost(t, hostOptions{id: "a", etcd: srv.Client, file: withEth0})
	_, err := startHost(t, hostOptions{id: "a", etcd: srv.Client, file: withEth0})
	if err == nil || !strings.Contains(err.Error(), `daemon.etcd.host_id "a"`) || !strings.Contains(err.Error(), "another live host") {
		t.Fatalf("a second host with id a = %v; want a refusal naming daemon.etcd.host_id \"a\"", err)
	}
	if st := a.fl.status(); st.Lease != "held" {
		t.Errorf("the first host's lease is %s; want held", st.Lease)
	}
	v, err := a.fl.st.LoadMembers(context.Background())
	if err != nil || v.Host("a") == nil || v.Host("a").Interfaces[0].Addresses[0] != a.addr {
		t.Errorf("members = %+v, %v; want the first host's record", v, err)
	}
}

// A host killed and started again at once with its id and state directory: it waits for
// its dead lease to expire, then joins, and the groups the API gave it match again.
func TestFleetRestartAfterKill(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := pair(t, hostOptions{etcd: srv.Client}, hostOptions{etcd: srv.Client})
	web, db := webDB(t, ctx, a)
	within(t, eventually, "b knows a's groups", func() bool { return b.fl.src.Snapshot().Group(db) != nil })
	attach(t, ctx, b, b.eni(), db)
	attach(t, ctx, b, a.eni(), web)
	within(t, eventually, "b allows a:3306", func() bool { return b.allows(a.addr, 3306) })
	a.kill()
	core, logs := observer.New(zap.InfoLevel)
	a2 := newHost(t, hostOptions{id: "a", addr: a.addr, etcd: srv.Client, file: withEth0, dir: a.dir, log: zap.New(core)})
	if logs.FilterMessageSnippet("waiting for it to expire").Len() != 1 {
		t.Error("the restarted host did not wait for its old lease; the test did not test it")
	}
	if st := a2.fl.status(); st.Lease != "held" {
		t.Errorf("the restarted host's lease is %s; want held", st.Lease)
	}
	within(t, eventually, "b allows the restarted a:3306", func() bool {
		v := b.fl.members.View()
		return v.Host("a") != nil && b.allows(a.addr, 3306)
	})
}

// A remote host carries a group of its own file that this host does not know: the
// group is left out, the reload does not fail, and the groups both know still match.
func TestFleetUnknownRemoteGroup(t *testing.T) {
	srv := etcdtest.Start(t)
	shared := "security_groups:\n  - {group_id: sg-shared, description: in both files}\n"
	a := newHost(t, hostOptions{id: "a", addr: "192.0.2.10", etcd: srv.Client,
		file: shared + "  - {group_id: sg-local, description: of a only}\ninterfaces: [{name: eth0, security_groups: [sg-shared, sg-local]}]\n"})
	b := newHost(t, hostOptions{id: "b", addr: "192.0.2.20", etcd: srv.Client,
		file: shared + "  - group_id: sg-db\n    ingress: [{ip_protocol: tcp, from_port: 3306, to_port: 3306, referenced_group_id: sg-shared}]\n" +
			"interfaces: [{name: eth0, security_groups: [sg-db]}]\n"})
	within(t, eventually, "b allows a:3306 through sg-shared", func() bool { return b.allows(a.addr, 3306) })
	if _, r := b.ctl.Status(); r.Failed != 0 {
		t.Errorf("b's reloads failed %d times (%s); want none", r.Failed, r.LastError)
	}
	for _, m := range b.ctl.Running().Model.Members {
		if strings.Join(m.Groups, ",") != "sg-shared" {
			t.Errorf("b's member %v carries %v; want sg-shared alone", m.Addr, m.Groups)
		}
	}
	// The file's groups are read-only through any host's API: b's record says so.
	if rec := b.fl.members.View().Host("a"); rec == nil || !rec.Interfaces[0].FileGroups {
		t.Errorf("a's record = %+v; want eth0's groups marked as the file's", rec)
	}
}

// With etcd unreachable a host keeps the members it last had (a change meanwhile does not
// reach it); while cut off for longer than its TTL it drops out of the other hosts'
// groups; when etcd answers it re-reads the members (the history it needed was compacted
// meanwhile), converges, and joins again.
func TestFleetMembersFailStatic(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p := etcdtest.NewProxy(t, strings.TrimPrefix(srv.Client, "http://"))
	core, logs := observer.New(zap.InfoLevel)
	acore, alogs := observer.New(zap.InfoLevel)
	a, b := pair(t, hostOptions{etcd: srv.Client, log: zap.New(acore)}, hostOptions{etcd: p.URL(), log: zap.New(core)})
	web, db := webDB(t, ctx, a)
	attach(t, ctx, a, b.eni(), db, web)
	attach(t, ctx, a, a.eni(), web, db)
	within(t, eventually, "b allows a:3306", func() bool { return b.allows(a.addr, 3306) })
	within(t, eventually, "a allows b:3306", func() bool { return a.allows(b.addr, 3306) })

	p.Cut()
	within(t, 5*time.Second, "b disconnected", func() bool { return b.gauge("sgd_store_connected") == 0 })
	attach(t, ctx, a, a.eni(), db) // a loses sg-web
	within(t, 2*time.Second+5*time.Second, "a drops b, whose lease expired", func() bool { return !a.allows(b.addr, 3306) })
	if !b.allows(a.addr, 3306) {
		t.Error("b, cut off, no longer allows a: it should keep the members it last had")
	}
	resp, err := a.fl.st.LoadMembers(ctx) // the revision now
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Client}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Compact(ctx, resp.Revision); err != nil {
		t.Fatal(err)
	}

	p.Restore()
	within(t, 15*time.Second, "b converges: a no longer carries sg-web", func() bool { return !b.allows(a.addr, 3306) })
	within(t, 15*time.Second, "b joins again: a allows b:3306", func() bool { return a.allows(b.addr, 3306) })
	if logs.FilterMessageSnippet("compacted").Len() == 0 {
		t.Error("b converged without re-reading after the compaction; the test did not test it")
	}
	if logs.FilterMessageSnippet("membership is lost").Len() != 1 || logs.FilterMessageSnippet("joined again").Len() != 1 {
		t.Errorf("b logged the loss %d times and joining again %d times; want once each",
			logs.FilterMessageSnippet("membership is lost").Len(), logs.FilterMessageSnippet("joined again").Len())
	}
	// a, connected all along, logged b's leaving and coming back, by host id.
	for _, msg := range []string{"a host joined", "a host left"} {
		if n := alogs.FilterMessageSnippet(msg).FilterField(zap.String("host_id", "b")).Len(); n < 1 {
			t.Errorf("a logged %q for b %d times; want at least once", msg, n)
		}
	}
}
