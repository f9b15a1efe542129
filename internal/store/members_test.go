package store

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sgd-firewall/sgd/internal/store/etcdtest"
)

// memberTTL is the tests' lease TTL: etcd's minimum with its default election timing.
const memberTTL = 2 * time.Second

func member(host string, addrs ...string) Member {
	return Member{HostID: host, Interfaces: []MemberInterface{{Name: "eth0", NetworkInterfaceID: InterfaceENI(host, "eth0"),
		Addresses: addrs, Groups: []string{"sg-web"}}}}
}

// view waits for a report of the watch that satisfies cond, and returns it.
func view(t *testing.T, ch <-chan *Members, d time.Duration, what string, cond func(*Members) bool) *Members {
	t.Helper()
	end := time.After(d)
	for {
		select {
		case v, ok := <-ch:
			if !ok {
				t.Fatalf("%s: the watch channel closed", what)
			}
			if cond(v) {
				return v
			}
		case <-end:
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

func hostIDs(v *Members) string {
	var ids []string
	for _, m := range v.Hosts {
		ids = append(ids, m.HostID)
	}
	return strings.Join(ids, ",")
}

// published is the first address of host's record in etcd ("" when it has none).
func published(t *testing.T, st *Etcd, host string) string {
	t.Helper()
	v, err := st.LoadMembers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m := v.Host(host); m != nil && len(m.Interfaces) > 0 && len(m.Interfaces[0].Addresses) > 0 {
		return m.Interfaces[0].Addresses[0]
	}
	return ""
}

func join(t *testing.T, ctx context.Context, st *Etcd, m Member) *Registration {
	t.Helper()
	r, err := st.Join(ctx, JoinOptions{HostID: m.HostID, TTL: memberTTL}, m)
	if err != nil {
		t.Fatalf("Join(%s) = %v", m.HostID, err)
	}
	return r
}

// A host's record is published under its lease, republished when it changes, and gone at
// once when the host leaves; a watcher sees each step.
func TestMembersJoinWatchLeave(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watcher := openEtcd(t, srv.Client)
	base, err := watcher.LoadMembers(ctx)
	if err != nil || len(base.Hosts) != 0 {
		t.Fatalf("LoadMembers of an empty etcd = %+v, %v", base, err)
	}
	ch := watcher.WatchMembers(ctx, base)

	a := join(t, ctx, openEtcd(t, srv.Client), member("a", "192.0.2.1"))
	if st, lease, ttl := a.Status(); st != LeaseHeld || lease == 0 || ttl != memberTTL {
		t.Errorf("Status = %v, %x, %v; want held, a lease, %v", st, lease, ttl, memberTTL)
	}
	v := view(t, ch, 5*time.Second, "a joined", func(v *Members) bool { return v.Host("a") != nil })
	if got := *v.Host("a"); !reflect.DeepEqual(got, member("a", "192.0.2.1")) {
		t.Errorf("record = %+v; want %+v", got, member("a", "192.0.2.1"))
	}
	a.Set(member("a", "192.0.2.1", "2001:db8::1"))
	view(t, ch, 5*time.Second, "a's new address", func(v *Members) bool {
		return v.Host("a") != nil && len(v.Host("a").Interfaces[0].Addresses) == 2
	})
	join(t, ctx, openEtcd(t, srv.Client), member("b", "192.0.2.2"))
	view(t, ch, 5*time.Second, "b joined", func(v *Members) bool { return hostIDs(v) == "a,b" })
	if now, err := watcher.LoadMembers(ctx); err != nil || hostIDs(now) != "a,b" {
		t.Errorf("LoadMembers = %+v, %v; want a and b", now, err)
	}

	if err := a.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	// Revoked: gone well before the lease's TTL could have run out.
	view(t, ch, memberTTL/2, "a left at once", func(v *Members) bool { return hostIDs(v) == "b" })
	if st, _, _ := a.Status(); st != LeaseLeft {
		t.Errorf("Status after Leave = %v; want left", st)
	}
}

// Two live hosts with one id: the second is refused, naming the id; the first keeps its
// record.
func TestMembersDuplicate(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	join(t, ctx, openEtcd(t, srv.Client), member("a", "192.0.2.1"))
	r, err := openEtcd(t, srv.Client).Join(ctx, JoinOptions{HostID: "a", TTL: memberTTL}, member("a", "192.0.2.99"))
	var dup *DuplicateHostError
	if !errors.As(err, &dup) || r != nil || !strings.Contains(err.Error(), `"a"`) || !strings.Contains(err.Error(), "live") {
		t.Fatalf("Join of a live host's id = %v, %v; want a DuplicateHostError naming \"a\"", r, err)
	}
	if got := published(t, openEtcd(t, srv.Client), "a"); got != "192.0.2.1" {
		t.Errorf("after the refusal a's record has %q; want the first host's 192.0.2.1", got)
	}
}

// A host killed (its keepalives stop, nothing revoked) and started again with its id:
// the new one waits for the dead lease to expire, then takes the key.
func TestMembersRestartAfterKill(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	core, logs := observer.New(zap.InfoLevel)
	kctx, kill := context.WithCancel(ctx)
	join(t, kctx, openEtcd(t, srv.Client), member("a", "192.0.2.1"))
	kill()
	r := join(t, ctx, openEtcdLog(t, srv.Client, zap.New(core)), member("a", "192.0.2.2"))
	if st, _, _ := r.Status(); st != LeaseHeld {
		t.Errorf("Status = %v; want held", st)
	}
	if logs.FilterMessageSnippet("waiting for it to expire").Len() != 1 {
		t.Error("the restarted host did not wait for its old lease; the test did not test it")
	}
	if got := published(t, openEtcd(t, srv.Client), "a"); got != "192.0.2.2" {
		t.Errorf("a's record has %q; want the restarted host's 192.0.2.2", got)
	}
}

// A host cut off from etcd for longer than its TTL drops out; when etcd answers again it
// joins again under a new lease, and says each step once.
func TestMembersLeaseLost(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := etcdtest.NewProxy(t, strings.TrimPrefix(srv.Client, "http://"))
	core, logs := observer.New(zap.InfoLevel)
	a := join(t, ctx, openEtcdLog(t, p.URL(), zap.New(core)), member("a", "192.0.2.1"))
	watcher := openEtcd(t, srv.Client)
	base, _ := watcher.LoadMembers(ctx)
	ch := watcher.WatchMembers(ctx, base)

	p.Cut()
	view(t, ch, memberTTL+5*time.Second, "a dropped out after its TTL", func(v *Members) bool { return v.Host("a") == nil })
	within(t, 5*time.Second, "a knows its lease is lost", func() bool { st, _, _ := a.Status(); return st == LeaseLost })
	time.Sleep(memberTTL) // more failed tries to join: still said once
	p.Restore()
	view(t, ch, 15*time.Second, "a joined again", func(v *Members) bool { return v.Host("a") != nil })
	within(t, 5*time.Second, "a holds its lease again", func() bool { st, _, _ := a.Status(); return st == LeaseHeld })
	if n, m := logs.FilterMessageSnippet("membership is lost").Len(), logs.FilterMessageSnippet("joined again").Len(); n != 1 || m != 1 {
		t.Errorf("logged the loss %d times and the new join %d times; want once each", n, m)
	}
}

// etcd down for longer than the TTL, then back with the lease it kept (etcd restores
// leases): the host moves its key to a new lease of its own rather than waiting for its
// old one, and lets the old one go.
func TestMembersEtcdRestarted(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	core, logs := observer.New(zap.InfoLevel)
	a := join(t, ctx, openEtcdLog(t, srv.Client, zap.New(core)), member("a", "192.0.2.1"))
	_, old, _ := a.Status()
	srv.Stop()
	within(t, memberTTL+5*time.Second, "a knows its lease is lost", func() bool { st, _, _ := a.Status(); return st == LeaseLost })
	srv.Start()
	within(t, 15*time.Second, "a holds a new lease", func() bool { st, l, _ := a.Status(); return st == LeaseHeld && l != old })
	_, lease, _ := a.Status()
	resp, err := openEtcd(t, srv.Client).cli.Get(ctx, a.key)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease != lease {
		t.Errorf("the key = %+v, %v; want it on the new lease %x", resp, err, lease)
	}
	if logs.FilterMessageSnippet("waiting for it to expire").Len() != 0 {
		t.Error("the host waited for its own old lease instead of taking the key over")
	}
	if ttl, err := a.remaining(ctx, clientv3.LeaseID(old)); err != nil || ttl != -1 {
		t.Errorf("the old lease's TTL = %d, %v; want it revoked (-1)", ttl, err)
	}
}

// A watcher cut off while hosts join, change and leave and etcd compacts the history
// re-reads the members when it is reconnected, and converges.
func TestMembersWatchCompacted(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := etcdtest.NewProxy(t, strings.TrimPrefix(srv.Client, "http://"))
	core, logs := observer.New(zap.InfoLevel)
	watcher := openEtcdLog(t, p.URL(), zap.New(core))
	writer := openEtcd(t, srv.Client)
	a := join(t, ctx, writer, member("a", "192.0.2.1"))
	base, err := watcher.LoadMembers(ctx)
	if err != nil || base.Host("a") == nil {
		t.Fatalf("LoadMembers = %+v, %v", base, err)
	}
	ch := watcher.WatchMembers(ctx, base)

	p.Cut()
	b := join(t, ctx, writer, member("b", "192.0.2.2"))
	b.Set(member("b", "192.0.2.3"))
	within(t, 5*time.Second, "b's change published", func() bool { return published(t, writer, "b") == "192.0.2.3" })
	if err := a.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := writer.cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	p.Restore()
	v := view(t, ch, 15*time.Second, "converged", func(v *Members) bool { return hostIDs(v) == "b" })
	if v.Host("b").Interfaces[0].Addresses[0] != "192.0.2.3" {
		t.Errorf("b = %+v; want its latest record", v.Host("b"))
	}
	if logs.FilterMessageSnippet("compacted").Len() == 0 {
		t.Error("the watcher converged without re-reading after the compaction; the test did not test it")
	}
}

// A record whose key and host id disagree, or that is not JSON, is left out.
func TestMembersBadRecords(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx := context.Background()
	st := openEtcd(t, srv.Client)
	for key, val := range map[string]string{"members/x": `{"host_id":"y"}`, "members/z": `{`, "members/ok": `{"host_id":"ok"}`} {
		if _, err := st.cli.Put(ctx, DefaultEtcdPrefix+key, val); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := st.LoadMembers(ctx); err != nil || hostIDs(v) != "ok" {
		t.Errorf("LoadMembers = %+v, %v; want the one good record", v, err)
	}
}

// The members cache keeps a view whole.
func TestMembersCache(t *testing.T) {
	dir := t.TempDir()
	v := &Members{Revision: 7, Hosts: []Member{member("a", "192.0.2.1")}}
	if err := SaveMembersCache(dir, v); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadMembersCache(dir); err != nil || !reflect.DeepEqual(got, v) {
		t.Errorf("LoadMembersCache = %+v, %v; want %+v", got, err, v)
	}
	if _, err := LoadMembersCache(t.TempDir()); err == nil {
		t.Error("LoadMembersCache of an empty directory = nil; want an error")
	}
}

func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
