package ec2api

import (
	"encoding/xml"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/store"
)

// actions are the implemented EC2 actions, by name.
var actions map[string]func(*call) (response, error)

func init() {
	// A table of functions, not state: init only breaks the reference cycle
	// actions → an action → call.change → actions.
	actions = map[string]func(*call) (response, error){
		"CreateSecurityGroup":                        createSecurityGroup,
		"DeleteSecurityGroup":                        deleteSecurityGroup,
		"DescribeSecurityGroups":                     describeSecurityGroups,
		"DescribeSecurityGroupRules":                 describeSecurityGroupRules,
		"AuthorizeSecurityGroupIngress":              authorize(false),
		"AuthorizeSecurityGroupEgress":               authorize(true),
		"RevokeSecurityGroupIngress":                 revoke(false),
		"RevokeSecurityGroupEgress":                  revoke(true),
		"CreateTags":                                 tagging(true),
		"DeleteTags":                                 tagging(false),
		"ModifySecurityGroupRules":                   modifySecurityGroupRules,
		"UpdateSecurityGroupRuleDescriptionsIngress": updateDescriptions(false),
		"UpdateSecurityGroupRuleDescriptionsEgress":  updateDescriptions(true),
		"DescribeNetworkInterfaces":                  describeNetworkInterfaces,
		"ModifyNetworkInterfaceAttribute":            modifyNetworkInterfaceAttribute,
		"CreateManagedPrefixList":                    createManagedPrefixList,
		"DescribeManagedPrefixLists":                 describeManagedPrefixLists,
		"ModifyManagedPrefixList":                    modifyManagedPrefixList,
		"DeleteManagedPrefixList":                    deleteManagedPrefixList,
		"GetManagedPrefixListEntries":                getManagedPrefixListEntries,
	}
}

// notImplemented are EC2 actions next to those served (prefix-list versions and
// associations, the read calls tools make first) that sgd does not serve:
// UnsupportedOperation rather than InvalidAction, which says the action does not exist at
// all.
var notImplemented = []string{"RestoreManagedPrefixListVersion", "GetManagedPrefixListAssociations",
	"DescribePrefixLists", "DescribeTags", "DescribeInstances", "DescribeVpcs", "DescribeRegions", "RunInstances"}

func knownEC2Action(name string) bool { return slices.Contains(notImplemented, name) }

var groupIDRe = regexp.MustCompile(`^sg-[A-Za-z0-9-]+$`)

func checkGroupID(id string) error {
	if !groupIDRe.MatchString(id) {
		return errf(codeGroupIDMalformed, "Invalid id: %q (expecting \"sg-...\")", id)
	}
	return nil
}

// groupID reads the group an action names, by GroupId or by GroupName, and returns its id.
func (c *call) groupID() (string, error) {
	id, name := c.q.str("GroupId"), c.q.str("GroupName")
	switch {
	case id != "":
		return id, checkGroupID(id)
	case name != "":
		for _, g := range c.model.Groups {
			if strings.EqualFold(g.Name, name) {
				return g.ID, nil
			}
		}
		return "", errf(codeGroupNotFound, "The security group '%s' does not exist in default VPC '%s'", name, c.h.opt.VpcID)
	}
	return "", errf(codeMissingParameter, "The request must contain the parameter GroupId or GroupName")
}

// writable returns the API's group id in s, refusing a group of the config file.
func (c *call) writable(s *store.Snapshot, id string) (*store.Group, error) {
	if g := s.Group(id); g != nil {
		return g, nil
	}
	if c.model.Group(id) != nil {
		return nil, errf(codeReadOnly, "The security group '%s' is defined in sgd's config file and is read-only through the API; change it in the file (and reload), or create a group through the API", id)
	}
	return nil, errf(codeGroupNotFound, "The security group '%s' does not exist", id)
}

