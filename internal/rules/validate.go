package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sgd-firewall/sgd/internal/conntrack"
	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// Quotas and limits (SPEC 1.5; AWS VPC quotas page).
const (
	DefaultRulesPerGroup      = 60
	DefaultGroupsPerInterface = 5
	MaxGroupsPerInterface     = 16
	MaxRulesTimesGroups       = 1000
	DefaultGroupName          = "default"
)

// Options tune validation. The zero value applies every AWS quota at its default.
type Options struct {
	// Quotas are the quotas to hold the config to; the daemon takes them from its
	// settings (daemon.rules_per_group_quota, daemon.groups_per_interface_quota), which
	// check their range (internal/settings).
	Quotas Quotas
	// Unlimited lifts the rule and group quotas. Benchmarks use it to compile
	// 10 000 rules; no configuration file can ask for it.
	Unlimited bool
}

// Quotas are the AWS quotas a config is held to (SPEC 1.5). A zero field is AWS's
// default: 60 rules per group, direction and family; 5 groups per interface.
type Quotas struct {
	RulesPerGroup      int
	GroupsPerInterface int
}

// limits returns the quotas in force: defaults filled in, or none at all when Unlimited.
func (o Options) limits() (rulesPerGroup, groupsPerInterface int) {
	if o.Unlimited {
		return 1 << 30, 1 << 30
	}
	rulesPerGroup, groupsPerInterface = DefaultRulesPerGroup, DefaultGroupsPerInterface
	if o.Quotas.RulesPerGroup > 0 {
		rulesPerGroup = o.Quotas.RulesPerGroup
	}
	if o.Quotas.GroupsPerInterface > 0 {
		groupsPerInterface = o.Quotas.GroupsPerInterface
	}
	return rulesPerGroup, groupsPerInterface
}

// Direction is the direction a rule judges: ingress (packets arriving for this host) or
// egress (packets this host sends).
type Direction uint8

const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// ParseDirection parses "ingress" or "egress".
func ParseDirection(s string) (Direction, bool) {
	switch strings.ToLower(s) {
	case "ingress", "in":
		return Ingress, true
	case "egress", "out":
		return Egress, true
	}
	return 0, false
}

// PeerKind says which of the four peer fields a rule uses.
type PeerKind uint8

const (
	PeerCIDR PeerKind = iota
	PeerPrefixList
	PeerGroup
)

// Peer is a rule's one peer, canonicalised.
type Peer struct {
	Kind   PeerKind
	Prefix netip.Prefix // PeerCIDR, masked
	ID     string       // prefix list or group id
}

func (p Peer) String() string {
	if p.Kind == PeerCIDR {
		return p.Prefix.String()
	}
	return p.ID
}

// NRule is a validated, normalised rule.
type NRule struct {
	// ID is the rule's security group rule id (SPEC 4.1): the explicit
	// security_group_rule_id, or one derived from the group id, the direction and the
	// canonical rule (not its description or position), so that it survives reordering,
	// other rules coming and going, and reloads.
	ID          string
	GroupID     string
	Direction   Direction
	Index       int // position in the group's ingress or egress list
	Description string
	Proto       int // ipproto.All (-1) or 0–255
	// From and To: the port range for tcp/udp; ICMP type and code (-1 = all) for
	// icmp/icmpv6; 0 otherwise (ports are ignored).
	From, To int
	Peer     Peer
	Default  bool // AWS's implicit default egress rule
}

// PortText renders the rule's protocol and ports as a person reads them.
func (r *NRule) PortText() string {
	switch r.Proto {
	case ipproto.TCP, ipproto.UDP:
		if r.From == r.To {
			return fmt.Sprintf("%s/%d", ipproto.Name(r.Proto), r.From)
		}
		if r.From == 0 && r.To == 65535 {
			return ipproto.Name(r.Proto) + "/all ports"
		}
		return fmt.Sprintf("%s/%d-%d", ipproto.Name(r.Proto), r.From, r.To)
	case ipproto.ICMP, ipproto.ICMPv6:
		t, c := "all", "all"
		if r.From >= 0 {
			t = strconv.Itoa(r.From)
		}
		if r.To >= 0 {
			c = strconv.Itoa(r.To)
		}
		if r.From < 0 {
			return ipproto.Name(r.Proto) + " all types"
		}
		return fmt.Sprintf("%s type %s code %s", ipproto.Name(r.Proto), t, c)
	case ipproto.All:
		return "all protocols"
	}
	return "protocol " + ipproto.Name(r.Proto)
}

