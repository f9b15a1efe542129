package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sgd-firewall/sgd/internal/daemon"
	"github.com/sgd-firewall/sgd/internal/settings"
)

// sgd status says AUDIT on its first line, marks a missing interface, and counts the
// connections adopted at start (or says adoption is off).
func TestPrintStatus(t *testing.T) {
	base := func() *daemon.Status {
		return &daemon.Status{Version: "v1", PID: 7, Started: time.Unix(0, 0), ConfigHash: "abc",
			Interfaces: []daemon.IfaceStatus{{Name: "eth0", Groups: []string{"sg-a"}}, {Name: "eth9", Groups: []string{"sg-a"}, Missing: true}},
			Settings:   settings.Daemon{QueueCount: 1, AdoptEstablished: true},
			Adopted:    map[string]int{"eth0": 2, "eth1": 1}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*daemon.Status)
		first string
		has   []string
	}{
		{"enforcing", func(*daemon.Status) {}, "sgd v1, pid 7", []string{
			"adopted:  3 established TCP connections (eth0 2, eth1 1) at start",
			"  eth0            sg-a\n",
			"  eth9            sg-a  (MISSING: no such device here; filtered once it appears)\n"}},
		{"audit", func(s *daemon.Status) { s.Audit = true }, "AUDIT MODE: nothing is dropped", nil},
		{"nothing adopted", func(s *daemon.Status) { s.Adopted = nil }, "sgd v1", []string{"adopted:  no established TCP connections at start"}},
		{"one adopted", func(s *daemon.Status) { s.Adopted = map[string]int{"eth0": 1} }, "sgd v1", []string{"adopted:  1 established TCP connection (eth0 1) at start"}},
		{"adoption off", func(s *daemon.Status) { s.Settings.AdoptEstablished, s.Adopted = false, nil }, "sgd v1",
			[]string{"adopted:  none (adopt_established: false)"}},
		{"fleet member", func(s *daemon.Status) {
			s.Store = &daemon.StoreStatus{Endpoints: "http://e:2379", Connected: true, AppliedRevision: 9, HostID: "b", Lease: "held",
				LeaseTTL: 10, Members: []string{"a", "b"}}
		}, "sgd v1", []string{"store:    etcd http://e:2379, connected, applied revision 9\n",
			"fleet:    host b, member (lease held, ttl 10 s); 2 hosts seen (a, b)\n"}},
		{"fleet lease lost", func(s *daemon.Status) {
			s.Store = &daemon.StoreStatus{Endpoints: "http://e:2379", AppliedRevision: 9, HostID: "b", Lease: "lost", Members: []string{"b"}}
		}, "sgd v1", []string{"DISCONNECTED", "fleet:    host b, NOT A MEMBER: lease lost", "1 host seen (b)"}},
		{"a large fleet", func(s *daemon.Status) {
			s.Store = &daemon.StoreStatus{HostID: "h00", Lease: "held", LeaseTTL: 10}
			for i := range 12 {
				s.Store.Members = append(s.Store.Members, fmt.Sprintf("h%02d", i))
			}
		}, "sgd v1", []string{"12 hosts seen (h00, h01, h02, h03, h04, h05, h06, h07, h08, h09, … 2 more)\n"}},
	} {
		s := base()
		tc.edit(s)
		var b bytes.Buffer
		printStatus(&b, s)
		out := b.String()
		if first, _, _ := strings.Cut(out, "\n"); !strings.HasPrefix(first, tc.first) {
			t.Errorf("%s: first line %q; want it to start %q", tc.name, first, tc.first)
		}
		for _, h := range tc.has {
			if !strings.Contains(out, h) {
				t.Errorf("%s: status lacks %q:\n%s", tc.name, h, out)
			}
		}
	}
}
