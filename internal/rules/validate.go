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
	"go.yaml.in/yaml/v3"
)

// Quotas and limits (SPEC 1.5; AWS VPC quotas page).
const (
	DefaultRulesPerGroup      = 60
	DefaultGroupsPerInterface = 5
	MaxGroupsPerInterface     = 16
	MaxRulesTimesGroups       = 1000
	DefaultMaxTracked         = 262144
	DefaultGroupName          = "default"
)

// Options tune validation. The zero value applies every AWS quota.
type Options struct {
	// Unlimited lifts the rule and group quotas. Benchmarks use it to compile
	// 10 000 rules; no configuration file can ask for it.
	Unlimited bool
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
	Name     string
	Groups   []string // group ids, after the default-group rule
	Timeouts Timeouts
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
	Hash        string // of the file it came from
	Groups      []*GroupModel
	PrefixLists map[string][]netip.Prefix
	Interfaces  []IfaceModel
	Members     []MemberModel
	Daemon      Daemon

	groupByID map[string]*GroupModel
}

// Group returns the group with the given id, or nil.
func (m *Model) Group(id string) *GroupModel { return m.groupByID[id] }

// Load reads, parses and validates a configuration file with the default options.
func Load(path string) (*Model, error) {
	doc, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	return Validate(doc, Options{})
}

var (
	groupIDRe      = regexp.MustCompile(`^sg-[A-Za-z0-9-]+$`)
	prefixListIDRe = regexp.MustCompile(`^pl-[A-Za-z0-9-]+$`)
	// AWS's character set for group names and descriptions in a VPC.
	awsTextRe = regexp.MustCompile(`^[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]*$`)
	ifNameRe  = regexp.MustCompile(`^[^/\s:]{1,15}$`)
)

type validator struct {
	doc       *Document
	opt       Options
	errs      Errors
	defaultID string // the default group's id, once resolved
}

func (v *validator) add(line int, where, field, code, format string, a ...any) {
	v.errs = append(v.errs, &Error{File: v.doc.File, Line: line, Where: where, Field: field, Code: code, Msg: fmt.Sprintf(format, a...)})
}

// Validate checks a parsed configuration against SPEC 1.5 and returns the model with the
// defaults of SPEC 1.3 applied. On failure it returns Errors holding every problem found.
func Validate(doc *Document, opt Options) (*Model, error) {
	v := &validator{doc: doc, opt: opt}
	c := &doc.Config
	m := &Model{File: doc.File, Hash: doc.Hash, PrefixLists: map[string][]netip.Prefix{}, groupByID: map[string]*GroupModel{}, Daemon: c.Daemon}

	rulesQuota, groupsQuota := v.daemon(&c.Daemon)
	if opt.Unlimited {
		rulesQuota, groupsQuota = 1<<30, 1<<30
	}
	v.prefixLists(c, m)

	// Groups: ids and names first, so that references resolve in any order.
	names := map[string]string{}
	for i := range c.SecurityGroups {
		g := &c.SecurityGroups[i]
		where := groupWhere(g, i)
		line := doc.line("security_groups", i)
		switch {
		case g.GroupID == "":
			v.add(line, where, "group_id", CodeMissingParameter, "group_id is required")
		case !groupIDRe.MatchString(g.GroupID):
			v.add(doc.line("security_groups", i, "group_id"), where, "group_id", CodeGroupIDMalformed,
				"%q is not sg- followed by letters, digits or dashes", g.GroupID)
		case m.groupByID[g.GroupID] != nil:
			v.add(line, where, "group_id", CodeGroupDuplicate, "group id %s is defined twice", g.GroupID)
		}
		if g.GroupName != "" {
			low := strings.ToLower(g.GroupName)
			if strings.HasPrefix(low, "sg-") {
				v.add(doc.line("security_groups", i, "group_name"), where, "group_name", CodeGroupReserved, "group names starting with sg- are reserved")
			}
			v.text(doc.line("security_groups", i, "group_name"), where, "group_name", g.GroupName)
			if other, dup := names[low]; dup {
				v.add(doc.line("security_groups", i, "group_name"), where, "group_name", CodeGroupDuplicate,
					"group name %q is already used by %s (names compare case-insensitively)", g.GroupName, other)
			}
			names[low] = g.GroupID
		}
		v.text(doc.line("security_groups", i, "description"), where, "description", g.Description)
		gm := &GroupModel{ID: g.GroupID, Name: g.GroupName, Description: g.Description}
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
			if n := doc.value("security_groups", i, "egress"); n != nil && n.Kind == yaml.ScalarNode && n.Value == "" {
				v.add(n.Line, groupWhere(g, i), "egress", CodeParameterValue,
					"egress has no value: omit the key for AWS's default (all traffic out) or write egress: [] for none")
			}
			gm.Egress = defaultEgress(g.GroupID)
		} else {
			gm.Egress = v.ruleList(m, g, i, Egress, *g.Egress, rulesQuota)
		}
	}

	v.uniqueRuleIDs(m)
	v.interfaces(c, m, groupsQuota, names)
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