// GroupModel is a validated group.
type GroupModel struct {
	ID, Name, Description string
	Ingress, Egress       []NRule
	Synthesized           bool // AWS's default group, added because the config has none
}

// IfaceModel is a validated interface.
type IfaceModel struct {
	Name   string
	Groups []string // group ids, after the default-group rule
	// DefaultGroup: the config listed no groups, so Groups is the default group alone.
	DefaultGroup bool
	Timeouts     Timeouts
	// TimeoutsSet: the config gave connection_tracking (else Timeouts are AWS's defaults).
	TimeoutsSet bool
}

// PortModel is a validated port: the attachment (groups, timeouts) and what is the
// instance's own (SPEC 4.3).
type PortModel struct {
	IfaceModel
	InstanceID string
	// ENI is the network_interface_id, or one derived from the name (PortENI).
	ENI string
	// Addrs are the instance's addresses: members of its groups, and with SourceDestCheck
	// the only sources it may send from.
	Addrs           []netip.Addr
	SourceDestCheck bool
}

// PortENI is the network interface id of a port that names none: eni- and 17 hex digits
// of a hash of its device name, so that it is the same at every load on every host.
func PortENI(name string) string {
	sum := sha256.Sum256([]byte("sgd port v1\x00" + name))
	return "eni-" + hex.EncodeToString(sum[:9])[:17]
}

// Timeouts are the interface's AWS connection-tracking timeouts.
type Timeouts struct {
	TCPEstablished, UDP, UDPStream time.Duration
}

// DefaultTimeouts are AWS's defaults (SPEC 1.4), as the connection table defines them.
func DefaultTimeouts() Timeouts {
	d := conntrack.DefaultTimeouts()
	return Timeouts{TCPEstablished: d.TCPEstablished, UDP: d.UDP, UDPStream: d.UDPStream}
}

// MemberModel is another host carrying groups.
type MemberModel struct {
	Addr   netip.Addr
	Groups []string
}

// Model is a validated configuration: defaults applied, every reference resolved. It is
// what Compile takes.
type Model struct {
	File        string
	Hash        string // of the file it came from, or of what the sources proposed
	Groups      []*GroupModel
	PrefixLists map[string][]netip.Prefix
	Interfaces  []IfaceModel
	Ports       []PortModel
	Members     []MemberModel

	groupByID map[string]*GroupModel
}

// Group returns the group with the given id, or nil.
func (m *Model) Group(id string) *GroupModel { return m.groupByID[id] }

var (
	groupIDRe      = regexp.MustCompile(`^sg-[A-Za-z0-9-]+$`)
	prefixListIDRe = regexp.MustCompile(`^pl-[A-Za-z0-9-]+$`)
	// AWS's character set for group names and descriptions in a VPC.
	awsTextRe = regexp.MustCompile(`^[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]*$`)
	ifNameRe  = regexp.MustCompile(`^[^/\s:]{1,15}$`)
	// AWS's ids are eni-/i- and hex digits; a port's may be any letters, digits and
	// dashes (eni-web), as group ids may.
	eniIDRe      = regexp.MustCompile(`^eni-[A-Za-z0-9-]+$`)
	instanceIDRe = regexp.MustCompile(`^i-[A-Za-z0-9-]+$`)
)

type validator struct {
	loc       Locator // nil: nothing is known of where things were written
	errs      Errors
	defaultID string // the default group's id, once resolved
}

// at is where the value at path was written.
func (v *validator) at(path ...any) Location {
	if v.loc == nil {
		return Location{}
	}
	return v.loc.Locate(path...)
}

func (v *validator) add(l Location, where, field, code, format string, a ...any) {
	v.errs = append(v.errs, &Error{File: l.File, Line: l.Line, Where: where, Field: field, Code: code, Msg: fmt.Sprintf(format, a...)})
}

// Validate checks a parsed configuration file against SPEC 1.5 and returns the model with
// the defaults of SPEC 1.3 applied, errors citing the file's lines (ValidateConfig).
func Validate(doc *Document, opt Options) (*Model, error) {
	m, err := ValidateConfig(&doc.Config, doc, opt)
	if err != nil {
		return nil, err
	}
	m.File, m.Hash = doc.File, doc.Hash
	return m, nil
}

