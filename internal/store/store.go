// Package store keeps the Security Group objects created through sgd's EC2 API — groups
// and their rules, managed prefix lists, tags, and which groups an interface carries —
// and proposes them to the controller as one more source of desired state.
//
// A Store holds Snapshots: the whole API state at one revision, replaced whole by Commit.
// Dir is the implementation on a local state directory; Etcd, for fleet mode (SPEC 4.6),
// the one on etcd v3, which also holds the fleet's members: each host's interfaces, ports
// and their groups under a lease of its own (Registration), proposed to every other host's
// controller as members of their groups (MemberSource). Nothing here judges packets or validates rules: the
// controller validates a proposed snapshot together with every other source before the
// snapshot is committed (Source.Apply).
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// A Store keeps the API's state. Implementations are safe for use by several goroutines.
type Store interface {
	// Load returns the state last committed (an empty snapshot at revision 0 before any).
	// The caller owns the result.
	Load(ctx context.Context) (*Snapshot, error)
	// Commit replaces the state with s, atomically: after a crash at any point, Load
	// returns either the previous state or s, whole. s.Revision must be the revision of
	// the state it replaces (ErrConflict otherwise: someone else committed first); on
	// success s.Revision is the new, higher revision.
	Commit(ctx context.Context, s *Snapshot) error
	// Close releases the store; the state stays.
	Close() error
}

// ErrConflict is Commit's error when the state changed since the snapshot was loaded.
var ErrConflict = errors.New("store: the state changed since it was read")

// Snapshot is the API's whole state at one revision. The zero value is the empty state.
// Lists keep the order objects were created in (Describe* shows them so).
type Snapshot struct {
	Revision    uint64       `json:"revision"`
	Groups      []Group      `json:"groups"`
	PrefixLists []PrefixList `json:"prefix_lists"`
	// Interfaces are the interfaces whose groups were set through the API
	// (ModifyNetworkInterfaceAttribute --groups).
	Interfaces []Attachment `json:"interfaces"`
}

// Tag is an EC2 tag.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Group is a security group created through the API. Its egress rules are all explicit:
// CreateSecurityGroup writes AWS's default egress as rules of their own, which can be
// revoked, as in AWS.
type Group struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Tags        []Tag  `json:"tags,omitempty"`
	Ingress     []Rule `json:"ingress"`
	Egress      []Rule `json:"egress"`
}

// Rule is one rule as the API wrote it, in the config model's terms (rules.Rule): ports
// are pointers so that "omitted" differs from 0. ID is its sgr- id, random when it was
// created and kept for good (SPEC 4.1).
type Rule struct {
	ID                string `json:"id"`
	Protocol          string `json:"protocol"`
	FromPort          *int   `json:"from_port,omitempty"`
	ToPort            *int   `json:"to_port,omitempty"`
	CidrIPv4          string `json:"cidr_ipv4,omitempty"`
	CidrIPv6          string `json:"cidr_ipv6,omitempty"`
	PrefixListID      string `json:"prefix_list_id,omitempty"`
	ReferencedGroupID string `json:"referenced_group_id,omitempty"`
	Description       string `json:"description,omitempty"`
	Tags              []Tag  `json:"tags,omitempty"`
}

// PrefixList is a customer-managed prefix list. Version counts the changes of its entries,
// from 1 (a new name or size is not a new version, as in AWS); History holds the changes
// that made the versions after the oldest one kept (Edit, EntriesAt).
type PrefixList struct {
	ID            string             `json:"id"`
	Name          string             `json:"name"`
	AddressFamily string             `json:"address_family"` // IPv4 or IPv6
	MaxEntries    int                `json:"max_entries"`
	Version       int64              `json:"version"`
	Entries       []PrefixEntry      `json:"entries"`
	Tags          []Tag              `json:"tags,omitempty"`
	State         string             `json:"state,omitempty"` // create-complete, modify-complete
	History       []PrefixListChange `json:"history,omitempty"`
	// ClientToken is CreateManagedPrefixList's idempotency token, when it had one: the
	// same create retried returns this list instead of making a second one.
	ClientToken string `json:"client_token,omitempty"`
}

// PrefixEntry is one CIDR of a prefix list, in canonical form (masked, as netip prints it).
type PrefixEntry struct {
	Cidr        string `json:"cidr"`
	Description string `json:"description,omitempty"`
}

// Attachment is the groups one interface carries, as set through the API.
type Attachment struct {
	Interface string `json:"interface"`
	// Host is, in fleet mode, the host id (daemon.etcd.host_id) of the host whose
	// interface it is; "" on a single host — and, for an attachment written in fleet
	// mode before hosts had ids, every host with an interface of that name, unless the
	// host has one of its own for it (Snapshot.ConfigFor).
	Host   string   `json:"host,omitempty"`
	Groups []string `json:"groups"` // nil: not set through the API
	// ConnectionTracking, when set, are the interface's timeouts set through the API
	// (ModifyNetworkInterfaceAttribute --connection-tracking-specification).
	ConnectionTracking *rules.ConnectionTracking `json:"connection_tracking,omitempty"`
}

// Clone returns a deep copy of s.
func (s *Snapshot) Clone() *Snapshot {
	b, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("store: marshal a snapshot: %v", err)) // plain data: cannot fail
	}
	var c Snapshot
	if err := json.Unmarshal(b, &c); err != nil {
		panic(fmt.Sprintf("store: unmarshal a snapshot: %v", err))
	}
	return &c
}

// Group returns the group with the given id, or nil.
func (s *Snapshot) Group(id string) *Group {
	for i := range s.Groups {
		if s.Groups[i].ID == id {
			return &s.Groups[i]
		}
	}
	return nil
}

