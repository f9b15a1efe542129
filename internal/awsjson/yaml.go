package awsjson

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// YAML renders the imported config as README's examples write one: a group a block, a
// rule a line in flow style, the notes as comments. It is written by hand rather than by
// yaml.Marshal so that the notes stand next to what they are about and no line is folded;
// every scalar is quoted where YAML would read it as anything but the string it is.
func (im *Imported) YAML() []byte {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	what := plural(len(im.Groups), "group")
	if len(im.VPCs) > 0 {
		what += " of " + strings.Join(im.VPCs, ", ")
	}
	if im.AccountID != "" {
		what += ", account " + im.AccountID
	}
	w("# sgd config imported from %s by sgd import aws (%s).\n", oneLine(im.Source), what)
	w("# AWS's JSON names no interfaces: add this host's, with the groups each carries, e.g.\n")
	example := "sg-..."
	if len(im.Groups) > 0 && im.Groups[0].GroupID != "" {
		example = scalar(im.Groups[0].GroupID)
	}
	w("#   interfaces:\n#     - {name: eth0, security_groups: [%s]}\n", oneLine(example))
	w("# then: sgd check --config FILE. sgd export aws --config FILE prints these groups back as AWS's JSON.\n")
	w("security_groups:\n")
	for _, g := range im.Groups {
		for _, n := range g.Notes {
			w("  # %s\n", oneLine(n))
		}
		w("  - group_id: %s\n", scalar(g.GroupID))
		if g.GroupName != "" {
			w("    group_name: %s\n", scalar(g.GroupName))
		}
		if g.Description != "" {
			w("    description: %s\n", scalar(g.Description))
		}
		ruleList(&b, "ingress", g.Ingress, g.IngressNotes, "")
		if g.Egress == nil {
			w("    # %s\n", oneLine(g.EgressNote))
		} else {
			ruleList(&b, "egress", *g.Egress, g.EgressNotes, g.EgressNote)
		}
	}
	if len(im.PrefixLists) > 0 {
		w("prefix_lists:\n")
		for _, pl := range im.PrefixLists {
			w("  - prefix_list_id: %s\n", scalar(pl.PrefixListID))
			if pl.Name != "" {
				w("    prefix_list_name: %s\n", scalar(pl.Name))
			}
			if len(pl.Entries) == 0 {
				w("    entries: []\n")
				continue
			}
			w("    entries:\n")
			for i, e := range pl.Entries {
				w("      - %s%s\n", scalar(e), comment(pl.EntryNotes[i]))
			}
		}
	}
	if im.AccountID != "" {
		w("daemon:\n  account_id: %s  # the groups' OwnerId: sgd export aws prints it, flow logs carry it\n", scalar(im.AccountID))
	}
	return []byte(b.String())
}

// ruleList writes one direction of a group: a rule a line, each with its note.
func ruleList(b *strings.Builder, key string, rs []rules.Rule, notes []string, note string) {
	if len(rs) == 0 {
		fmt.Fprintf(b, "    %s: []%s\n", key, comment(note))
		return
	}
	fmt.Fprintf(b, "    %s:%s\n", key, comment(note))
	for i, r := range rs {
		f := []string{"ip_protocol: " + protocolScalar(string(r.IPProtocol))}
		if r.FromPort != nil {
			f = append(f, "from_port: "+strconv.Itoa(*r.FromPort))
		}
		if r.ToPort != nil {
			f = append(f, "to_port: "+strconv.Itoa(*r.ToPort))
		}
		for _, p := range []struct{ k, v string }{
			{"cidr_ipv4", r.CidrIPv4}, {"cidr_ipv6", r.CidrIPv6}, {"prefix_list_id", r.PrefixListID},
			{"referenced_group_id", r.ReferencedGroupID}, {"description", r.Description},
		} {
			if p.v != "" {
				f = append(f, p.k+": "+scalar(p.v))
			}
		}
		fmt.Fprintf(b, "      - {%s}%s\n", strings.Join(f, ", "), comment(notes[i]))
	}
}

func comment(note string) string {
	if note == "" {
		return ""
	}
	return "  # " + oneLine(note)
}

// oneLine keeps a note to one comment line of printable characters (a note quotes the
// input's ids and names, which may hold anything).
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, strings.Join(strings.Fields(s), " "))
}

var (
	plainRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._/+-]*$`)
	protocolRe = regexp.MustCompile(`^-?[A-Za-z0-9]+$`)
)

// scalar writes s as a YAML scalar that reads back as the string s in a flow mapping:
// plain when it is safe (203.0.113.0/24, sg-0123, web servers), double-quoted otherwise
// (::/0, 123456789012, "yes, all", an empty string). Go's quoting escapes are YAML's too.
func scalar(s string) string {
	if plainRe.MatchString(s) && !strings.HasSuffix(s, " ") {
		var m map[string]any
		if yaml.Unmarshal([]byte("{k: "+s+"}"), &m) == nil && m["k"] == s {
			return s
		}
	}
	return strconv.Quote(s)
}

// protocolScalar writes ip_protocol bare when it is a name or a number (-1 as README
// writes it); rules.Protocol reads any scalar.
func protocolScalar(p string) string {
	if protocolRe.MatchString(p) {
		return p
	}
	return strconv.Quote(p)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