// ValidateConfig checks a configuration against SPEC 1.5 and returns the model with the
// defaults of SPEC 1.3 applied. On failure it returns Errors holding every problem found,
// each placed where loc says its value was written (loc may be nil). It reads c only.
func ValidateConfig(c *Config, loc Locator, opt Options) (*Model, error) {
	v := &validator{loc: loc}
	m := &Model{PrefixLists: map[string][]netip.Prefix{}, groupByID: map[string]*GroupModel{}}

	rulesQuota, groupsQuota := opt.limits()
	v.prefixLists(c, m)

	// Groups: ids and names first, so that references resolve in any order.
	names := map[string]string{}
	for i := range c.SecurityGroups {
		g := &c.SecurityGroups[i]
		where := groupWhere(g, i)
		line := v.at("security_groups", i)
		switch {
		case g.GroupID == "":
			v.add(line, where, "group_id", CodeMissingParameter, "group_id is required")
		case !groupIDRe.MatchString(g.GroupID):
			v.add(v.at("security_groups", i, "group_id"), where, "group_id", CodeGroupIDMalformed,
				"%q is not sg- followed by letters, digits or dashes", g.GroupID)
		case m.groupByID[g.GroupID] != nil:
			v.add(line, where, "group_id", CodeGroupDuplicate, "group id %s is defined twice", g.GroupID)
		}
		// EC2 drops trailing spaces from a group name before it compares or stores it:
		// "web " is the group web.
		name := strings.TrimRight(g.GroupName, " ")
		if name != "" {
			low := strings.ToLower(name)
			if strings.HasPrefix(low, "sg-") {
				v.add(v.at("security_groups", i, "group_name"), where, "group_name", CodeParameterValue, "%q: group names may not start with sg- (that is the form of a group id)", name)
			}
			v.text(v.at("security_groups", i, "group_name"), where, "group_name", g.GroupName)
			if other, dup := names[low]; dup {
				v.add(v.at("security_groups", i, "group_name"), where, "group_name", CodeGroupDuplicate,
					"group name %q is already used by %s (names compare case-insensitively, trailing spaces dropped)", name, other)
			}
			names[low] = g.GroupID
		}
		v.text(v.at("security_groups", i, "description"), where, "description", g.Description)
		gm := &GroupModel{ID: g.GroupID, Name: name, Description: g.Description}
		if gm.Name == "" {
			gm.Name = g.GroupID
		}
		if g.GroupID != "" && m.groupByID[g.GroupID] == nil {
			m.groupByID[g.GroupID] = gm
		}
		m.Groups = append(m.Groups, gm)
	}

	for i := range c.SecurityGroups {
		g := &c.SecurityGroups[i]
		gm := m.Groups[i]
		gm.Ingress = v.ruleList(m, g, i, Ingress, g.Ingress, rulesQuota)
		if g.Egress == nil {
			// A bare `egress:` reads as "omitted" to the parser, which means allow-all;
			// whoever wrote it may have meant "none" (or lost the list). Refuse to guess.
			// An explicit null (YAML null or ~, JSON null) is the omitted field.
			if l := v.at("security_groups", i, "egress"); l.Blank {
				v.add(l, groupWhere(g, i), "egress", CodeParameterValue,
					"egress has no value: omit the key for AWS's default (all traffic out) or write egress: [] for none")
			}
			gm.Egress = defaultEgress(g.GroupID)
		} else {
			gm.Egress = v.ruleList(m, g, i, Egress, *g.Egress, rulesQuota)
		}
	}

	v.uniqueRuleIDs(m)
	devices := map[string]bool{}
	v.interfaces(c, m, groupsQuota, names, devices)
	v.ports(c, m, groupsQuota, names, devices)
	v.members(c, m, names)
	if len(v.errs) > 0 {
		return nil, v.errs
	}
	return m, nil
}

func groupWhere(g *Group, i int) string {
	if g.GroupID != "" {
		return "group " + g.GroupID
	}
	return fmt.Sprintf("security_groups[%d]", i)
}

func (v *validator) text(l Location, where, field, s string) {
	if len(s) > 255 {
		v.add(l, where, field, CodeParameterValue, "longer than 255 characters (%d)", len(s))
	}
	if !awsTextRe.MatchString(s) {
		v.add(l, where, field, CodeParameterValue, "%q has characters outside AWS's set (a-z A-Z 0-9 space ._-:/()#,@[]+=&;{}!$*)", s)
	}
}

// defaultEgress is AWS's implicit egress rule: all traffic to 0.0.0.0/0, and to ::/0 as
// in a VPC with IPv6 (SPEC 1.3).
func defaultEgress(gid string) []NRule {
	return withIDs([]NRule{
		{GroupID: gid, Direction: Egress, Index: 0, Proto: ipproto.All, Peer: Peer{Kind: PeerCIDR, Prefix: netip.MustParsePrefix("0.0.0.0/0")}, Default: true, Description: "AWS default egress"},
		{GroupID: gid, Direction: Egress, Index: 1, Proto: ipproto.All, Peer: Peer{Kind: PeerCIDR, Prefix: netip.MustParsePrefix("::/0")}, Default: true, Description: "AWS default egress"},
	})
}

