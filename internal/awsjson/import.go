package awsjson

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/rules"
)

// Sources are the AWS CLI outputs Import turns into one sgd config.
type Sources struct {
	File   string          // the describe-security-groups file's name, for comments
	Groups []SecurityGroup // ReadSecurityGroups
	// PrefixLists (describe-managed-prefix-lists, optional) give the lists' names;
	// Entries (get-managed-prefix-list-entries, one per list) their CIDRs.
	PrefixLists []ManagedPrefixList
	Entries     []ListEntries
}

// ListEntries are the entries of the prefix list PrefixListId, read from File.
type ListEntries struct {
	PrefixListId string
	File         string
	Entries      []PrefixListEntry
}

// Imported is an sgd config made from AWS's JSON, with what a reader of the YAML should
// know kept next to the part it is about (YAML renders them as comments).
type Imported struct {
	Groups      []Group
	PrefixLists []PrefixList
	// AccountID is the groups' OwnerId, for the daemon: section's account_id (so that
	// sgd export aws prints it back); "" when the groups name none, or AWS's placeholder.
	AccountID string
	Source    string   // the describe-security-groups file
	VPCs      []string // the groups' VpcIds, in order of first appearance
	// Warnings are what Import left out or could not carry over, for stderr.
	Warnings []string
}

// Group is one imported group. IngressNotes and EgressNotes hold a note (or "") for each
// rule, by index; EgressNote is about the egress list as a whole (omitted or not).
type Group struct {
	rules.Group
	Notes                     []string
	IngressNotes, EgressNotes []string
	EgressNote                string
}

// PrefixList is one imported prefix list; EntryNotes holds each entry's description.
type PrefixList struct {
	rules.PrefixList
	EntryNotes []string
}

// Config is the imported sgd config (no interfaces and no members: AWS's JSON has none).
func (im *Imported) Config() rules.Config {
	var c rules.Config
	for _, g := range im.Groups {
		c.SecurityGroups = append(c.SecurityGroups, g.Group)
	}
	for _, pl := range im.PrefixLists {
		c.PrefixLists = append(c.PrefixLists, pl.PrefixList)
	}
	return c
}

// DefaultOwnerID is the account id sgd shows when none is configured (daemon.account_id).
const DefaultOwnerID = "000000000000"

// Import converts describe-security-groups output (and prefix lists) into an sgd config.
//
//   - Each IpPermission becomes one rule per peer (sgd's rules have one peer each), in the
//     order IpRanges, Ipv6Ranges, PrefixListIds, UserIdGroupPairs, each with its own
//     description; ports as AWS gives them (ICMP type and code in FromPort and ToPort),
//     none for protocols without ports (-1, or a number other than tcp/udp/icmp/icmpv6).
//   - Egress is omitted only where sgd's default means exactly what AWS lists: all
//     traffic to 0.0.0.0/0 and to ::/0 (SPEC 1.3). AWS's default in a VPC without IPv6,
//     all traffic to 0.0.0.0/0 alone, stays explicit: omitting it would open IPv6 egress
//     that AWS does not allow, and export would no longer give it back.
//   - A group reference to a group not in the input is kept as it is, with a note: sgd
//     check rejects it (InvalidGroup.NotFound) until the group is added. Nothing is
//     invented and no permission is dropped.
//   - Rules get sgd's content-derived ids (describe-security-groups has no rule ids).
func Import(src Sources) *Imported {
	im := &Imported{Source: src.File}
	byID := map[string]bool{}
	byName := map[string]string{}
	for _, g := range src.Groups {
		byID[g.GroupId] = true
		if g.GroupName != "" {
			byName[g.GroupName] = g.GroupId
		}
	}
	owners := []string{}
	for _, g := range src.Groups {
		if g.VpcId != "" && !slices.Contains(im.VPCs, g.VpcId) {
			im.VPCs = append(im.VPCs, g.VpcId)
		}
		if g.OwnerId != "" && !slices.Contains(owners, g.OwnerId) {
			owners = append(owners, g.OwnerId)
		}
	}
	switch {
	case len(owners) > 1:
		im.Warnings = append(im.Warnings, fmt.Sprintf("the groups belong to several accounts (%s): daemon.account_id is %s, and sgd export aws prints every group with it", strings.Join(owners, ", "), owners[0]))
		im.AccountID = owners[0]
	case len(owners) == 1 && owners[0] != DefaultOwnerID:
		im.AccountID = owners[0]
	}
	x := &importer{im: im, src: src, byID: byID, byName: byName}
	for _, g := range src.Groups {
		im.Groups = append(im.Groups, x.group(g))
	}
	x.prefixLists()
	x.missingLists()
	return im
}

type importer struct {
	im         *Imported
	src        Sources
	byID       map[string]bool
	byName     map[string]string
	referenced []string // prefix list ids the rules use, in order
}

func (x *importer) warn(format string, a ...any) {
	x.im.Warnings = append(x.im.Warnings, fmt.Sprintf(format, a...))
}

