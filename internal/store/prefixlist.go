package store

import (
	"net/netip"
	"slices"
	"strings"
)

// MaxPrefixListVersions is how many versions of a prefix list are kept for
// GetManagedPrefixListEntries --target-version, the current one included. AWS keeps 1,000
// ("Versions per prefix list", Amazon VPC quotas) and drops the oldest when a change would
// make one more; so does sgd. Versions are kept as the changes between them (at most 100
// entries added and 100 removed per ModifyManagedPrefixList), not as whole copies, so that
// the state file grows with what changed, not with size × versions.
const MaxPrefixListVersions = 1000

// PrefixListChange is what one version changed: the entries it added and the ones it
// removed (with their descriptions, so that older versions can be rebuilt whole).
type PrefixListChange struct {
	Version int64         `json:"version"` // the version this change made
	Added   []PrefixEntry `json:"added,omitempty"`
	Removed []PrefixEntry `json:"removed,omitempty"`
}

// RemovePrefixList removes the prefix list with the given id; it says whether there was one.
func (s *Snapshot) RemovePrefixList(id string) bool {
	n := len(s.PrefixLists)
	s.PrefixLists = slices.DeleteFunc(s.PrefixLists, func(pl PrefixList) bool { return pl.ID == id })
	return len(s.PrefixLists) != n
}

// Entry returns the entry with the given CIDR (as stored: canonical), or nil.
func (pl *PrefixList) Entry(cidr string) *PrefixEntry {
	for i := range pl.Entries {
		if pl.Entries[i].Cidr == cidr {
			return &pl.Entries[i]
		}
	}
	return nil
}

// Edit makes a new version: the entries whose CIDR is in remove go, add comes in, and the
// change is recorded (the oldest beyond MaxPrefixListVersions is forgotten). The caller
// has checked that every removed CIDR is there and no added one is. Entries stay in
// SortEntries order.
func (pl *PrefixList) Edit(add []PrefixEntry, remove []string) {
	ch := PrefixListChange{Version: pl.Version + 1, Added: slices.Clone(add)}
	pl.Entries = slices.DeleteFunc(pl.Entries, func(e PrefixEntry) bool {
		if slices.Contains(remove, e.Cidr) {
			ch.Removed = append(ch.Removed, e)
			return true
		}
		return false
	})
	pl.Entries = append(pl.Entries, add...)
	SortEntries(pl.Entries)
	pl.Version = ch.Version
	pl.History = append(pl.History, ch)
	if over := len(pl.History) - (MaxPrefixListVersions - 1); over > 0 {
		pl.History = slices.Delete(pl.History, 0, over)
	}
}

// EntriesAt returns the entries of version v, rebuilt from the current ones by undoing
// the changes after v; false when v is not kept (older than the oldest kept, or newer than
// the current version).
func (pl *PrefixList) EntriesAt(v int64) ([]PrefixEntry, bool) {
	if v > pl.Version || v < 1 || v < pl.Version-int64(len(pl.History)) {
		return nil, false
	}
	out := slices.Clone(pl.Entries)
	for i := len(pl.History) - 1; i >= 0 && pl.History[i].Version > v; i-- {
		ch := pl.History[i]
		out = slices.DeleteFunc(out, func(e PrefixEntry) bool {
			return slices.ContainsFunc(ch.Added, func(a PrefixEntry) bool { return a.Cidr == e.Cidr })
		})
		out = append(out, ch.Removed...)
	}
	SortEntries(out)
	return out, true
}

// SortEntries puts entries in address order (IPv4 before IPv6, then by address, then by
// length), the order GetManagedPrefixListEntries shows them in. A CIDR that does not parse
// (never stored: the API parses what it stores) sorts last, by its text.
func SortEntries(es []PrefixEntry) {
	slices.SortStableFunc(es, func(a, b PrefixEntry) int {
		pa, ea := netip.ParsePrefix(a.Cidr)
		pb, eb := netip.ParsePrefix(b.Cidr)
		switch {
		case ea != nil || eb != nil:
			if (ea == nil) != (eb == nil) {
				if ea == nil {
					return -1
				}
				return 1
			}
			return strings.Compare(a.Cidr, b.Cidr)
		}
		if c := pa.Addr().Compare(pb.Addr()); c != 0 {
			return c
		}
		return pa.Bits() - pb.Bits()
	})
}