// withIDs gives implicit rules their content-derived ids.
func withIDs(rs []NRule) []NRule {
	for i := range rs {
		rs[i].ID = contentID(&rs[i])
	}
	return rs
}

func (v *validator) prefixLists(c *Config, m *Model) {
	for i, pl := range c.PrefixLists {
		where := "prefix list " + pl.PrefixListID
		if pl.PrefixListID == "" {
			where = fmt.Sprintf("prefix_lists[%d]", i)
		}
		switch {
		case pl.PrefixListID == "":
			v.add(v.at("prefix_lists", i), where, "prefix_list_id", CodeMissingParameter, "prefix_list_id is required")
			continue
		case !prefixListIDRe.MatchString(pl.PrefixListID):
			v.add(v.at("prefix_lists", i, "prefix_list_id"), where, "prefix_list_id", CodePrefixListMalformed,
				"%q is not pl- followed by letters, digits or dashes", pl.PrefixListID)
		case m.PrefixLists[pl.PrefixListID] != nil:
			v.add(v.at("prefix_lists", i), where, "prefix_list_id", CodePrefixListDuplicate, "prefix list %s is defined twice", pl.PrefixListID)
			continue
		}
		entries := make([]netip.Prefix, 0, len(pl.Entries))
		seen := map[netip.Prefix]bool{}
		for j, e := range pl.Entries {
			p, err := netip.ParsePrefix(strings.TrimSpace(e))
			if err != nil {
				v.add(v.at("prefix_lists", i, "entries", j), where, fmt.Sprintf("entries[%d]", j), CodeParameterValue, "%q is not a CIDR", e)
				continue
			}
			// An IPv4-mapped IPv6 prefix (inside ::ffff:0:0/96) is refused. Read as IPv4 it
			// widens: ::ffff:0.0.0.0/96 is 0.0.0.0/0, all of IPv4. Read as IPv6 it matches
			// nothing real (an IPv4 packet is never IPv6 to Decide, and mapped addresses do
			// not appear on the wire, RFC 4291 2.5.5.2), so the entry cannot be what anyone
			// meant. AWS fixes a prefix list's address family and documents nothing about
			// mapped entries; an sgd list mixes families, so the text alone would have to
			// decide, and sgd does not guess. A shorter prefix (::ffff:0:0/80) reaches outside
			// the mapped range and stays the IPv6 prefix it says (::/80).
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				v.add(v.at("prefix_lists", i, "entries", j), where, fmt.Sprintf("entries[%d]", j), CodeParameterValue,
					"%q is an IPv4-mapped IPv6 prefix; write the IPv4 prefix %s if that is what you mean",
					e, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked())
				continue
			}
			p = p.Masked()
			if !seen[p] {
				seen[p] = true
				entries = append(entries, p)
			}
		}
		m.PrefixLists[pl.PrefixListID] = entries
	}
}

// ruleList validates one direction of a group.
func (v *validator) ruleList(m *Model, g *Group, gi int, dir Direction, in []Rule, quota int) []NRule {
	where := groupWhere(g, gi)
	field := dir.String()
	out := make([]NRule, 0, len(in))
	seen := map[string]int{}
	var count4, count6 int
	for i := range in {
		r := &in[i]
		rw := fmt.Sprintf("%s %s[%d]", where, field, i)
		line := v.at("security_groups", gi, field, i)
		n, ok := v.rule(m, r, rw, gi, field, i)
		if !ok {
			continue
		}
		n.GroupID, n.Direction, n.Index = g.GroupID, dir, i
		key := n.dupKey()
		if j, dup := seen[key]; dup {
			v.add(line, rw, "", CodePermissionDuplicate, "the same rule as %s[%d] (%s from %s)", field, j, n.PortText(), n.Peer)
			continue
		}
		seen[key] = i
		n.ID = contentID(&n)
		if id := r.SecurityGroupRuleID; id != "" {
			if !ruleIDRe.MatchString(id) {
				idLine := v.at("security_groups", gi, field, i, "security_group_rule_id")
				v.add(idLine, rw, "security_group_rule_id", CodeRuleIDMalformed, "%q is not a security group rule id (sgr- and 17 lower-case hex digits, like sgr-0123456789abcdef0)", id)
				continue
			}
			n.ID = id
		}
		switch n.Peer.Kind {
		case PeerCIDR:
			if n.Peer.Prefix.Addr().Is4() {
				count4++
			} else {
				count6++
			}
		case PeerPrefixList:
			for _, p := range m.PrefixLists[n.Peer.ID] {
				if p.Addr().Is4() {
					count4++
				} else {
					count6++
				}
			}
		case PeerGroup:
			count4++
			count6++
		}
		out = append(out, n)
	}
	if count4 > quota {
		v.add(v.at("security_groups", gi, field), where, field, CodeRulesLimit, "%d IPv4 %s rules (prefix lists count by entries); the quota is %d", count4, field, quota)
	}
	if count6 > quota {
		v.add(v.at("security_groups", gi, field), where, field, CodeRulesLimit, "%d IPv6 %s rules (prefix lists count by entries); the quota is %d", count6, field, quota)
	}
	return out
}

