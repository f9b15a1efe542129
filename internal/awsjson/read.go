package awsjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Reading is held to what the CLI prints. Every field of a permission and of its peers
// must be one the EC2 API documents: a field sgd does not know there could change what the
// permission allows, so it is refused rather than ignored. Fields of a group or a prefix
// list that sgd does not know are informational in the API's model (ARNs, states, fields
// AWS adds over time); they are reported as warnings and otherwise left out.

// shape is an API shape's name and members (the EC2 service model, 2016-11-15).
type shape struct {
	name string
	keys []string
}

var (
	describeShape   = shape{"DescribeSecurityGroupsResult", []string{"SecurityGroups", "NextToken"}}
	groupShape      = shape{"SecurityGroup", []string{"Description", "GroupName", "IpPermissions", "OwnerId", "GroupId", "IpPermissionsEgress", "Tags", "VpcId", "SecurityGroupArn"}}
	permissionShape = shape{"IpPermission", []string{"FromPort", "IpProtocol", "IpRanges", "Ipv6Ranges", "PrefixListIds", "ToPort", "UserIdGroupPairs"}}
	ipRangeShape    = shape{"IpRange", []string{"CidrIp", "Description"}}
	ipv6RangeShape  = shape{"Ipv6Range", []string{"CidrIpv6", "Description"}}
	prefixIDShape   = shape{"PrefixListId", []string{"Description", "PrefixListId"}}
	pairShape       = shape{"UserIdGroupPair", []string{"Description", "GroupId", "GroupName", "PeeringStatus", "UserId", "VpcId", "VpcPeeringConnectionId"}}
	tagShape        = shape{"Tag", []string{"Key", "Value"}}
	listsShape      = shape{"DescribeManagedPrefixListsResult", []string{"PrefixLists", "NextToken"}}
	listShape       = shape{"ManagedPrefixList", []string{"PrefixListId", "AddressFamily", "State", "StateMessage", "PrefixListArn", "PrefixListName", "MaxEntries", "Version", "Tags", "OwnerId", "IpamPrefixListResolverTargetId", "IpamPrefixListResolverSyncEnabled"}}
	entriesShape    = shape{"GetManagedPrefixListEntriesResult", []string{"Entries", "NextToken"}}
	entryShape      = shape{"PrefixListEntry", []string{"Cidr", "Description"}}
)

// MaxInputSize bounds what Read* accept, 64 MiB: describe-security-groups of an account at
// AWS's quotas (2 500 groups of 60 rules with descriptions) prints about 40 MB.
const MaxInputSize = 64 << 20

// ReadError is input that is not the AWS CLI output it should be. Problems are the
// reasons, one for each place, in the order they stand.
type ReadError struct {
	File     string
	Problems []string
}

func (e *ReadError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File + ": " + p)
	}
	return b.String()
}

// reader walks a decoded document (encoding/json with UseNumber, or yaml.v3: maps of
// strings, slices, json.Number or int, strings, bools, nil), typing each value it asks for
// and recording every problem with the path to it.
type reader struct {
	file     string
	problems []string
	warnings []string
}

func (r *reader) bad(path, format string, a ...any) {
	r.problems = append(r.problems, path+": "+fmt.Sprintf(format, a...))
}

// decode parses data as JSON, or as YAML (the CLI's --output yaml) when it does not start
// with { or [.
func (r *reader) decode(data []byte) any {
	if len(data) > MaxInputSize {
		r.bad("the file", "is %d bytes; sgd reads at most %d (64 MiB)", len(data), MaxInputSize)
		return nil
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		r.bad("the file", "is empty")
		return nil
	}
	var v any
	if trimmed[0] == '{' || trimmed[0] == '[' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		err := dec.Decode(&v)
		if err == nil && dec.More() {
			err = errors.New("more than one JSON value")
		}
		if err != nil {
			r.bad("the file", "is not valid JSON: %v", err)
			return nil
		}
		return v
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		r.bad("the file", "is neither JSON nor the CLI's YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))
		return nil
	}
	return v
}

// object returns v as a JSON object, checking its keys against the shape's: an unknown
// key is a problem when strict, a warning otherwise.
func (r *reader) object(v any, path string, s shape, strict bool) map[string]any {
	m, ok := v.(map[string]any)
	if !ok {
		r.bad(path, "want an object, not %s", kind(v))
		return nil
	}
	var unknown []string
	for k := range m {
		if !slices.Contains(s.keys, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		if strict {
			r.bad(path, "unknown field %q (the EC2 API's %s has %s): sgd cannot tell what it allows", k, s.name, strings.Join(s.keys, ", "))
		} else {
			r.warnings = append(r.warnings, fmt.Sprintf("%s: field %q is not one sgd knows; left out", path, k))
		}
	}
	return m
}

// list returns m[key] as a list; absent or null is nil.
func (r *reader) list(m map[string]any, key, path string) []any {
	v, ok := m[key]
	if !ok || v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		r.bad(path+" "+key, "want a list, not %s", kind(v))
	}
	return l
}

