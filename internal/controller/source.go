package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// A Source proposes desired state: the config file today (File); an EC2 API store and
// etcd next. A source never publishes anything; the controller reads every source,
// validates what they propose as one whole, and publishes it or nothing.
type Source interface {
	// Name says which source this is, in logs (a file's path).
	Name() string
	// Propose returns what the source wants in force now. An error means it could not be
	// read at all (a file that does not parse); the load fails with it, unwrapped, so
	// that coded errors (rules.Error, rules.Errors) reach the user as they are.
	Propose(ctx context.Context) (Proposal, error)
}

// Proposal is one source's desired state.
type Proposal struct {
	// Config is the Security Group part: groups, prefix lists, interfaces, ports, members.
	Config rules.Config
	// Locator places Config's parts where they were written (a file's lines, an API
	// request's parameters), for the errors validation reports; nil when unknown.
	Locator rules.Locator
	// Version names what was read: a file's sha256, an etcd revision. The running state's
	// version is it, when there is one source (State.Version).
	Version string
	// Quotas are the SG quotas this source sets (the file's daemon: section); nil when it
	// sets none. The first source that sets them sets them.
	Quotas *rules.Quotas
	// Problems are what the source itself found wrong in what it read (the file's daemon:
	// section). They are reported ahead of validation's, and any of them rejects the whole.
	Problems rules.Errors
	// DropUnknownMemberGroups leaves out, from this proposal's Config.Members, every group
	// that no source's security_groups defines (and a member left with none), where
	// validation would refuse it with InvalidGroup.NotFound. It is for fleet mode's
	// members (store.MemberSource): another host's interfaces carry groups of that host's
	// own file too, which this host does not know and has no rule about — leaving them out
	// opens nothing, since only a rule naming a group makes its members matter. Everything
	// else in the proposal is validated as usual.
	DropUnknownMemberGroups bool
}

// State is desired state made ready to publish: merged from every source, validated,
// compiled. It is immutable once made, and shared without locks.
type State struct {
	Model  *rules.Model
	Policy *rules.Policy
	// Version is the one source's version, or, with several, a sha256 of all of theirs.
	// Metrics (sgd_config_info) and logs show it.
	Version string
}