func (n *NRule) dupKey() string {
	return fmt.Sprintf("%d|%d|%d|%d|%s", n.Proto, n.From, n.To, n.Peer.Kind, n.Peer)
}

// ruleIDRe is AWS's security group rule id format.
var ruleIDRe = regexp.MustCompile(`^sgr-[0-9a-f]{17}$`)

// contentID derives a rule's id from what the rule is — its group, direction, protocol,
// ports and canonical peer (the duplicate key) — so that it does not change when other
// rules are added, removed or reordered, nor when its description changes (AWS keeps a
// rule's id across UpdateSecurityGroupRuleDescriptions). 68 bits of SHA-256: ids within
// a config collide with negligible probability, and uniqueRuleIDs refuses one that does.
func contentID(n *NRule) string {
	sum := sha256.Sum256([]byte("sgd rule v1\x00" + n.GroupID + "\x00" + n.Direction.String() + "\x00" + n.dupKey()))
	return "sgr-" + hex.EncodeToString(sum[:9])[:17]
}

// uniqueRuleIDs refuses two rules with one id (an explicit id copied onto a second rule,
// or onto another rule's derived id): metrics, logs and the API name rules by id.
func (v *validator) uniqueRuleIDs(m *Model) {
	first := map[string]string{}
	groups := map[string]bool{}
	for gi, g := range m.Groups {
		if groups[g.ID] {
			continue // a group id defined twice is reported as such; its rules' ids would be too
		}
		groups[g.ID] = true
		for _, list := range [2][]NRule{g.Ingress, g.Egress} {
			for _, r := range list {
				at := fmt.Sprintf("group %s %s[%d]", g.ID, r.Direction, r.Index)
				if prev, dup := first[r.ID]; dup {
					l := Location{File: v.at().File} // an implicit rule was written nowhere
					if !r.Default {
						l = v.at("security_groups", gi, r.Direction.String(), r.Index)
					}
					v.add(l, at, "security_group_rule_id", CodeParameterValue, "rule id %s is also the id of %s", r.ID, prev)
					continue
				}
				first[r.ID] = at
			}
		}
	}
}