func (c *call) tagSpecs(resourceType string) ([]tag, error) {
	ms, err := c.q.members("TagSpecification")
	if err != nil {
		return nil, err
	}
	var out []tag
	for _, m := range ms {
		if rt := m.str("ResourceType"); rt != resourceType {
			return nil, errf(codeInvalidParameterValue, "'%s' is not a valid taggable resource type for this operation (%s)", rt, resourceType)
		}
		ts, err := m.tags("Tag")
		if err != nil {
			return nil, err
		}
		out = append(out, ts...)
	}
	return out, nil
}

func createSecurityGroup(c *call) (response, error) {
	name, err := c.q.required("GroupName")
	if err != nil {
		return nil, err
	}
	desc, err := c.q.required("GroupDescription")
	if err != nil {
		return nil, err
	}
	c.q.str("VpcId") // one VPC: any id names it
	tags, err := c.tagSpecs("security-group")
	if err != nil {
		return nil, err
	}
	id := newID("sg-")
	// AWS's default egress, as rules of their own (revocable, as in AWS): all traffic to
	// 0.0.0.0/0, and to ::/0 as SPEC 1.3 gives a dual-stack host.
	egress := []store.Rule{{ID: newID("sgr-"), Protocol: "-1", CidrIPv4: "0.0.0.0/0"}, {ID: newID("sgr-"), Protocol: "-1", CidrIPv6: "::/0"}}
	err = c.change(func(s *store.Snapshot) error {
		for _, g := range c.model.Groups {
			if strings.EqualFold(g.Name, name) {
				return errf(codeGroupDuplicate, "The security group '%s' already exists for VPC '%s'", name, c.h.opt.VpcID)
			}
		}
		if s.GroupByName(name) != nil {
			return errf(codeGroupDuplicate, "The security group '%s' already exists for VPC '%s'", name, c.h.opt.VpcID)
		}
		s.Groups = append(s.Groups, store.Group{ID: id, Name: name, Description: desc, Tags: tags, Ingress: []store.Rule{}, Egress: egress})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &createGroupResponse{Return: true, GroupID: id, Arn: c.groupArn(id), Tags: tagList(tags)}, nil
}

func deleteSecurityGroup(c *call) (response, error) {
	id, err := c.groupID()
	if err != nil {
		return nil, err
	}
	err = c.change(func(s *store.Snapshot) error {
		if _, err := c.writable(s, id); err != nil {
			return err
		}
		// Whatever refers to the group in force — a rule of any source's group, an
		// interface — is a dependent object (EC2: DependencyViolation).
		for _, g := range c.model.Groups {
			for _, r := range slices.Concat(g.Ingress, g.Egress) {
				if r.Peer.Kind == rules.PeerGroup && r.Peer.ID == id && g.ID != id {
					return errf(codeDependencyViolation, "resource %s has a dependent object (rule %s of group %s refers to it)", id, r.ID, g.ID)
				}
			}
		}
		for _, itf := range c.model.Interfaces {
			if slices.Contains(itf.Groups, id) {
				return errf(codeDependencyViolation, "resource %s has a dependent object (interface %s carries it)", id, itf.Name)
			}
		}
		for _, m := range c.model.Members {
			if slices.Contains(m.Groups, id) {
				return errf(codeDependencyViolation, "resource %s has a dependent object (member %s carries it)", id, m.Addr)
			}
		}
		// In fleet mode, another host's attachment too: that host could not validate its
		// interface without the group.
		for _, a := range s.Interfaces {
			if a.Host != c.h.opt.HostID && slices.Contains(a.Groups, id) {
				return errf(codeDependencyViolation, "resource %s has a dependent object (interface %s of host %s carries it)", id, a.Interface, a.Host)
			}
		}
		s.RemoveGroup(id)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ok("DeleteSecurityGroup"), nil
}

// bounds are the MaxResults an action allows, from the service model.
type bounds struct{ min, max int }

var (
	groupBounds      = bounds{5, 1000} // DescribeSecurityGroups, DescribeSecurityGroupRules, DescribeNetworkInterfaces
	prefixListBounds = bounds{1, 100}  // PrefixListMaxResults: DescribeManagedPrefixLists, GetManagedPrefixListEntries
)

// filterPage keeps the items listed by id (none listed: all) that every filter matches —
// fields gives an item's values for a filter name (false: no such filter for this action),
// tags its tags for tag:KEY, tag-key and tag-value — and cuts the page MaxResults (within
// lim) and NextToken ask for.
func filterPage[T any](items []T, listed []string, filters []queryFilter, lim bounds, max *int, token string, id func(T) string,
	fields func(T, string) ([]string, bool), tags func(string) []tag) ([]T, string, error) {
	var kept []T
	var ids []string
	for _, it := range items {
		keep := len(listed) == 0 || slices.Contains(listed, id(it))
		for _, f := range filters {
			vals, known := fields(it, f.Name)
			m := slices.ContainsFunc(vals, f.match)
			if !known {
				if m, known = matchTags(f, tags(id(it))); !known {
					return nil, "", errf(codeInvalidParameterValue, "The filter '%s' is invalid", f.Name)
				}
			}
			keep = keep && m
		}
		if keep {
			kept = append(kept, it)
			ids = append(ids, id(it))
		}
	}
	from, to, next, err := page(ids, lim, max, token)
	if err != nil {
		return nil, "", err
	}
	return kept[from:to], next, nil
}

// page cuts one page of n items at token (the id of the page's first item, as the last
// page's NextToken said), at most max long (nil: all; otherwise within lim).
func page(ids []string, lim bounds, max *int, token string) (from, to int, next string, err error) {
	if max != nil && (*max < lim.min || *max > lim.max) {
		return 0, 0, "", errf(codeInvalidParameterValue, "MaxResults must be between %d and %d, not %d", lim.min, lim.max, *max)
	}
	if token != "" {
		from = slices.Index(ids, token)
		if from < 0 {
			return 0, 0, "", errf(codeInvalidNextToken, "The token '%s' is invalid or expired", token)
		}
	}
	to = len(ids)
	if max != nil && from+*max < to {
		to = from + *max
		next = ids[to]
	}
	return from, to, next, nil
}

func (c *call) tagsOf(id string) []tag {
	if g := c.snap.Group(id); g != nil {
		return g.Tags
	}
	if r, _, _ := c.snap.Rule(id); r != nil {
		return r.Tags
	}
	if pl := c.snap.PrefixList(id); pl != nil {
		return pl.Tags
	}
	return nil
}

// matchTags handles the tag filters (tag:KEY, tag-key, tag-value); ok false for another name.
func matchTags(f queryFilter, ts []tag) (match, ok bool) {
	switch {
	case strings.HasPrefix(f.Name, "tag:"):
		key := f.Name[4:]
		return slices.ContainsFunc(ts, func(t tag) bool { return t.Key == key && f.match(t.Value) }), true
	case f.Name == "tag-key":
		return slices.ContainsFunc(ts, func(t tag) bool { return f.match(t.Key) }), true
	case f.Name == "tag-value":
		return slices.ContainsFunc(ts, func(t tag) bool { return f.match(t.Value) }), true
	}
	return false, false
}

func describeSecurityGroups(c *call) (response, error) {
	ids, filters, err := c.q.selection("GroupId")
	if err != nil {
		return nil, err
	}
	names, err := c.q.strs("GroupName")
	if err != nil {
		return nil, err
	}
	max, token, err := c.q.paging()
	if err != nil {
		return nil, err
	}
	if max != nil && (len(ids) > 0 || len(names) > 0) {
		return nil, errf(codeInvalidCombination, "The parameter GroupIds or GroupNames cannot be used with the parameter MaxResults")
	}
	if err := c.read(); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if err := checkGroupID(id); err != nil {
			return nil, err
		}
		if c.model.Group(id) == nil {
			return nil, errf(codeGroupNotFound, "The security group '%s' does not exist", id)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(c.model.Groups, func(g *rules.GroupModel) bool { return strings.EqualFold(g.Name, n) }) {
			return nil, errf(codeGroupNotFound, "The security group '%s' does not exist in default VPC '%s'", n, c.h.opt.VpcID)
		}
	}
	var groups []*rules.GroupModel
	for _, g := range c.model.Groups {
		if len(ids) > 0 && !slices.Contains(ids, g.ID) ||
			len(names) > 0 && !slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, g.Name) }) {
			continue
		}
		groups = append(groups, g)
	}
	groups, next, err := filterPage(groups, nil, filters, groupBounds, max, token, func(g *rules.GroupModel) string { return g.ID },
		func(g *rules.GroupModel, name string) ([]string, bool) {
			switch name {
			case "group-id":
				return []string{g.ID}, true
			case "group-name":
				return []string{g.Name}, true
			case "description":
				return []string{g.Description}, true
			case "vpc-id":
				return []string{c.h.opt.VpcID}, true
			case "owner-id":
				return []string{c.h.opt.OwnerID}, true
			}
			return nil, false
		}, c.tagsOf)
	if err != nil {
		return nil, err
	}
	resp := &describeGroupsResponse{NextToken: next}
	for _, g := range groups {
		resp.Groups.Items = append(resp.Groups.Items, c.xmlGroup(g))
	}
	return resp, nil
}

func describeSecurityGroupRules(c *call) (response, error) {
	ids, filters, err := c.q.selection("SecurityGroupRuleId")
	if err != nil {
		return nil, err
	}
	max, token, err := c.q.paging()
	if err != nil {
		return nil, err
	}
	if err := c.read(); err != nil {
		return nil, err
	}
	var all []*rules.NRule
	for _, g := range c.model.Groups {
		for i := range g.Ingress {
			all = append(all, &g.Ingress[i])
		}
		for i := range g.Egress {
			all = append(all, &g.Egress[i])
		}
	}
	for _, id := range ids {
		if !slices.ContainsFunc(all, func(r *rules.NRule) bool { return r.ID == id }) {
			return nil, errf(codeRuleIDNotFound, "The security group rule ID '%s' does not exist", id)
		}
	}
	picked, next, err := filterPage(all, ids, filters, groupBounds, max, token, func(r *rules.NRule) string { return r.ID },
		func(r *rules.NRule, name string) ([]string, bool) {
			switch name {
			case "group-id":
				return []string{r.GroupID}, true
			case "security-group-rule-id":
				return []string{r.ID}, true
			}
			return nil, false
		}, c.tagsOf)
	if err != nil {
		return nil, err
	}
	resp := &describeRulesResponse{NextToken: next}
	for _, r := range picked {
		resp.Rules.Items = append(resp.Rules.Items, c.xmlRule(r))
	}
	return resp, nil
}

// permissions reads an action's IpPermissions.N — or the older flat form (IpProtocol,
// FromPort, ToPort, CidrIp, SourceSecurityGroupName) — as rules, one per peer. The CLI's
// --protocol/--port/--cidr/--source-group shorthand reaches the API as IpPermissions.
func (c *call) permissions() ([]store.Rule, error) {
	ms, err := c.q.members("IpPermissions")
	if err != nil {
		return nil, err
	}
	var out []store.Rule
	for _, m := range ms {
		rs, err := c.permission(m)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	if c.q.has("IpProtocol") || c.q.has("CidrIp") || c.q.has("SourceSecurityGroupName") {
		r := store.Rule{Protocol: c.q.str("IpProtocol"), CidrIPv4: c.q.str("CidrIp")}
		if r.FromPort, err = c.q.integer("FromPort"); err != nil {
			return nil, err
		}
		if r.ToPort, err = c.q.integer("ToPort"); err != nil {
			return nil, err
		}
		if n := c.q.str("SourceSecurityGroupName"); n != "" {
			c.q.str("SourceSecurityGroupOwnerId")
			if r.ReferencedGroupID, err = c.groupByName(n); err != nil {
				return nil, err
			}
			if r.Protocol == "" {
				r.Protocol = "-1" // EC2: a source group alone grants all traffic from it
			}
		}
		if r.Protocol == "" {
			return nil, errf(codeMissingParameter, "The request must contain the parameter IpProtocol")
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errf(codeMissingParameter, "The request must contain the parameter IpPermissions")
	}
	return out, nil
}

func (c *call) groupByName(name string) (string, error) {
	for _, g := range c.model.Groups {
		if strings.EqualFold(g.Name, name) {
			return g.ID, nil
		}
	}
	return "", errf(codeGroupNotFound, "The security group '%s' does not exist in default VPC '%s'", name, c.h.opt.VpcID)
}

// permission reads one IpPermission as its rules.
func (c *call) permission(m *query) ([]store.Rule, error) {
	proto, err := m.required("IpProtocol")
	if err != nil {
		return nil, err
	}
	from, err := m.integer("FromPort")
	if err != nil {
		return nil, err
	}
	to, err := m.integer("ToPort")
	if err != nil {
		return nil, err
	}
	var out []store.Rule
	add := func(r store.Rule, desc string) {
		r.Protocol, r.FromPort, r.ToPort, r.Description = proto, from, to, desc
		out = append(out, r)
	}
	lists := []struct {
		name, field string
		set         func(*store.Rule, string) error
	}{
		{"IpRanges", "CidrIp", func(r *store.Rule, v string) error { r.CidrIPv4 = v; return nil }},
		{"Ipv6Ranges", "CidrIpv6", func(r *store.Rule, v string) error { r.CidrIPv6 = v; return nil }},
		{"PrefixListIds", "PrefixListId", func(r *store.Rule, v string) error { r.PrefixListID = v; return nil }},
	}
	for _, l := range lists {
		items, err := m.members(l.name)
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			v, err := it.required(l.field)
			if err != nil {
				return nil, err
			}
			var r store.Rule
			l.set(&r, v)
			add(r, it.str("Description"))
		}
	}
	pairs, err := m.members("Groups")
	if err != nil {
		return nil, err
	}
	for _, p := range pairs {
		p.str("UserId") // one account
		p.str("VpcId")
		id := p.str("GroupId")
		if id == "" {
			name, err := p.required("GroupName")
			if err != nil {
				return nil, errf(codeMissingParameter, "%s.GroupId or GroupName is required", strings.TrimSuffix(p.prefix, "."))
			}
			if id, err = c.groupByName(name); err != nil {
				return nil, err
			}
		} else if err := checkGroupID(id); err != nil {
			return nil, err
		}
		add(store.Rule{ReferencedGroupID: id}, p.str("Description"))
	}
	if len(out) == 0 {
		return nil, errf(codeMissingParameter, "%s needs a peer: IpRanges, Ipv6Ranges, PrefixListIds or UserIdGroupPairs", strings.TrimSuffix(m.prefix, "."))
	}
	return out, nil
}

// ruleKey is a rule's identity as EC2 compares rules (duplicates, revoking by
// permission): protocol, ports as the protocol reads them, canonical peer.
func ruleKey(r *store.Rule) string {
	proto, ok := ipproto.Number(r.Protocol)
	if !ok {
		return "bad|" + r.Protocol
	}
	port := func(p *int, none int) int {
		if p == nil {
			return none
		}
		return *p
	}
	from, to := 0, 0
	switch proto {
	case ipproto.TCP, ipproto.UDP:
		from, to = port(r.FromPort, -2), port(r.ToPort, -2)
	case ipproto.ICMP, ipproto.ICMPv6:
		from, to = port(r.FromPort, -1), port(r.ToPort, -1)
	}
	peer := r.ReferencedGroupID + r.PrefixListID
	for _, cidr := range []string{r.CidrIPv4, r.CidrIPv6} {
		if cidr == "" {
			continue
		}
		if p, err := netip.ParsePrefix(strings.TrimSpace(cidr)); err == nil {
			peer = p.Masked().String()
		} else {
			peer = cidr
		}
	}
	return fmt.Sprintf("%d|%d|%d|%s", proto, from, to, peer)
}

func rulesOf(g *store.Group, egress bool) *[]store.Rule {
	if egress {
		return &g.Egress
	}
	return &g.Ingress
}

func direction(egress bool) string {
	if egress {
		return "Egress"
	}
	return "Ingress"
}

func authorize(egress bool) func(*call) (response, error) {
	return func(c *call) (response, error) {
		id, err := c.groupID()
		if err != nil {
			return nil, err
		}
		add, err := c.permissions()
		if err != nil {
			return nil, err
		}
		tags, err := c.tagSpecs("security-group-rule")
		if err != nil {
			return nil, err
		}
		for i := range add {
			add[i].ID, add[i].Tags = newID("sgr-"), tags
		}
		err = c.change(func(s *store.Snapshot) error {
			g, err := c.writable(s, id)
			if err != nil {
				return err
			}
			list := rulesOf(g, egress)
			for i := range add {
				k := ruleKey(&add[i])
				for j := range *list {
					if ruleKey(&(*list)[j]) == k {
						return errf(codePermissionDuplicate, "the specified rule \"peer: %s, %s, ALLOW\" already exists (%s)",
							peerText(&add[i]), portText(&add[i]), (*list)[j].ID)
					}
				}
				*list = append(*list, add[i])
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		resp := &authorizeResponse{XMLName: xml.Name{Local: "AuthorizeSecurityGroup" + direction(egress) + "Response"}, Return: true}
		for i := range add {
			if r := c.modelRule(add[i].ID); r != nil {
				resp.Rules.Items = append(resp.Rules.Items, c.xmlRule(r))
			}
		}
		return resp, nil
	}
}

func peerText(r *store.Rule) string {
	return r.CidrIPv4 + r.CidrIPv6 + r.PrefixListID + r.ReferencedGroupID
}

func portText(r *store.Rule) string {
	s := strings.ToUpper(r.Protocol)
	if r.FromPort != nil {
		s += fmt.Sprintf(", from port: %d", *r.FromPort)
	}
	if r.ToPort != nil {
		s += fmt.Sprintf(", to port: %d", *r.ToPort)
	}
	return s
}

// modelRule returns the rule with the given id in the running model, or nil.
func (c *call) modelRule(id string) *rules.NRule {
	for _, g := range c.model.Groups {
		for _, l := range [2][]rules.NRule{g.Ingress, g.Egress} {
			for i := range l {
				if l[i].ID == id {
					return &l[i]
				}
			}
		}
	}
	return nil
}

func revoke(egress bool) func(*call) (response, error) {
	return func(c *call) (response, error) {
		id, err := c.groupID()
		if err != nil {
			return nil, err
		}
		ruleIDs, err := c.q.strs("SecurityGroupRuleId")
		if err != nil {
			return nil, err
		}
		var perms []store.Rule
		if len(ruleIDs) == 0 {
			if perms, err = c.permissions(); err != nil {
				return nil, err
			}
		}
		var gone []xmlRevokedRule
		err = c.change(func(s *store.Snapshot) error {
			gone = nil
			g, err := c.writable(s, id)
			if err != nil {
				return err
			}
			list := rulesOf(g, egress)
			drop := map[string]bool{}
			for _, rid := range ruleIDs {
				if !slices.ContainsFunc(*list, func(r store.Rule) bool { return r.ID == rid }) {
					return errf(codeRuleIDNotFound, "The security group rule ID '%s' does not exist in the %s rules of %s", rid, strings.ToLower(direction(egress)), id)
				}
				drop[rid] = true
			}
			for i := range perms {
				k := ruleKey(&perms[i])
				j := slices.IndexFunc(*list, func(r store.Rule) bool { return ruleKey(&r) == k })
				if j < 0 {
					return errf(codePermissionNotFound, "The specified rule does not exist in this security group (peer: %s, %s)", peerText(&perms[i]), portText(&perms[i]))
				}
				drop[(*list)[j].ID] = true
			}
			for rid := range drop {
				if r := c.modelRule(rid); r != nil {
					gone = append(gone, revoked(c.xmlRule(r)))
				}
			}
			*list = slices.DeleteFunc(*list, func(r store.Rule) bool { return drop[r.ID] })
			return nil
		})
		if err != nil {
			return nil, err
		}
		slices.SortFunc(gone, func(a, b xmlRevokedRule) int { return strings.Compare(a.ID, b.ID) })
		resp := &revokeResponse{XMLName: xml.Name{Local: "RevokeSecurityGroup" + direction(egress) + "Response"}, Return: true}
		resp.Revoked.Items = gone
		return resp, nil
	}
}