// GroupByName returns the group with the given name (case-insensitively, as AWS compares
// them), or nil.
func (s *Snapshot) GroupByName(name string) *Group {
	for i := range s.Groups {
		if strings.EqualFold(s.Groups[i].Name, name) {
			return &s.Groups[i]
		}
	}
	return nil
}

// RemoveGroup removes the group with the given id; it says whether there was one.
func (s *Snapshot) RemoveGroup(id string) bool {
	n := len(s.Groups)
	s.Groups = slices.DeleteFunc(s.Groups, func(g Group) bool { return g.ID == id })
	return len(s.Groups) != n
}

// PrefixList returns the prefix list with the given id, or nil.
func (s *Snapshot) PrefixList(id string) *PrefixList {
	for i := range s.PrefixLists {
		if s.PrefixLists[i].ID == id {
			return &s.PrefixLists[i]
		}
	}
	return nil
}

// Attachment returns the API's attachment in force on the named interface of host ("":
// a single host's): the host's own, else one for every host (Host ""); nil when none.
func (s *Snapshot) Attachment(host, name string) *Attachment {
	if a := s.attachment(host, name); a != nil || host == "" {
		return a
	}
	return s.attachment("", name)
}

func (s *Snapshot) attachment(host, name string) *Attachment {
	for i := range s.Interfaces {
		if s.Interfaces[i].Interface == name && s.Interfaces[i].Host == host {
			return &s.Interfaces[i]
		}
	}
	return nil
}

// Attach returns host's own attachment of the named interface for changing it, adding one
// when there is none (a copy of the one for every host that was in force, if any).
func (s *Snapshot) Attach(host, name string) *Attachment {
	if a := s.attachment(host, name); a != nil {
		return a
	}
	a := Attachment{Interface: name, Host: host}
	if all := s.attachment("", name); all != nil {
		a.Groups, a.ConnectionTracking = slices.Clone(all.Groups), all.ConnectionTracking
	}
	s.Interfaces = append(s.Interfaces, a)
	return &s.Interfaces[len(s.Interfaces)-1]
}

// attachments are the attachments in force on host ("": a single host), in order: see
// Attachment.
func (s *Snapshot) attachments(host string) []Attachment {
	var out []Attachment
	for _, a := range s.Interfaces {
		if a.Host == host || a.Host == "" && (host == "" || s.attachment(host, a.Interface) == nil) {
			out = append(out, a)
		}
	}
	return out
}

// InterfaceENI is the ENI id of host's interface name, for an interface without one of
// its own: eni- and 17 hex digits of a hash. On a single host (host "") it is the one
// derived from the name alone (rules.PortENI), as it always was; in fleet mode the host id
// is part of it, so that eth0 of two hosts are two ENIs (STYLE 18: the same on every start).
func InterfaceENI(host, name string) string {
	if host == "" {
		return rules.PortENI(name)
	}
	sum := sha256.Sum256([]byte("sgd interface v1\x00" + host + "\x00" + name))
	return "eni-" + hex.EncodeToString(sum[:9])[:17]
}

// Rule returns the rule with the given id, the group holding it, and whether it is an
// egress rule; nil when no group has it.
func (s *Snapshot) Rule(id string) (*Rule, *Group, bool) {
	for i := range s.Groups {
		g := &s.Groups[i]
		for j := range g.Ingress {
			if g.Ingress[j].ID == id {
				return &g.Ingress[j], g, false
			}
		}
		for j := range g.Egress {
			if g.Egress[j].ID == id {
				return &g.Egress[j], g, true
			}
		}
	}
	return nil, nil, false
}

// Config is the snapshot in the config model's terms, what the controller validates: on a
// single host (ConfigFor("")).
func (s *Snapshot) Config() rules.Config { return s.ConfigFor("") }

// ConfigFor is the snapshot in the config model's terms for host (its id in fleet mode,
// "" on a single host): the groups and prefix lists, and the attachments in force on that
// host's interfaces (Attachment).
func (s *Snapshot) ConfigFor(host string) rules.Config {
	var c rules.Config
	for _, g := range s.Groups {
		egress := ruleConfigs(g.Egress)
		c.SecurityGroups = append(c.SecurityGroups, rules.Group{GroupID: g.ID, GroupName: g.Name,
			Description: g.Description, Ingress: ruleConfigs(g.Ingress), Egress: &egress})
	}
	for _, pl := range s.PrefixLists {
		p := rules.PrefixList{PrefixListID: pl.ID, Name: pl.Name, Entries: []string{}}
		for _, e := range pl.Entries {
			p.Entries = append(p.Entries, e.Cidr)
		}
		c.PrefixLists = append(c.PrefixLists, p)
	}
	for _, a := range s.attachments(host) {
		c.Interfaces = append(c.Interfaces, rules.Interface{Name: a.Interface, SecurityGroups: slices.Clone(a.Groups),
			ConnectionTracking: a.ConnectionTracking})
	}
	return c
}

func ruleConfigs(rs []Rule) []rules.Rule {
	out := make([]rules.Rule, 0, len(rs))
	for _, r := range rs {
		out = append(out, rules.Rule{IPProtocol: rules.Protocol(r.Protocol), FromPort: r.FromPort, ToPort: r.ToPort,
			CidrIPv4: r.CidrIPv4, CidrIPv6: r.CidrIPv6, PrefixListID: r.PrefixListID, ReferencedGroupID: r.ReferencedGroupID,
			Description: r.Description, SecurityGroupRuleID: r.ID})
	}
	return out
}