// rule validates one rule, the ri-th of the field (ingress or egress) of group gi.
func (v *validator) rule(m *Model, r *Rule, where string, gi int, field string, ri int) (NRule, bool) {
	fl := func(f string) Location { return v.at("security_groups", gi, field, ri, f) }
	ok := true
	bad := func(f, code, format string, a ...any) {
		v.add(fl(f), where, f, code, format, a...)
		ok = false
	}
	n := NRule{Description: r.Description}
	v.text(fl("description"), where, "description", r.Description)

	proto, pok := r.IPProtocol.Number()
	switch {
	case r.IPProtocol == "":
		bad("ip_protocol", CodeParameterValue, "ip_protocol is required (tcp, udp, icmp, icmpv6, a number 0–255, or -1)")
	case !pok:
		bad("ip_protocol", CodeParameterValue, "%q is not tcp, udp, icmp, icmpv6, a number 0–255, or -1", string(r.IPProtocol))
	}
	n.Proto = proto

	if pok {
		switch proto {
		case ipproto.TCP, ipproto.UDP:
			name := ipproto.Name(proto)
			switch {
			case r.FromPort == nil:
				bad("from_port", CodeParameterValue, "from_port is required for %s (both from_port and to_port)", name)
			case r.ToPort == nil:
				bad("to_port", CodeParameterValue, "to_port is required for %s (both from_port and to_port)", name)
			case *r.FromPort < 0 || *r.FromPort > 65535:
				bad("from_port", CodePermissionMalformed, "%d is not a port (0–65535)", *r.FromPort)
			case *r.ToPort < 0 || *r.ToPort > 65535:
				bad("to_port", CodePermissionMalformed, "%d is not a port (0–65535)", *r.ToPort)
			case *r.FromPort > *r.ToPort:
				bad("from_port", CodePermissionMalformed, "from_port %d is greater than to_port %d", *r.FromPort, *r.ToPort)
			default:
				n.From, n.To = *r.FromPort, *r.ToPort
			}
		case ipproto.ICMP, ipproto.ICMPv6:
			t, c := -1, -1
			if proto == ipproto.ICMP && r.FromPort == nil {
				bad("from_port", CodeParameterValue, "from_port (the ICMP type, or -1) is required for icmp")
			}
			if proto == ipproto.ICMP && r.ToPort == nil {
				bad("to_port", CodeParameterValue, "to_port (the ICMP code, or -1) is required for icmp")
			}
			if r.FromPort != nil {
				t = *r.FromPort
			}
			if r.ToPort != nil {
				c = *r.ToPort
			}
			switch {
			case t < -1 || t > 255:
				bad("from_port", CodeParameterValue, "ICMP type %d is outside -1–255", t)
			case c < -1 || c > 255:
				bad("to_port", CodeParameterValue, "ICMP code %d is outside -1–255", c)
			case t == -1 && c != -1:
				bad("to_port", CodeParameterValue, "ICMP type -1 (all types) requires code -1, not %d", c)
			default:
				n.From, n.To = t, c
			}
		}
	}

	// Exactly one peer.
	var peers []string
	for _, f := range []struct{ name, val string }{
		{"cidr_ipv4", r.CidrIPv4}, {"cidr_ipv6", r.CidrIPv6},
		{"prefix_list_id", r.PrefixListID}, {"referenced_group_id", r.ReferencedGroupID},
	} {
		if f.val != "" {
			peers = append(peers, f.name)
		}
	}
	switch {
	case len(peers) == 0:
		bad("", CodeMissingParameter, "a rule needs exactly one peer: cidr_ipv4, cidr_ipv6, prefix_list_id or referenced_group_id")
	case len(peers) > 1:
		bad(peers[1], CodePermissionMalformed, "a rule has exactly one peer, this one has %s", strings.Join(peers, " and "))
	case r.CidrIPv4 != "":
		p, err := netip.ParsePrefix(strings.TrimSpace(r.CidrIPv4))
		if err != nil || !p.Addr().Is4() {
			bad("cidr_ipv4", CodePermissionMalformed, "%q is not an IPv4 CIDR (like 203.0.113.0/24)", r.CidrIPv4)
		} else {
			n.Peer = Peer{Kind: PeerCIDR, Prefix: p.Masked()}
		}
	case r.CidrIPv6 != "":
		p, err := netip.ParsePrefix(strings.TrimSpace(r.CidrIPv6))
		if err != nil || !p.Addr().Is6() || p.Addr().Zone() != "" {
			bad("cidr_ipv6", CodePermissionMalformed, "%q is not an IPv6 CIDR (like 2001:db8::/32)", r.CidrIPv6)
		} else {
			n.Peer = Peer{Kind: PeerCIDR, Prefix: p.Masked()}
		}
	case r.PrefixListID != "":
		if _, found := m.PrefixLists[r.PrefixListID]; !found {
			bad("prefix_list_id", CodePrefixListNotFound, "prefix list %s is not defined in prefix_lists", r.PrefixListID)
		} else {
			n.Peer = Peer{Kind: PeerPrefixList, ID: r.PrefixListID}
		}
	case r.ReferencedGroupID != "":
		switch {
		case !groupIDRe.MatchString(r.ReferencedGroupID):
			bad("referenced_group_id", CodeGroupIDMalformed, "%q is not sg- followed by letters, digits or dashes", r.ReferencedGroupID)
		case m.groupByID[r.ReferencedGroupID] == nil:
			bad("referenced_group_id", CodeGroupNotFound, "group %s is not defined in security_groups", r.ReferencedGroupID)
		default:
			n.Peer = Peer{Kind: PeerGroup, ID: r.ReferencedGroupID}
		}
	}
	return n, ok
}

// defaultGroup returns the id of the group named "default" (SPEC 1.3): the config's own,
// or AWS's default group — all traffic in from itself, all traffic out — added to the
// model the first time it is needed.
func (v *validator) defaultGroup(m *Model, names map[string]string) string {
	if v.defaultID != "" {
		return v.defaultID
	}
	if id, ok := names[DefaultGroupName]; ok && id != "" {
		v.defaultID = id
		return id
	}
	id := "sg-default"
	for m.groupByID[id] != nil {
		id += "-sgd"
	}
	g := &GroupModel{ID: id, Name: DefaultGroupName, Description: "default VPC security group", Synthesized: true,
		Ingress: withIDs([]NRule{{GroupID: id, Direction: Ingress, Proto: ipproto.All, Peer: Peer{Kind: PeerGroup, ID: id}, Default: true, Description: "AWS default group: all traffic from itself"}}),
		Egress:  defaultEgress(id)}
	m.Groups = append(m.Groups, g)
	m.groupByID[id] = g
	v.defaultID = id
	return id
}