func (v *validator) text(line int, where, field, s string) {
	if len(s) > 255 {
		v.add(line, where, field, CodeParameterValue, "longer than 255 characters (%d)", len(s))
	}
	if !awsTextRe.MatchString(s) {
		v.add(line, where, field, CodeParameterValue, "%q has characters outside AWS's set (a-z A-Z 0-9 space ._-:/()#,@[]+=&;{}!$*)", s)
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

func (v *validator) daemon(d *Daemon) (rulesQuota, groupsQuota int) {
	doc := v.doc
	const where = "daemon"
	rulesQuota, groupsQuota = DefaultRulesPerGroup, DefaultGroupsPerInterface
	quotasOK := true
	if d.RulesPerGroupQuota != nil {
		rulesQuota = *d.RulesPerGroupQuota
		if rulesQuota < 1 {
			v.add(doc.line("daemon", "rules_per_group_quota"), where, "rules_per_group_quota", CodeParameterValue, "must be at least 1")
			quotasOK = false
		}
	}
	if d.GroupsPerInterfaceQuota != nil {
		groupsQuota = *d.GroupsPerInterfaceQuota
		if groupsQuota < 1 || groupsQuota > MaxGroupsPerInterface {
			v.add(doc.line("daemon", "groups_per_interface_quota"), where, "groups_per_interface_quota", CodeParameterValue,
				"must be 1–%d (AWS's maximum), not %d", MaxGroupsPerInterface, groupsQuota)
			quotasOK = false
		}
	}
	// Divide rather than multiply: a huge rules quota must not overflow into a small product.
	if quotasOK && rulesQuota > MaxRulesTimesGroups/groupsQuota {
		v.add(doc.line("daemon"), where, "rules_per_group_quota", CodeParameterValue,
			"rules per group (%d) × groups per interface (%d) exceeds AWS's %d", rulesQuota, groupsQuota, MaxRulesTimesGroups)
	}
	intRange := func(p *int, field string, lo, hi int) {
		if p != nil && (*p < lo || *p > hi) {
			v.add(doc.line("daemon", field), where, field, CodeParameterValue, "%d is outside %d–%d", *p, lo, hi)
		}
	}
	intRange(d.QueueNum, "queue_num", 0, 65535)
	intRange(d.QueueCount, "queue_count", 1, 64)
	if d.QueueNum != nil && d.QueueCount != nil && *d.QueueNum+*d.QueueCount > 65536 {
		v.add(doc.line("daemon", "queue_count"), where, "queue_count", CodeParameterValue, "queue_num + queue_count exceeds 65536")
	}
	intRange(d.MaxTrackedConnections, "max_tracked_connections", 1, 1<<26)
	intRange(d.FlowLogInterval, "flow_log_interval", 1, 3600)
	intRange(d.DeniedLogPerSecond, "denied_log_per_second", 0, 1000000)
	switch strings.ToLower(d.LogLevel) {
	case "", "debug", "info", "warn", "error":
	default:
		v.add(doc.line("daemon", "log_level"), where, "log_level", CodeParameterValue, "%q is not debug, info, warn or error", d.LogLevel)
	}
	switch strings.ToLower(d.LogFormat) {
	case "", "json", "console":
	default:
		v.add(doc.line("daemon", "log_format"), where, "log_format", CodeParameterValue, "%q is not json or console", d.LogFormat)
	}
	// "off" disables the server, as the flag does (README settings table; the daemon's
	// Resolve turns it into no server). status_socket takes any path or "off" unchecked.
	if d.MetricsListen != "" && d.MetricsListen != "off" {
		if _, err := netip.ParseAddrPort(d.MetricsListen); err != nil {
			v.add(doc.line("daemon", "metrics_listen"), where, "metrics_listen", CodeParameterValue, "%q is not ADDRESS:PORT or off", d.MetricsListen)
		}
	}
	return rulesQuota, groupsQuota
}

func (v *validator) prefixLists(c *Config, m *Model) {
	doc := v.doc
	for i, pl := range c.PrefixLists {
		where := "prefix list " + pl.PrefixListID
		if pl.PrefixListID == "" {
			where = fmt.Sprintf("prefix_lists[%d]", i)
		}
		switch {
		case pl.PrefixListID == "":
			v.add(doc.line("prefix_lists", i), where, "prefix_list_id", CodeMissingParameter, "prefix_list_id is required")
			continue
		case !prefixListIDRe.MatchString(pl.PrefixListID):
			v.add(doc.line("prefix_lists", i, "prefix_list_id"), where, "prefix_list_id", CodePrefixListMalformed,
				"%q is not pl- followed by letters, digits or dashes", pl.PrefixListID)
		case m.PrefixLists[pl.PrefixListID] != nil:
			v.add(doc.line("prefix_lists", i), where, "prefix_list_id", CodePrefixListDuplicate, "prefix list %s is defined twice", pl.PrefixListID)
			continue
		}
		entries := make([]netip.Prefix, 0, len(pl.Entries))
		seen := map[netip.Prefix]bool{}
		for j, e := range pl.Entries {
			p, err := netip.ParsePrefix(strings.TrimSpace(e))
			if err != nil {
				v.add(doc.line("prefix_lists", i, "entries", j), where, fmt.Sprintf("entries[%d]", j), CodeParameterValue, "%q is not a CIDR", e)
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
				v.add(doc.line("prefix_lists", i, "entries", j), where, fmt.Sprintf("entries[%d]", j), CodeParameterValue,
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
	doc := v.doc
	where := groupWhere(g, gi)
	field := dir.String()
	out := make([]NRule, 0, len(in))
	seen := map[string]int{}
	var count4, count6 int
	for i := range in {
		r := &in[i]
		rw := fmt.Sprintf("%s %s[%d]", where, field, i)
		line := doc.line("security_groups", gi, field, i)
		n, ok := v.rule(m, r, rw, gi, field, i, line)
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
				idLine := doc.line("security_groups", gi, field, i, "security_group_rule_id")
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
		v.add(doc.line("security_groups", gi, field), where, field, CodeRulesLimit, "%d IPv4 %s rules (prefix lists count by entries); the quota is %d", count4, field, quota)
	}
	if count6 > quota {
		v.add(doc.line("security_groups", gi, field), where, field, CodeRulesLimit, "%d IPv6 %s rules (prefix lists count by entries); the quota is %d", count6, field, quota)
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
					line := 0
					if !r.Default {
						line = v.doc.line("security_groups", gi, r.Direction.String(), r.Index)
					}
					v.add(line, at, "security_group_rule_id", CodeParameterValue, "rule id %s is also the id of %s", r.ID, prev)
					continue
				}
				first[r.ID] = at
			}
		}
	}
}

// rule validates one rule; line is the rule's own line.
func (v *validator) rule(m *Model, r *Rule, where string, gi int, field string, ri int, line int) (NRule, bool) {
	doc := v.doc
	fl := func(f string) int {
		if l := doc.line("security_groups", gi, field, ri, f); l > 0 {
			return l
		}
		return line
	}
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
		bad("ip_protocol", CodePermissionMalformed, "ip_protocol is required (tcp, udp, icmp, icmpv6, a number 0–255, or -1)")
	case !pok:
		bad("ip_protocol", CodePermissionMalformed, "%q is not tcp, udp, icmp, icmpv6, a number 0–255, or -1", string(r.IPProtocol))
	}
	n.Proto = proto

	if pok {
		switch proto {
		case ipproto.TCP, ipproto.UDP:
			name := ipproto.Name(proto)
			switch {
			case r.FromPort == nil:
				bad("from_port", CodePermissionMalformed, "from_port is required for %s", name)
			case r.ToPort == nil:
				bad("to_port", CodePermissionMalformed, "to_port is required for %s", name)
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
				bad("from_port", CodePermissionMalformed, "from_port (the ICMP type, or -1) is required for icmp")
			}
			if proto == ipproto.ICMP && r.ToPort == nil {
				bad("to_port", CodePermissionMalformed, "to_port (the ICMP code, or -1) is required for icmp")
			}
			if r.FromPort != nil {
				t = *r.FromPort
			}
			if r.ToPort != nil {
				c = *r.ToPort
			}
			switch {
			case t < -1 || t > 255:
				bad("from_port", CodePermissionMalformed, "ICMP type %d is outside -1–255", t)
			case c < -1 || c > 255:
				bad("to_port", CodePermissionMalformed, "ICMP code %d is outside -1–255", c)
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
		bad("", CodePermissionMalformed, "a rule needs exactly one peer: cidr_ipv4, cidr_ipv6, prefix_list_id or referenced_group_id")
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

func (v *validator) interfaces(c *Config, m *Model, quota int, names map[string]string) {
	doc := v.doc
	seen := map[string]bool{}
	for i, itf := range c.Interfaces {
		where := "interface " + itf.Name
		line := doc.line("interfaces", i)
		if itf.Name == "" {
			where = fmt.Sprintf("interfaces[%d]", i)
		}
		switch {
		case itf.Name == "":
			v.add(line, where, "name", CodeMissingParameter, "name is required")
		case itf.Name == "lo":
			v.add(doc.line("interfaces", i, "name"), where, "name", CodeParameterValue, "loopback traffic is never filtered; remove lo")
		case !ifNameRe.MatchString(itf.Name):
			v.add(doc.line("interfaces", i, "name"), where, "name", CodeInterfaceMalformed, "%q is not a Linux interface name (1–15 characters, no '/', ':' or spaces)", itf.Name)
		case seen[itf.Name]:
			v.add(line, where, "name", CodeInterfaceDuplicate, "interface %s is listed twice", itf.Name)
		}
		seen[itf.Name] = true
		im := IfaceModel{Name: itf.Name, Timeouts: DefaultTimeouts()}
		dup := map[string]bool{}
		for j, gid := range itf.SecurityGroups {
			l := doc.line("interfaces", i, "security_groups", j)
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
		if len(itf.SecurityGroups) == 0 {
			im.Groups = []string{v.defaultGroup(m, names)}
		}
		if len(itf.SecurityGroups) > quota {
			v.add(doc.line("interfaces", i, "security_groups"), where, "security_groups", CodeGroupsLimit,
				"%d groups on one interface; the quota is %d (daemon.groups_per_interface_quota, at most %d)", len(itf.SecurityGroups), quota, MaxGroupsPerInterface)
		}
		if ct := itf.ConnectionTracking; ct != nil {
			set := func(p *int, field string, lo, hi int, dst *time.Duration) {
				if p == nil {
					return
				}
				if *p < lo || *p > hi {
					v.add(doc.line("interfaces", i, "connection_tracking", field), where, "connection_tracking."+field, CodeParameterValue,
						"%d s is outside AWS's range %d–%d s", *p, lo, hi)
					return
				}
				*dst = time.Duration(*p) * time.Second
			}
			set(ct.TCPEstablishedTimeout, "tcp_established_timeout", 60, 432000, &im.Timeouts.TCPEstablished)
			set(ct.UDPTimeout, "udp_timeout", 30, 60, &im.Timeouts.UDP)
			set(ct.UDPStreamTimeout, "udp_stream_timeout", 60, 180, &im.Timeouts.UDPStream)
		}
		m.Interfaces = append(m.Interfaces, im)
	}
}

func (v *validator) members(c *Config, m *Model, names map[string]string) {
	doc := v.doc
	for i, mb := range c.Members {
		where := fmt.Sprintf("members[%d]", i)
		a, err := netip.ParseAddr(strings.TrimSpace(mb.Address))
		if err != nil || a.Zone() != "" {
			v.add(doc.line("members", i, "address"), where, "address", CodeMemberAddrMalformed, "%q is not an IP address", mb.Address)
			continue
		}
		if a.Is4In6() {
			// ::ffff:203.0.113.9 is not 203.0.113.9 to the packet path (an IPv6 packet with
			// that source is IPv6) and no real host sends from it: say so, do not guess.
			v.add(doc.line("members", i, "address"), where, "address", CodeMemberAddrMalformed,
				"%q is an IPv4-mapped IPv6 address; write the IPv4 address %s if that is the member", mb.Address, a.Unmap())
			continue
		}
		mm := MemberModel{Addr: a}
		if len(mb.SecurityGroups) == 0 {
			v.add(doc.line("members", i), where, "security_groups", CodeMissingParameter, "a member carries at least one group")
		}
		for j, gid := range mb.SecurityGroups {
			if strings.EqualFold(gid, DefaultGroupName) {
				gid = v.defaultGroup(m, names)
			}
			if m.groupByID[gid] == nil {
				v.add(doc.line("members", i, "security_groups", j), where, fmt.Sprintf("security_groups[%d]", j), CodeGroupNotFound, "group %s is not defined in security_groups", gid)
				continue
			}
			mm.Groups = append(mm.Groups, gid)
		}
		m.Members = append(m.Members, mm)
	}
}