func (x *importer) group(sg SecurityGroup) Group {
	g := Group{Group: rules.Group{GroupID: sg.GroupId, GroupName: sg.GroupName, Description: sg.Description}}
	if sg.GroupName == sg.GroupId {
		// sgd's export of a group the config names by its id alone: AWS reserves names
		// starting with sg-, and sgd names such a group by its id again.
		g.GroupName = ""
	}
	if sg.GroupName == rules.DefaultGroupName {
		g.Notes = append(g.Notes, "the VPC's default group: an interface listed without security_groups gets it")
	}
	if len(sg.Tags) > 0 {
		var ts []string
		for _, t := range sg.Tags {
			ts = append(ts, t.Key+"="+t.Value)
		}
		g.Notes = append(g.Notes, "tags "+strings.Join(ts, ", ")+" (sgd's config has no tags)")
	}
	g.Ingress, g.IngressNotes = x.rules(sg, "IpPermissions", sg.IpPermissions)
	if g.Ingress == nil {
		g.Ingress = []rules.Rule{}
	}
	egress, notes := x.rules(sg, "IpPermissionsEgress", sg.IpPermissionsEgress)
	switch {
	case sg.IpPermissionsEgress == nil:
		x.warn("%s: no IpPermissionsEgress (describe-security-groups always lists it): imported as egress: [], nothing out", sg.GroupId)
		g.Egress, g.EgressNote = &[]rules.Rule{}, "AWS listed no IpPermissionsEgress: nothing out (replies to allowed inbound flows still pass)"
	case sameRules(egress, allTraffic("0.0.0.0/0", "::/0")):
		g.EgressNote = "egress omitted: sgd's default, all traffic to 0.0.0.0/0 and ::/0, which is what AWS lists"
	case sameRules(egress, allTraffic("0.0.0.0/0")):
		g.Egress, g.EgressNotes = &egress, notes
		g.EgressNote = "AWS's default egress without IPv6 (0.0.0.0/0 only), kept as AWS has it; delete the egress key for sgd's default, which adds ::/0"
	case len(egress) == 0:
		g.Egress, g.EgressNote = &[]rules.Rule{}, "AWS lists no egress rules: nothing out (replies to allowed inbound flows still pass)"
	default:
		g.Egress, g.EgressNotes = &egress, notes
	}
	return g
}

// allTraffic is the rules all traffic to each of cidrs, as AWS's default egress has them.
func allTraffic(cidrs ...string) []rules.Rule {
	var rs []rules.Rule
	for _, c := range cidrs {
		r := rules.Rule{IPProtocol: "-1"}
		if strings.Contains(c, ":") {
			r.CidrIPv6 = c
		} else {
			r.CidrIPv4 = c
		}
		rs = append(rs, r)
	}
	return rs
}

// sameRules says whether a and b hold the same rules, in any order.
func sameRules(a, b []rules.Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for _, r := range a {
		if !slices.ContainsFunc(b, func(s rules.Rule) bool { return ruleEqual(r, s) }) {
			return false
		}
	}
	return true
}

func ruleEqual(a, b rules.Rule) bool {
	pa, _ := a.IPProtocol.Number()
	pb, _ := b.IPProtocol.Number()
	return pa == pb && eqInt(a.FromPort, b.FromPort) && eqInt(a.ToPort, b.ToPort) && a.CidrIPv4 == b.CidrIPv4 &&
		a.CidrIPv6 == b.CidrIPv6 && a.PrefixListID == b.PrefixListID && a.ReferencedGroupID == b.ReferencedGroupID &&
		a.Description == b.Description && a.SecurityGroupRuleID == b.SecurityGroupRuleID
}

