package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// reloads counts the reloads asked of it, as the controller would take them.
type reloads struct {
	mu  sync.Mutex
	why []string
}

func (r *reloads) Reload(_ context.Context, why string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.why = append(r.why, why)
	return nil
}

func (r *reloads) Check(context.Context) error { return nil }

func proposed(t *testing.T, s *MemberSource) string {
	t.Helper()
	p, err := s.Propose(context.Background())
	if err != nil || !p.DropUnknownMemberGroups {
		t.Fatalf("Propose = %+v, %v; want DropUnknownMemberGroups", p, err)
	}
	var out []string
	for i, m := range p.Config.Members {
		out = append(out, fmt.Sprintf("%s %v @%s", m.Address, m.SecurityGroups, p.Locator.Locate("members", i).File))
	}
	return strings.Join(out, "; ")
}

// Other hosts' addresses are members of the groups on their interfaces and ports; this
// host's own record, interfaces with no groups and addresses that are none are left out.
func TestMemberSourcePropose(t *testing.T) {
	view := &Members{Revision: 3, Hosts: []Member{
		{HostID: "a", Interfaces: []MemberInterface{{Name: "eth0", Addresses: []string{"192.0.2.1", "2001:db8::1"}, Groups: []string{"sg-web"}}},
			Ports: []MemberInterface{{Name: "vdb", Addresses: []string{"198.51.100.5", "fe80::1%vdb", "::ffff:192.0.2.9", "x"}, Groups: []string{"sg-db", "sg-b"}}}},
		{HostID: "b", Interfaces: []MemberInterface{{Name: "eth0", Addresses: []string{"192.0.2.2"}, Groups: []string{"sg-web"}}}},
		{HostID: "c", Interfaces: []MemberInterface{{Name: "eth1", Addresses: []string{"192.0.2.3"}}}},
	}}
	s := NewMemberSource("b", view, nil)
	want := "192.0.2.1 [sg-web] @etcd: member a interface eth0; 2001:db8::1 [sg-web] @etcd: member a interface eth0; " +
		"198.51.100.5 [sg-db sg-b] @etcd: member a interface vdb"
	if got := proposed(t, s); got != want {
		t.Errorf("Propose = %s\nwant %s", got, want)
	}
}

// Follow reloads when the members in force change, not for a view that changes nothing
// (a host's record written again, this host's own record).
func TestMemberSourceFollow(t *testing.T) {
	a := member("a", "192.0.2.1")
	s := NewMemberSource("self", &Members{}, nil)
	var seen []int64
	s.OnApplied(func(v *Members, err error) { seen = append(seen, v.Revision) })
	ch := make(chan *Members, 4)
	ch <- &Members{Revision: 2, Hosts: []Member{a}}
	ch <- &Members{Revision: 3, Hosts: []Member{a, member("self", "192.0.2.9")}}
	ch <- &Members{Revision: 4, Hosts: []Member{member("self", "192.0.2.9")}}
	close(ch)
	var r reloads
	s.Follow(context.Background(), ch, &r)
	if got := strings.Join(r.why, "; "); got != "etcd members, revision 2; etcd members, revision 4" {
		t.Errorf("reloads: %s; want revisions 2 and 4", got)
	}
	if fmt.Sprint(seen) != "[2 3 4]" || s.View().Revision != 4 {
		t.Errorf("applied %v, view at %d; want every view, the last in force", seen, s.View().Revision)
	}
}
