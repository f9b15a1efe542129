package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
)

func cidrs(es []PrefixEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Cidr)
	}
	return out
}

// Edit makes versions; EntriesAt rebuilds each kept one, descriptions included, and
// forgets the oldest beyond MaxPrefixListVersions.
func TestPrefixListVersions(t *testing.T) {
	pl := PrefixList{ID: "pl-0123456789abcdef0", Version: 1, Entries: []PrefixEntry{{Cidr: "10.0.0.0/8", Description: "corp"}}}
	pl.Edit([]PrefixEntry{{Cidr: "192.0.2.0/24"}, {Cidr: "2001:db8::/32"}, {Cidr: "172.16.0.0/12"}}, nil) // v2
	pl.Edit(nil, []string{"10.0.0.0/8"})                                                                  // v3
	pl.Edit([]PrefixEntry{{Cidr: "10.0.0.0/8", Description: "corp again"}}, []string{"192.0.2.0/24"})     // v4
	want := map[int64][]string{
		1: {"10.0.0.0/8"},
		2: {"10.0.0.0/8", "172.16.0.0/12", "192.0.2.0/24", "2001:db8::/32"},
		3: {"172.16.0.0/12", "192.0.2.0/24", "2001:db8::/32"},
		4: {"10.0.0.0/8", "172.16.0.0/12", "2001:db8::/32"},
	}
	if pl.Version != 4 || !slices.Equal(cidrs(pl.Entries), want[4]) {
		t.Fatalf("after 3 edits: version %d, entries %v; want 4, %v", pl.Version, cidrs(pl.Entries), want[4])
	}
	for v, w := range want {
		got, ok := pl.EntriesAt(v)
		if !ok || !slices.Equal(cidrs(got), w) {
			t.Errorf("EntriesAt(%d) = %v, %v; want %v", v, cidrs(got), ok, w)
		}
	}
	if v1, _ := pl.EntriesAt(1); v1[0].Description != "corp" {
		t.Errorf("EntriesAt(1) = %+v; want the description it had then", v1)
	}
	for _, v := range []int64{0, 5} {
		if got, ok := pl.EntriesAt(v); ok {
			t.Errorf("EntriesAt(%d) = %v, true; want false", v, got)
		}
	}

	for i := range MaxPrefixListVersions {
		pl.Edit([]PrefixEntry{{Cidr: fmt.Sprintf("198.51.100.%d/32", i%256)}}, nil)
		pl.Edit(nil, []string{fmt.Sprintf("198.51.100.%d/32", i%256)})
	}
	if len(pl.History) != MaxPrefixListVersions-1 {
		t.Errorf("%d changes kept; want %d (versions kept, the current one included, minus one)", len(pl.History), MaxPrefixListVersions-1)
	}
	oldest := pl.Version - int64(MaxPrefixListVersions) + 1
	if _, ok := pl.EntriesAt(oldest); !ok {
		t.Errorf("EntriesAt(%d), the oldest kept, = false", oldest)
	}
	if _, ok := pl.EntriesAt(oldest - 1); ok {
		t.Errorf("EntriesAt(%d), older than kept, = true", oldest-1)
	}
}

// A prefix list, its versions and tags come back whole from the directory.
func TestDirPersistsPrefixLists(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	d := open(t, dir)
	s, _ := d.Load(ctx)
	pl := PrefixList{ID: "pl-0123456789abcdef0", Name: "admins", AddressFamily: "IPv4", MaxEntries: 5, Version: 1,
		Entries: []PrefixEntry{{Cidr: "10.0.0.0/8"}}, Tags: []Tag{{"team", "ops"}}, State: "create-complete", ClientToken: "t"}
	pl.Edit([]PrefixEntry{{Cidr: "192.0.2.0/24", Description: "lab"}}, nil)
	s.PrefixLists = append(s.PrefixLists, pl)
	if err := d.Commit(ctx, s); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d = open(t, dir)
	defer d.Close()
	got, err := d.Load(ctx)
	if err != nil || len(got.PrefixLists) != 1 {
		t.Fatalf("Load after reopening = %+v, %v", got, err)
	}
	g := got.PrefixList(pl.ID)
	v1, ok := g.EntriesAt(1)
	if g.Version != 2 || g.Name != "admins" || g.ClientToken != "t" || len(g.Tags) != 1 || !ok || !slices.Equal(cidrs(v1), []string{"10.0.0.0/8"}) ||
		g.Entry("192.0.2.0/24") == nil || g.Entry("192.0.2.0/24").Description != "lab" {
		t.Errorf("the prefix list after reopening = %+v; want it as committed, version 1 still readable", g)
	}
	if got.Config().PrefixLists[0].PrefixListID != pl.ID || len(got.Config().PrefixLists[0].Entries) != 2 {
		t.Errorf("Config() = %+v; want the list with both entries", got.Config().PrefixLists)
	}
	if !got.RemovePrefixList(pl.ID) || got.RemovePrefixList(pl.ID) {
		t.Error("RemovePrefixList: want true, then false")
	}
}