// Load reads every source, merges what they propose, validates the whole with the AWS
// rules (internal/rules) and compiles it. It changes nothing: the result is what Start or
// a reload would publish. Validation errors come back as rules.Errors, each where its
// source says the value was written; the sources' own problems come first.
func Load(ctx context.Context, env rules.Env, srcs ...Source) (*State, error) {
	ps := make([]Proposal, 0, len(srcs))
	for _, s := range srcs {
		p, err := s.Propose(ctx)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	dropUnknownMemberGroups(ps)
	c, loc := merge(ps)
	var opt rules.Options
	var problems rules.Errors
	quotas := false
	for _, p := range ps {
		if p.Quotas != nil && !quotas {
			opt.Quotas, quotas = *p.Quotas, true
		}
		problems = append(problems, p.Problems...)
	}
	m, err := rules.ValidateConfig(&c, loc, opt)
	if err != nil {
		var es rules.Errors
		if !errors.As(err, &es) {
			return nil, err
		}
		problems = append(problems, es...)
	}
	if len(problems) > 0 {
		return nil, problems
	}
	s := &State{Model: m, Version: version(srcs, ps)}
	m.Hash = s.Version
	if len(srcs) == 1 {
		m.File = srcs[0].Name()
	}
	if s.Policy, err = rules.Compile(m, env); err != nil {
		return nil, err
	}
	return s, nil
}

// dropUnknownMemberGroups applies each proposal's DropUnknownMemberGroups: its members keep
// the groups some proposal defines (by group_id, as members name them), in order. The
// proposal's locator is given the indexes the kept ones had.
func dropUnknownMemberGroups(ps []Proposal) {
	known := map[string]bool{}
	for _, p := range ps {
		for _, g := range p.Config.SecurityGroups {
			known[strings.TrimSpace(g.GroupID)] = true
		}
	}
	for i := range ps {
		p := &ps[i]
		if !p.DropUnknownMemberGroups {
			continue
		}
		var kept []rules.Member
		re := reindexed{loc: p.Locator, groups: map[int][]int{}}
		for mi, m := range p.Config.Members {
			var gs []string
			var at []int
			for gi, g := range m.SecurityGroups {
				if known[strings.TrimSpace(g)] {
					gs, at = append(gs, g), append(at, gi)
				}
			}
			if len(gs) == 0 {
				continue
			}
			re.groups[len(kept)] = at
			re.members = append(re.members, mi)
			kept = append(kept, rules.Member{Address: m.Address, SecurityGroups: gs})
		}
		p.Config.Members = kept
		p.Locator = re
	}
}

// reindexed locates the members a proposal kept (dropUnknownMemberGroups) where its own
// locator has them: member i was its members[i], and its group j its group groups[i][j].
type reindexed struct {
	loc     rules.Locator
	members []int
	groups  map[int][]int
}

func (r reindexed) Locate(path ...any) rules.Location {
	if len(path) >= 2 && path[0] == "members" {
		if i, ok := path[1].(int); ok && i >= 0 && i < len(r.members) {
			p := append([]any{"members", r.members[i]}, path[2:]...)
			if len(p) >= 4 {
				if j, ok := p[3].(int); ok && p[2] == "security_groups" && j >= 0 && j < len(r.groups[i]) {
					p[3] = r.groups[i][j]
				}
			}
			path = p
		}
	}
	return locate(r.loc, path)
}

func version(srcs []Source, ps []Proposal) string {
	if len(ps) == 1 {
		return ps[0].Version
	}
	h := sha256.New()
	for i, p := range ps {
		h.Write([]byte(srcs[i].Name() + "\x00" + p.Version + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// merge puts the proposals' lists one after another, in source order, and returns a
// locator that sends each path back to the source it came from. One exception: an
// interface a later source names that an earlier one lists without groups (or without
// connection_tracking) takes them from the later source — the API sets them on an
// interface the file lists without (ModifyNetworkInterfaceAttribute); errors about it are
// the earlier source's. One both set is listed twice (InvalidNetworkInterface.Duplicate).
func merge(ps []Proposal) (rules.Config, rules.Locator) {
	switch len(ps) {
	case 0:
		return rules.Config{}, nil
	case 1:
		return ps[0].Config, ps[0].Locator
	}
	var c rules.Config
	m := &merged{ps: ps, at: map[string][]origin{}}
	add := func(key string, src, n int) {
		for i := range n {
			m.at[key] = append(m.at[key], origin{src, i})
		}
	}
	byName := map[string]int{} // interface name → index in c.Interfaces
	byPort := map[string]int{} // port name → index in c.Ports
	for k, p := range ps {
		c.SecurityGroups = append(c.SecurityGroups, p.Config.SecurityGroups...)
		add("security_groups", k, len(p.Config.SecurityGroups))
		c.PrefixLists = append(c.PrefixLists, p.Config.PrefixLists...)
		add("prefix_lists", k, len(p.Config.PrefixLists))
		c.Members = append(c.Members, p.Config.Members...)
		add("members", k, len(p.Config.Members))
		for _, pt := range p.Config.Ports {
			byPort[pt.Name] = len(c.Ports)
			c.Ports = append(c.Ports, pt)
		}
		add("ports", k, len(p.Config.Ports))
		for i, itf := range p.Config.Interfaces {
			if j, ok := byPort[itf.Name]; ok && fill(&c.Ports[j].SecurityGroups, &c.Ports[j].ConnectionTracking, itf) {
				continue // the API names a port as an interface (its ENI)
			}
			if j, ok := byName[itf.Name]; ok && fill(&c.Interfaces[j].SecurityGroups, &c.Interfaces[j].ConnectionTracking, itf) {
				continue
			}
			byName[itf.Name] = len(c.Interfaces)
			c.Interfaces = append(c.Interfaces, itf)
			m.at["interfaces"] = append(m.at["interfaces"], origin{k, i})
		}
	}
	return c, m
}

// fill gives an earlier source's entry (its groups and connection tracking) what a later
// source's interface entry sets of it, when the earlier one leaves that unset; it reports
// false, changing nothing, when both set the same thing (the entry is then listed twice).
func fill(groups *[]string, ct **rules.ConnectionTracking, later rules.Interface) bool {
	if (*groups != nil && later.SecurityGroups != nil) || (*ct != nil && later.ConnectionTracking != nil) {
		return false
	}
	if *groups == nil {
		*groups = later.SecurityGroups
	}
	if *ct == nil {
		*ct = later.ConnectionTracking
	}
	return true
}

// merged locates paths of a merged config: ("interfaces", 3, …) is the path of the
// source the merged list's fourth interface came from, at its index there.
type merged struct {
	ps []Proposal
	at map[string][]origin // by top-level key, for each merged index
}

type origin struct{ src, index int }

func (m *merged) Locate(path ...any) rules.Location {
	if len(path) >= 2 {
		key, _ := path[0].(string)
		if i, ok := path[1].(int); ok && i >= 0 && i < len(m.at[key]) {
			o := m.at[key][i]
			return locate(m.ps[o.src].Locator, append([]any{key, o.index}, path[2:]...))
		}
	}
	return locate(m.ps[0].Locator, path) // the top of the document, or a list as a whole
}

func locate(loc rules.Locator, path []any) rules.Location {
	if loc == nil {
		return rules.Location{}
	}
	return loc.Locate(path...)
}