func (v *validator) interfaces(c *Config, m *Model, quota int, names map[string]string, seen map[string]bool) {
	for i, itf := range c.Interfaces {
		where := "interface " + itf.Name
		if itf.Name == "" {
			where = fmt.Sprintf("interfaces[%d]", i)
		}
		v.deviceName("interfaces", i, where, "interface", itf.Name, seen)
		m.Interfaces = append(m.Interfaces, v.attachment("interfaces", i, where, itf.Name, itf.SecurityGroups, itf.ConnectionTracking, m, quota, names))
	}
}

// ports validates the ports (SPEC 4.3): a device name no interface or other port has,
// groups and timeouts as for interfaces, ids in AWS's form, and the instance's addresses.
func (v *validator) ports(c *Config, m *Model, quota int, names map[string]string, seen map[string]bool) {
	enis := map[string]string{}      // network interface id → the port that has it
	owner := map[netip.Addr]string{} // address → the port that has it
	for i, pt := range c.Ports {
		where := "port " + pt.Name
		if pt.Name == "" {
			where = fmt.Sprintf("ports[%d]", i)
		}
		v.deviceName("ports", i, where, "port", pt.Name, seen)
		pm := PortModel{IfaceModel: v.attachment("ports", i, where, pt.Name, pt.SecurityGroups, pt.ConnectionTracking, m, quota, names),
			InstanceID: pt.InstanceID, ENI: pt.NetworkInterfaceID, SourceDestCheck: pt.SourceDestCheck == nil || *pt.SourceDestCheck}
		if pt.InstanceID != "" && !instanceIDRe.MatchString(pt.InstanceID) {
			v.add(v.at("ports", i, "instance_id"), where, "instance_id", CodeInstanceIDMalformed, "%q is not i- followed by letters, digits or dashes", pt.InstanceID)
		}
		switch {
		case pm.ENI == "":
			pm.ENI = PortENI(pt.Name)
		case !eniIDRe.MatchString(pm.ENI):
			v.add(v.at("ports", i, "network_interface_id"), where, "network_interface_id", CodeInterfaceMalformed, "%q is not eni- followed by letters, digits or dashes", pm.ENI)
		}
		if other, dup := enis[pm.ENI]; dup {
			v.add(v.at("ports", i, "network_interface_id"), where, "network_interface_id", CodeInterfaceDuplicate, "network interface id %s is also port %s's", pm.ENI, other)
		}
		enis[pm.ENI] = pt.Name
		for j, s := range pt.Addresses {
			field := fmt.Sprintf("addresses[%d]", j)
			l := v.at("ports", i, "addresses", j)
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			switch {
			case err != nil || a.Zone() != "":
				v.add(l, where, field, CodeMemberAddrMalformed, "%q is not an IP address", s)
				continue
			case a.Is4In6():
				v.add(l, where, field, CodeMemberAddrMalformed, "%q is an IPv4-mapped IPv6 address; write the IPv4 address %s", s, a.Unmap())
				continue
			case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == limitedBroadcast:
				v.add(l, where, field, CodeParameterValue, "%s cannot be an instance's own address", a)
				continue
			}
			if other, dup := owner[a]; dup {
				v.add(l, where, field, CodeParameterValue, "address %s is also port %s's: an address belongs to one instance", a, other)
				continue
			}
			owner[a] = pt.Name
			pm.Addrs = append(pm.Addrs, a)
		}
		m.Ports = append(m.Ports, pm)
	}
}

// limitedBroadcast is 255.255.255.255, never an instance's address.
var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// deviceName checks the name of the i-th entry of section (interfaces or ports): a Linux
// device name, not lo, not listed before in seen (which interfaces and ports share).
func (v *validator) deviceName(section string, i int, where, kind, name string, seen map[string]bool) {
	switch {
	case name == "":
		v.add(v.at(section, i), where, "name", CodeMissingParameter, "name is required")
	case name == "lo":
		v.add(v.at(section, i, "name"), where, "name", CodeParameterValue, "loopback traffic is never filtered; remove lo")
	case !ifNameRe.MatchString(name):
		v.add(v.at(section, i, "name"), where, "name", CodeInterfaceMalformed, "%q is not a Linux interface name (1–15 characters, no '/', ':' or spaces)", name)
	case seen[name] && section == "ports":
		v.add(v.at(section, i), where, "name", CodeInterfaceDuplicate, "%s is listed twice (a device is an interface of this host or a port of an instance, once)", name)
	case seen[name]:
		v.add(v.at(section, i), where, "name", CodeInterfaceDuplicate, "%s %s is listed twice", kind, name)
	}
	seen[name] = true
}