// str returns m[key] as a string; absent or null is "".
func (r *reader) str(m map[string]any, key, path string) string {
	switch v := m[key].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		r.bad(path+" "+key, "want a string, not %s", kind(v))
		return ""
	}
}

// protocol returns m[key], IpProtocol, which YAML may hold as a bare number (-1, 50).
func (r *reader) protocol(m map[string]any, key, path string) string {
	switch v := m[key].(type) {
	case json.Number:
		return v.String()
	case int:
		return strconv.Itoa(v)
	}
	return r.str(m, key, path)
}

// integer returns m[key] as a whole number; absent or null is nil.
func (r *reader) integer(m map[string]any, key, path string) *int {
	var n int
	switch v := m[key].(type) {
	case nil:
		return nil
	case int:
		n = v
	case json.Number:
		i, err := strconv.Atoi(v.String())
		if err != nil {
			r.bad(path+" "+key, "want a whole number, not %s", v)
			return nil
		}
		n = i
	default:
		r.bad(path+" "+key, "want a whole number, not %s", kind(v))
		return nil
	}
	return &n
}

// kind says what a decoded value is, in JSON's words.
func kind(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(v)
	case bool:
		return "a boolean"
	case json.Number, int, float64:
		return fmt.Sprintf("the number %v", v)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func (r *reader) err() error {
	if len(r.problems) == 0 {
		return nil
	}
	return &ReadError{File: r.file, Problems: r.problems}
}

// ReadSecurityGroups reads what aws ec2 describe-security-groups prints (JSON, or YAML
// with --output yaml): {"SecurityGroups": [...]}, or one group of it, or a list of groups
// (--query SecurityGroups). file names the input in messages. The warnings say what was
// left out (fields sgd does not know at the group level; a NextToken: one page of many).
func ReadSecurityGroups(file string, data []byte) (groups []SecurityGroup, warnings []string, err error) {
	r := &reader{file: file}
	v := r.decode(data)
	var items []any
	switch t := v.(type) {
	case nil:
	case []any:
		items = t
	case map[string]any:
		_, perms := t["IpPermissions"]
		_, egress := t["IpPermissionsEgress"]
		_, id := t["GroupId"]
		switch _, describe := t["SecurityGroups"]; {
		case describe:
			items = r.page(t, "SecurityGroups", describeShape, "describe-security-groups")
		case perms || egress || id:
			items = []any{t} // one group: --query 'SecurityGroups[0]'
		default:
			r.bad("the file", "is not describe-security-groups output: it has no SecurityGroups (nor a group's GroupId or IpPermissions)")
		}
	default:
		r.bad("the file", "want describe-security-groups output ({\"SecurityGroups\": [...]}), not %s", kind(v))
	}
	for i, it := range items {
		path := fmt.Sprintf("SecurityGroups[%d]", i)
		if m, ok := it.(map[string]any); ok {
			if id, ok := m["GroupId"].(string); ok {
				path += " (" + id + ")"
			}
		}
		groups = append(groups, r.group(it, path))
	}
	return groups, r.warnings, r.err()
}

func (r *reader) group(v any, path string) SecurityGroup {
	m := r.object(v, path, groupShape, false)
	if m == nil {
		return SecurityGroup{}
	}
	g := SecurityGroup{
		Description: r.str(m, "Description", path), GroupName: r.str(m, "GroupName", path),
		OwnerId: r.str(m, "OwnerId", path), GroupId: r.str(m, "GroupId", path),
		VpcId: r.str(m, "VpcId", path), SecurityGroupArn: r.str(m, "SecurityGroupArn", path),
		IpPermissions:       r.permissions(m, "IpPermissions", path),
		IpPermissionsEgress: r.permissions(m, "IpPermissionsEgress", path),
	}
	if _, ok := m["IpPermissionsEgress"]; ok && g.IpPermissionsEgress == nil {
		g.IpPermissionsEgress = []IpPermission{} // listed, and empty: no egress at all
	}
	for i, t := range r.list(m, "Tags", path) {
		tm := r.object(t, fmt.Sprintf("%s Tags[%d]", path, i), tagShape, false)
		if tm != nil {
			g.Tags = append(g.Tags, Tag{Key: r.str(tm, "Key", path), Value: r.str(tm, "Value", path)})
		}
	}
	return g
}

func (r *reader) permissions(m map[string]any, key, path string) []IpPermission {
	var ps []IpPermission
	for i, v := range r.list(m, key, path) {
		pp := fmt.Sprintf("%s %s[%d]", path, key, i)
		pm := r.object(v, pp, permissionShape, true)
		if pm == nil {
			continue
		}
		p := IpPermission{IpProtocol: r.protocol(pm, "IpProtocol", pp), FromPort: r.integer(pm, "FromPort", pp), ToPort: r.integer(pm, "ToPort", pp)}
		each := func(key string, s shape, f func(m map[string]any, path string)) {
			for j, v := range r.list(pm, key, pp) {
				ep := fmt.Sprintf("%s %s[%d]", pp, key, j)
				if em := r.object(v, ep, s, true); em != nil {
					f(em, ep)
				}
			}
		}
		each("IpRanges", ipRangeShape, func(m map[string]any, ep string) {
			p.IpRanges = append(p.IpRanges, IpRange{CidrIp: r.str(m, "CidrIp", ep), Description: r.str(m, "Description", ep)})
		})
		each("Ipv6Ranges", ipv6RangeShape, func(m map[string]any, ep string) {
			p.Ipv6Ranges = append(p.Ipv6Ranges, Ipv6Range{CidrIpv6: r.str(m, "CidrIpv6", ep), Description: r.str(m, "Description", ep)})
		})
		each("PrefixListIds", prefixIDShape, func(m map[string]any, ep string) {
			p.PrefixListIds = append(p.PrefixListIds, PrefixListId{PrefixListId: r.str(m, "PrefixListId", ep), Description: r.str(m, "Description", ep)})
		})
		each("UserIdGroupPairs", pairShape, func(m map[string]any, ep string) {
			p.UserIdGroupPairs = append(p.UserIdGroupPairs, UserIdGroupPair{
				Description: r.str(m, "Description", ep), GroupId: r.str(m, "GroupId", ep), GroupName: r.str(m, "GroupName", ep),
				PeeringStatus: r.str(m, "PeeringStatus", ep), UserId: r.str(m, "UserId", ep), VpcId: r.str(m, "VpcId", ep),
				VpcPeeringConnectionId: r.str(m, "VpcPeeringConnectionId", ep)})
		})
		ps = append(ps, p)
	}
	return ps
}

// ReadPrefixLists reads what aws ec2 describe-managed-prefix-lists prints: the lists' ids
// and names (their entries come from ReadEntries).
func ReadPrefixLists(file string, data []byte) ([]ManagedPrefixList, []string, error) {
	r := &reader{file: file}
	var pls []ManagedPrefixList
	for i, v := range r.page(r.decode(data), "PrefixLists", listsShape, "describe-managed-prefix-lists") {
		path := fmt.Sprintf("PrefixLists[%d]", i)
		m := r.object(v, path, listShape, false)
		if m == nil {
			continue
		}
		pl := ManagedPrefixList{PrefixListId: r.str(m, "PrefixListId", path), PrefixListName: r.str(m, "PrefixListName", path),
			AddressFamily: r.str(m, "AddressFamily", path), OwnerId: r.str(m, "OwnerId", path)}
		if pl.PrefixListId == "" {
			r.bad(path, "no PrefixListId")
		}
		pls = append(pls, pl)
	}
	return pls, r.warnings, r.err()
}

// ReadEntries reads what aws ec2 get-managed-prefix-list-entries prints for one list.
func ReadEntries(file string, data []byte) ([]PrefixListEntry, []string, error) {
	r := &reader{file: file}
	var es []PrefixListEntry
	for i, v := range r.page(r.decode(data), "Entries", entriesShape, "get-managed-prefix-list-entries") {
		path := fmt.Sprintf("Entries[%d]", i)
		if m := r.object(v, path, entryShape, true); m != nil {
			es = append(es, PrefixListEntry{Cidr: r.str(m, "Cidr", path), Description: r.str(m, "Description", path)})
		}
	}
	return es, r.warnings, r.err()
}

// page reads one decoded output of the CLI's command — an object with known keys, the items
// under key — and returns the items. A NextToken means the output is one page of several.
func (r *reader) page(v any, key string, s shape, command string) []any {
	if r.problems != nil { // v did not decode
		return nil
	}
	top := r.object(v, "the file", s, false)
	if top == nil {
		return nil
	}
	if r.str(top, "NextToken", "the file") != "" {
		r.warnings = append(r.warnings, "NextToken is set: this is one page of several; run "+command+" without --max-items, and the CLI reads every page")
	}
	return r.list(top, key, "the file")
}
