package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdMembersKey is the key prefix, under the store's prefix, of the fleet's member
// records: <prefix>members/<host_id>, one per host, each attached to its host's lease.
const etcdMembersKey = "members/"

// Member is one host of the fleet as it publishes itself (SPEC 4.6): its interfaces and
// ports with their addresses and the groups in force on them, so that group references on
// every other host match them. It is the JSON value of the host's key.
type Member struct {
	HostID     string            `json:"host_id"`
	Interfaces []MemberInterface `json:"interfaces"`
	Ports      []MemberInterface `json:"ports,omitempty"`
}

// MemberInterface is one interface or port of a member. Addresses are an interface's
// addresses on its host, a port's configured ones (its instance's). Groups are group ids;
// a host leaves out the default group it made up for itself (rules.GroupModel.Synthesized),
// which is its own, not the fleet's.
type MemberInterface struct {
	Name               string   `json:"name"`
	NetworkInterfaceID string   `json:"network_interface_id"`
	InstanceID         string   `json:"instance_id,omitempty"`
	Addresses          []string `json:"addresses"`
	Groups             []string `json:"groups"`
	// FileGroups and FileConnectionTracking: the host's config file sets the interface's
	// groups (its connection_tracking), read-only through the API of any host.
	FileGroups             bool `json:"file_groups,omitempty"`
	FileConnectionTracking bool `json:"file_connection_tracking,omitempty"`
}

// Members is the fleet's member records as one view: the hosts whose keys exist at
// Revision, by host id. The zero value is the empty fleet.
type Members struct {
	Revision int64    `json:"revision"` // the etcd revision of the view; 0: none read yet
	Hosts    []Member `json:"hosts"`
}

// Host returns the member record of the host with the given id, or nil.
func (m *Members) Host(id string) *Member {
	for i := range m.Hosts {
		if m.Hosts[i].HostID == id {
			return &m.Hosts[i]
		}
	}
	return nil
}

func (e *Etcd) membersKey() string           { return e.prefix + etcdMembersKey }
func (e *Etcd) memberKey(host string) string { return e.membersKey() + host }

// decodeMember reads a member key's value; the key names the host, and the record must say
// the same.
func (e *Etcd) decodeMember(kv *mvccpb.KeyValue) (Member, error) {
	host := strings.TrimPrefix(string(kv.Key), e.membersKey())
	var m Member
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return m, fmt.Errorf("member key %s at revision %d: %w", kv.Key, kv.ModRevision, err)
	}
	if m.HostID != host {
		return m, fmt.Errorf("member key %s at revision %d: its record says host %q", kv.Key, kv.ModRevision, m.HostID)
	}
	return m, nil
}

// LoadMembers reads every member record, with a linearizable read. A record that cannot be
// decoded is logged and left out.
func (e *Etcd) LoadMembers(ctx context.Context) (*Members, error) {
	ctx, cancel := e.withTimeout(ctx)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.membersKey(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("etcd %s: read the fleet's members: %w", e.endpoints, err)
	}
	hosts := map[string]Member{}
	e.listMembers(hosts, resp.Kvs)
	return membersView(hosts, resp.Header.Revision), nil
}

func (e *Etcd) listMembers(hosts map[string]Member, kvs []*mvccpb.KeyValue) {
	clear(hosts)
	for _, kv := range kvs {
		m, err := e.decodeMember(kv)
		if err != nil {
			e.log.Error("etcd: a member record that cannot be read; leaving it out", zap.Error(err))
			continue
		}
		hosts[m.HostID] = m
	}
}

func membersView(hosts map[string]Member, rev int64) *Members {
	v := &Members{Revision: rev, Hosts: []Member{}}
	for _, id := range slices.Sorted(maps.Keys(hosts)) {
		v.Hosts = append(v.Hosts, hosts[id])
	}
	return v
}

// WatchMembers reports the fleet's members as they change after base (a view LoadMembers
// read, or a cached one), each report the whole view, until ctx ends or the store is
// closed, when the channel is closed. Reports are coalesced as Watch's are. It resumes and
// re-lists as Watch does: a lost connection resumes from the last revision delivered,
// and after etcd compacted the history it needs (a long disconnection), the view is read
// anew — hosts whose leases expired meanwhile are gone from it. A record that cannot be
// decoded is logged and skipped: the view keeps the host's last good one.
func (e *Etcd) WatchMembers(ctx context.Context, base *Members) <-chan *Members {
	ch := newLatest[*Members]()
	hosts := map[string]Member{}
	for _, m := range base.Hosts {
		hosts[m.HostID] = m
	}
	go func() {
		defer close(ch)
		e.follow(ctx, base.Revision+1, watchSpec{key: e.membersKey(), prefix: true, what: "the fleet's members",
			events: func(evs []*clientv3.Event) {
				for _, ev := range evs {
					host := strings.TrimPrefix(string(ev.Kv.Key), e.membersKey())
					if ev.Type == mvccpb.DELETE {
						delete(hosts, host)
						continue
					}
					m, err := e.decodeMember(ev.Kv)
					if err != nil {
						e.log.Error("etcd: a member record that cannot be read; keeping the host's last one", zap.Error(err))
						continue
					}
					hosts[host] = m
				}
				ch.put(membersView(hosts, evs[len(evs)-1].Kv.ModRevision))
			},
			relist: func(kvs []*mvccpb.KeyValue, rev int64) {
				e.listMembers(hosts, kvs)
				ch.put(membersView(hosts, rev))
			}})
	}()
	return ch
}

// MembersCacheFile is the name, in the state directory, of fleet mode's copy of the last
// membership this host applied (SaveMembersCache), next to CacheFile.
const MembersCacheFile = "etcd-members.json"

// SaveMembersCache writes m to dir/MembersCacheFile atomically: the other hosts a host in
// fleet mode starts with when etcd cannot be reached at start.
func SaveMembersCache(dir string, m *Members) error {
	return saveJSON(dir, MembersCacheFile, "the members cache", m)
}

// LoadMembersCache reads dir/MembersCacheFile; an error wrapping fs.ErrNotExist when there
// is none.
func LoadMembersCache(dir string) (*Members, error) {
	var m Members
	if err := loadJSON(dir, MembersCacheFile, &m); err != nil {
		return nil, err
	}
	return &m, nil
}