// attachment validates what interfaces and ports have alike: the groups (the default
// group when none, SPEC 1.3; the quota) and the connection-tracking timeouts (SPEC 1.4).
func (v *validator) attachment(section string, i int, where, name string, groups []string, ct *ConnectionTracking, m *Model, quota int, names map[string]string) IfaceModel {
	im := IfaceModel{Name: name, Timeouts: DefaultTimeouts()}
	dup := map[string]bool{}
	for j, gid := range groups {
		l := v.at(section, i, "security_groups", j)
		if strings.EqualFold(gid, DefaultGroupName) {
			gid = v.defaultGroup(m, names)
		}
		switch {
		case m.groupByID[gid] == nil:
			v.add(l, where, fmt.Sprintf("security_groups[%d]", j), CodeGroupNotFound, "group %s is not defined in security_groups", gid)
		case dup[gid]:
			v.add(l, where, fmt.Sprintf("security_groups[%d]", j), CodeParameterValue, "group %s is listed twice", gid)
		default:
			im.Groups = append(im.Groups, gid)
		}
		dup[gid] = true
	}
	if len(groups) == 0 {
		im.Groups, im.DefaultGroup = []string{v.defaultGroup(m, names)}, true
	}
	if len(groups) > quota {
		v.add(v.at(section, i, "security_groups"), where, "security_groups", CodeGroupsLimit,
			"%d groups on one interface; the quota is %d (daemon.groups_per_interface_quota, at most %d)", len(groups), quota, MaxGroupsPerInterface)
	}
	if ct != nil {
		im.TimeoutsSet = true
		set := func(p *int, field string, lo, hi int, dst *time.Duration) {
			if p == nil {
				return
			}
			if *p < lo || *p > hi {
				v.add(v.at(section, i, "connection_tracking", field), where, "connection_tracking."+field, CodeParameterValue,
					"%d s is outside AWS's range %d–%d s", *p, lo, hi)
				return
			}
			*dst = time.Duration(*p) * time.Second
		}
		set(ct.TCPEstablishedTimeout, "tcp_established_timeout", 60, 432000, &im.Timeouts.TCPEstablished)
		set(ct.UDPTimeout, "udp_timeout", 30, 60, &im.Timeouts.UDP)
		set(ct.UDPStreamTimeout, "udp_stream_timeout", 60, 180, &im.Timeouts.UDPStream)
	}
	return im
}

func (v *validator) members(c *Config, m *Model, names map[string]string) {
	for i, mb := range c.Members {
		where := fmt.Sprintf("members[%d]", i)
		a, err := netip.ParseAddr(strings.TrimSpace(mb.Address))
		if err != nil || a.Zone() != "" {
			v.add(v.at("members", i, "address"), where, "address", CodeMemberAddrMalformed, "%q is not an IP address", mb.Address)
			continue
		}
		if a.Is4In6() {
			// ::ffff:203.0.113.9 is not 203.0.113.9 to the packet path (an IPv6 packet with
			// that source is IPv6) and no real host sends from it: say so, do not guess.
			v.add(v.at("members", i, "address"), where, "address", CodeMemberAddrMalformed,
				"%q is an IPv4-mapped IPv6 address; write the IPv4 address %s if that is the member", mb.Address, a.Unmap())
			continue
		}
		mm := MemberModel{Addr: a}
		if len(mb.SecurityGroups) == 0 {
			v.add(v.at("members", i), where, "security_groups", CodeMissingParameter, "a member carries at least one group")
		}
		for j, gid := range mb.SecurityGroups {
			if strings.EqualFold(gid, DefaultGroupName) {
				gid = v.defaultGroup(m, names)
			}
			if m.groupByID[gid] == nil {
				v.add(v.at("members", i, "security_groups", j), where, fmt.Sprintf("security_groups[%d]", j), CodeGroupNotFound, "group %s is not defined in security_groups", gid)
				continue
			}
			mm.Groups = append(mm.Groups, gid)
		}
		m.Members = append(m.Members, mm)
	}
}
