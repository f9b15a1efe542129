package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// MemberSource proposes the other hosts of the fleet as members of their groups (SPEC
// 4.6): every address of another host's interface or port is a member (rules.Member) of
// the groups in force on it, so that a rule referencing a group matches it wherever it is,
// with no members: entry in any file. This host's own record is left out: its own
// addresses are its interfaces' and ports', which the policy knows already.
//
// A group another host carries that no source of this host defines (a group of that
// host's own file) is left out, not an error (controller.Proposal.DropUnknownMemberGroups):
// no rule here names it. Addresses that are not IP addresses are left out too, logged when
// their record arrives: another host's record never fails this host's reload.
//
// It holds the last view it was given (Follow): with etcd unreachable that view stays in
// force, and a host whose lease expired meanwhile goes when the watch catches up. Safe for
// use by several goroutines.
type MemberSource struct {
	self string
	log  *zap.Logger

	mu   sync.Mutex
	view *Members

	applied func(*Members, error)
}

// NewMemberSource returns the source holding view (LoadMembers', or a cached one) for the
// host self. log may be nil.
func NewMemberSource(self string, view *Members, log *zap.Logger) *MemberSource {
	if log == nil {
		log = zap.NewNop()
	}
	return &MemberSource{self: self, log: log, view: view}
}

// OnApplied sets fn to be called after each view Follow took, with the error of the reload
// it made (nil when it made none: the members in force did not change). Set it before
// Follow runs.
func (s *MemberSource) OnApplied(fn func(view *Members, err error)) { s.applied = fn }

// Name is "etcd members", as logs show the source.
func (s *MemberSource) Name() string { return "etcd members" }

// View returns the view held. The caller must not change it.
func (s *MemberSource) View() *Members {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

// Propose returns the other hosts' addresses as members of their groups.
func (s *MemberSource) Propose(context.Context) (controller.Proposal, error) {
	c, loc := memberConfig(s.View(), s.self)
	b, _ := json.Marshal(c.Members)
	sum := sha256.Sum256(b)
	return controller.Proposal{Config: c, Locator: loc, Version: hex.EncodeToString(sum[:]), DropUnknownMemberGroups: true}, nil
}

// memberConfig is view's members but self's, with where each came from.
func memberConfig(view *Members, self string) (rules.Config, memberLocator) {
	var c rules.Config
	var loc memberLocator
	for _, m := range view.Hosts {
		if m.HostID == self {
			continue
		}
		for _, itf := range slices.Concat(m.Interfaces, m.Ports) {
			if len(itf.Groups) == 0 {
				continue
			}
			for _, a := range itf.Addresses {
				if _, ok := memberAddr(a); !ok {
					continue
				}
				c.Members = append(c.Members, rules.Member{Address: a, SecurityGroups: slices.Clone(itf.Groups)})
				loc = append(loc, "etcd: member "+m.HostID+" interface "+itf.Name)
			}
		}
	}
	return c, loc
}

// memberAddr says whether a is an address validation takes for a member (rules: no zone,
// no IPv4-mapped IPv6).
func memberAddr(a string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(strings.TrimSpace(a))
	return ip, err == nil && ip.Zone() == "" && !ip.Is4In6()
}

// memberLocator names the member record each member came from.
type memberLocator []string

func (l memberLocator) Locate(path ...any) rules.Location {
	if len(path) >= 2 {
		if i, ok := path[1].(int); ok && i >= 0 && i < len(l) {
			return rules.Location{File: l[i]}
		}
	}
	return rules.Location{File: "etcd: members"}
}

// Follow takes each view reported on views (Etcd.WatchMembers), logs the hosts that
// joined and left, and reloads r when the members in force change, with why "etcd
// members, revision N". Each view is reported to OnApplied's function. A reload that
// fails leaves the running policy as it was (fail-static) and is tried again with the
// next reload. Follow returns when views is closed.
func (s *MemberSource) Follow(ctx context.Context, views <-chan *Members, r Reloader) {
	for view := range views {
		s.mu.Lock()
		old := s.view
		s.view = view
		s.mu.Unlock()
		s.logChanges(old, view)
		was, _ := memberConfig(old, s.self)
		now, _ := memberConfig(view, s.self)
		var err error
		if !reflect.DeepEqual(was.Members, now.Members) {
			err = r.Reload(ctx, fmt.Sprintf("etcd members, revision %d", view.Revision))
		}
		if s.applied != nil {
			s.applied(view, err)
		}
	}
}

// logChanges says, at info level, which other hosts joined, left or changed between two
// views, and warns of addresses a record carries that are left out.
func (s *MemberSource) logChanges(old, now *Members) {
	for _, m := range now.Hosts {
		if m.HostID == s.self {
			continue
		}
		prev := old.Host(m.HostID)
		if prev != nil && reflect.DeepEqual(*prev, m) {
			continue
		}
		var addrs, bad []string
		for _, itf := range slices.Concat(m.Interfaces, m.Ports) {
			for _, a := range itf.Addresses {
				if _, ok := memberAddr(a); ok {
					addrs = append(addrs, a)
				} else {
					bad = append(bad, a)
				}
			}
		}
		if prev == nil {
			s.log.Info("fleet: a host joined", zap.String("host_id", m.HostID), zap.Strings("addresses", addrs))
		} else {
			s.log.Info("fleet: a host's interfaces or groups changed", zap.String("host_id", m.HostID), zap.Strings("addresses", addrs))
		}
		if len(bad) > 0 {
			s.log.Warn("fleet: a host's record has addresses that are not IP addresses; they are left out",
				zap.String("host_id", m.HostID), zap.Strings("addresses", bad))
		}
	}
	for _, m := range old.Hosts {
		if m.HostID != s.self && now.Host(m.HostID) == nil {
			s.log.Info("fleet: a host left (its lease was revoked or expired)", zap.String("host_id", m.HostID))
		}
	}
}