func eqInt(a, b *int) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// rules turns a group's permissions (field names them in messages) into one rule per
// peer, with a note for each (or "").
func (x *importer) rules(sg SecurityGroup, field string, ps []IpPermission) (out []rules.Rule, notes []string) {
	for i, p := range ps {
		base := rules.Rule{IPProtocol: rules.Protocol(p.IpProtocol)}
		switch n, ok := ipproto.Number(p.IpProtocol); {
		case !ok, n == ipproto.TCP, n == ipproto.UDP, n == ipproto.ICMP, n == ipproto.ICMPv6:
			// Ports as AWS gives them (for an unknown protocol too: sgd check says what is wrong).
			base.FromPort, base.ToPort = p.FromPort, p.ToPort
		}
		add := func(r rules.Rule, note string) {
			out = append(out, r)
			notes = append(notes, note)
		}
		for _, ip := range p.IpRanges {
			r := base
			r.CidrIPv4, r.Description = ip.CidrIp, ip.Description
			add(r, "")
		}
		for _, ip := range p.Ipv6Ranges {
			r := base
			r.CidrIPv6, r.Description = ip.CidrIpv6, ip.Description
			add(r, "")
		}
		for _, pl := range p.PrefixListIds {
			r := base
			r.PrefixListID, r.Description = pl.PrefixListId, pl.Description
			add(r, "")
			if !slices.Contains(x.referenced, pl.PrefixListId) {
				x.referenced = append(x.referenced, pl.PrefixListId)
			}
		}
		for _, pair := range p.UserIdGroupPairs {
			r := base
			r.ReferencedGroupID, r.Description = pair.GroupId, pair.Description
			if r.ReferencedGroupID == "" && pair.GroupName != "" {
				r.ReferencedGroupID = x.byName[pair.GroupName]
			}
			if r.ReferencedGroupID == "" {
				x.warn("%s %s[%d]: a group pair without a GroupId (GroupName %q names no group of the input) cannot be referenced; left out", sg.GroupId, field, i, pair.GroupName)
				continue
			}
			add(r, x.pairNote(sg, pair, r.ReferencedGroupID))
		}
		if len(p.IpRanges)+len(p.Ipv6Ranges)+len(p.PrefixListIds)+len(p.UserIdGroupPairs) == 0 {
			x.warn("%s %s[%d]: a permission with no peer (no IpRanges, Ipv6Ranges, PrefixListIds or UserIdGroupPairs) allows nothing; left out", sg.GroupId, field, i)
		}
	}
	return out, notes
}

// pairNote says what a reader of the YAML should know about a group reference.
func (x *importer) pairNote(sg SecurityGroup, p UserIdGroupPair, id string) string {
	var ns []string
	if !x.byID[id] {
		ns = append(ns, fmt.Sprintf("%s is not in %s: sgd check says InvalidGroup.NotFound until it is added (aws ec2 describe-security-groups --group-ids %s)", id, x.src.File, id))
	}
	if p.UserId != "" && sg.OwnerId != "" && p.UserId != sg.OwnerId {
		ns = append(ns, "a group of account "+p.UserId)
	}
	if p.VpcPeeringConnectionId != "" {
		ns = append(ns, "across VPC peering "+p.VpcPeeringConnectionId)
	}
	return strings.Join(ns, "; ")
}

// prefixLists makes the config's prefix lists: each list with entries, in the order of
// describe-managed-prefix-lists and then of the entries given; the names from the first.
func (x *importer) prefixLists() {
	entries := map[string]ListEntries{}
	for _, e := range x.src.Entries {
		entries[e.PrefixListId] = e
	}
	listed := map[string]bool{}
	for _, ml := range x.src.PrefixLists {
		listed[ml.PrefixListId] = true
		e, ok := entries[ml.PrefixListId]
		if !ok {
			if slices.Contains(x.referenced, ml.PrefixListId) {
				x.warn("prefix list %s (%s) is referenced but its entries were not given: aws ec2 get-managed-prefix-list-entries --prefix-list-id %s > %s.json, then --entries %s=%s.json",
					ml.PrefixListId, ml.PrefixListName, ml.PrefixListId, ml.PrefixListId, ml.PrefixListId, ml.PrefixListId)
			} else {
				x.warn("prefix list %s (%s) is used by no rule and its entries were not given; left out", ml.PrefixListId, ml.PrefixListName)
			}
			continue
		}
		x.addList(ml.PrefixListId, ml.PrefixListName, e)
	}
	for _, e := range x.src.Entries {
		if !listed[e.PrefixListId] {
			x.addList(e.PrefixListId, "", e)
		}
	}
	for _, id := range x.referenced {
		if _, ok := entries[id]; !ok && !listed[id] {
			x.warn("prefix list %s is referenced but not given: pass --entries %s=FILE (the output of aws ec2 get-managed-prefix-list-entries --prefix-list-id %s)", id, id, id)
		}
	}
}

// missingLists notes each rule whose prefix list was not given.
func (x *importer) missingLists() {
	given := map[string]bool{}
	for _, pl := range x.im.PrefixLists {
		given[pl.PrefixListID] = true
	}
	for gi := range x.im.Groups {
		g := &x.im.Groups[gi]
		note := func(rs []rules.Rule, notes []string) {
			for i, r := range rs {
				if r.PrefixListID != "" && !given[r.PrefixListID] {
					notes[i] = fmt.Sprintf("the entries of %s were not given: sgd check says InvalidPrefixListID.NotFound until they are (--entries %s=FILE)", r.PrefixListID, r.PrefixListID)
				}
			}
		}
		note(g.Ingress, g.IngressNotes)
		if g.Egress != nil {
			note(*g.Egress, g.EgressNotes)
		}
	}
}

func (x *importer) addList(id, name string, e ListEntries) {
	pl := PrefixList{PrefixList: rules.PrefixList{PrefixListID: id, Name: name, Entries: []string{}}}
	for _, en := range e.Entries {
		pl.Entries = append(pl.Entries, en.Cidr)
		pl.EntryNotes = append(pl.EntryNotes, en.Description)
	}
	x.im.PrefixLists = append(x.im.PrefixLists, pl)
}
