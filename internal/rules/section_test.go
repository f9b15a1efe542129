package rules

import (
	"strings"
	"testing"
)

// A Section is another package's part of the one file (the daemon's settings): checked as
// strictly as the rest, in the same pass, decoded into its own type — through YAML merge
// keys and aliases too — and invisible to Config.
func TestParseSections(t *testing.T) {
	type extra struct {
		Name  string `yaml:"name"`
		Count *int   `yaml:"count"`
	}
	parse := func(src string) (*Document, extra, error) {
		var x extra
		doc, err := Parse("c.yaml", []byte(src), Section{Key: "extra", Into: &x})
		return doc, x, err
	}
	doc, x, err := parse(lines("security_groups: [{group_id: sg-a}]", "extra: {name: n, count: 3}"))
	if err != nil || x.Name != "n" || x.Count == nil || *x.Count != 3 || len(doc.Config.SecurityGroups) != 1 {
		t.Errorf("Parse = %+v, %v; want the section decoded beside the config", x, err)
	}
	if _, x, err = parse(lines("<<: {extra: {name: merged}}")); err != nil || x.Name != "merged" {
		t.Errorf("Parse(merged section) = %+v, %v; want it decoded", x, err)
	}
	// Problems in a section and in the config are one list, in the file's order.
	_, _, err = parse(lines("extra:", "  nmae: n", "security_groups: [{group_id: sg-a, bogus: 1}]", "extra2: {}", "  "))
	es := asErrors(t, err)
	if len(es) != 3 || es[0].Line != 2 || es[1].Line != 3 || es[2].Line != 4 || !strings.Contains(es[2].Msg, `"extra2"`) {
		t.Errorf("Parse = %v; want unknown fields at lines 2, 3 and 4", es)
	}
	// Without the section, its key is an unknown field like any other.
	if _, err := Parse("c.yaml", []byte("extra: {name: n}\n")); err == nil || asErrors(t, err)[0].Code != CodeUnknownParameter {
		t.Errorf("Parse without the section = %v; want %s", err, CodeUnknownParameter)
	}
}

// ValidateConfig takes a config from anywhere: with no Locator, errors say where in the
// model (group, rule, field) and nothing of a file.
func TestValidateConfigWithoutLocator(t *testing.T) {
	from, to := 23, 22
	_, err := ValidateConfig(&Config{SecurityGroups: []Group{{GroupID: "sg-a",
		Ingress: []Rule{{IPProtocol: "tcp", FromPort: &from, ToPort: &to, CidrIPv4: "0.0.0.0/0"}}}}}, nil, Options{})
	want := "group sg-a ingress[0] from_port: InvalidPermission.Malformed: from_port 23 is greater than to_port 22"
	if err == nil || err.Error() != want {
		t.Errorf("ValidateConfig = %v; want %q", err, want)
	}
}
