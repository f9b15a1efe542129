package awsjson

import (
	"slices"
	"strings"
	"testing"
)

func TestReadSecurityGroups(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		groups    int
		problems  []string // ReadError's, "" for none
		warnings  []string
	}{
		{"the whole output", `{"SecurityGroups": [{"GroupId": "sg-1"}, {"GroupId": "sg-2"}]}`, 2, nil, nil},
		{"one group of it", `{"GroupId": "sg-1", "IpPermissions": []}`, 1, nil, nil},
		{"the list (--query SecurityGroups)", `[{"GroupId": "sg-1"}]`, 1, nil, nil},
		{"the CLI's --output yaml", "SecurityGroups:\n- GroupId: sg-1\n  IpPermissions:\n  - IpProtocol: '-1'\n    IpRanges:\n    - CidrIp: 10.0.0.0/8\n", 1, nil, nil},
		{"YAML with a bare protocol number", "GroupId: sg-1\nIpPermissions:\n- {IpProtocol: -1, IpRanges: [{CidrIp: 10.0.0.0/8}]}\n", 1, nil, nil},
		{"one page of many", `{"SecurityGroups": [], "NextToken": "abc"}`, 0, nil,
			[]string{"NextToken is set: this is one page of several; run describe-security-groups without --max-items, and the CLI reads every page"}},
		{"a group field sgd does not know is left out", `{"SecurityGroups": [{"GroupId": "sg-1", "Colour": "blue"}]}`, 1, nil,
			[]string{`SecurityGroups[0] (sg-1): field "Colour" is not one sgd knows; left out`}},
		{"a permission field sgd does not know is refused", `{"SecurityGroups": [{"GroupId": "sg-1", "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 1, "Except": []}]}]}`, 1,
			[]string{`SecurityGroups[0] (sg-1) IpPermissions[0]: unknown field "Except" (the EC2 API's IpPermission has FromPort, IpProtocol, IpRanges, Ipv6Ranges, PrefixListIds, ToPort, UserIdGroupPairs): sgd cannot tell what it allows`}, nil},
		{"so is a peer's", `{"GroupId": "sg-1", "IpPermissionsEgress": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0", "Negate": true}]}]}`, 1,
			[]string{`SecurityGroups[0] (sg-1) IpPermissionsEgress[0] IpRanges[0]: unknown field "Negate" (the EC2 API's IpRange has CidrIp, Description): sgd cannot tell what it allows`}, nil},
		{"keys are exact", `{"GroupId": "sg-1", "IpPermissions": [{"ipprotocol": "tcp"}]}`, 1,
			[]string{`SecurityGroups[0] (sg-1) IpPermissions[0]: unknown field "ipprotocol" (the EC2 API's IpPermission has FromPort, IpProtocol, IpRanges, Ipv6Ranges, PrefixListIds, ToPort, UserIdGroupPairs): sgd cannot tell what it allows`}, nil},
		{"types", `{"GroupId": 7, "IpPermissions": [{"IpProtocol": "tcp", "FromPort": "22", "ToPort": 22.5, "IpRanges": {"CidrIp": "x"}}]}`, 1, []string{
			`SecurityGroups[0] GroupId: want a string, not the number 7`,
			`SecurityGroups[0] IpPermissions[0] FromPort: want a whole number, not "22"`,
			`SecurityGroups[0] IpPermissions[0] ToPort: want a whole number, not 22.5`,
			`SecurityGroups[0] IpPermissions[0] IpRanges: want a list, not an object`,
		}, nil},
		{"an sgd config", "security_groups:\n  - group_id: sg-1\n", 0,
			[]string{"the file: is not describe-security-groups output: it has no SecurityGroups (nor a group's GroupId or IpPermissions)"}, nil},
		{"not JSON", `{"SecurityGroups": [`, 0, []string{"the file: is not valid JSON: unexpected EOF"}, nil},
		{"two values", `{} {}`, 0, []string{"the file: is not valid JSON: more than one JSON value"}, nil},
		{"empty", " \n", 0, []string{"the file: is empty"}, nil},
		{"a string", `"sg-1"`, 0, []string{`the file: want describe-security-groups output ({"SecurityGroups": [...]}), not "sg-1"`}, nil},
	} {
		gs, ws, err := ReadSecurityGroups("in.json", []byte(c.doc))
		var problems []string
		if re, ok := err.(*ReadError); ok {
			problems = re.Problems
		} else if err != nil {
			t.Errorf("%s: ReadSecurityGroups = %v; want a *ReadError", c.name, err)
		}
		if len(gs) != c.groups || !slices.Equal(problems, c.problems) || !slices.Equal(ws, c.warnings) {
			t.Errorf("%s: ReadSecurityGroups(%s) = %d groups, problems %q, warnings %q; want %d, %q, %q",
				c.name, c.doc, len(gs), problems, ws, c.groups, c.problems, c.warnings)
		}
	}
}

func TestReadPrefixListsAndEntries(t *testing.T) {
	pls, ws, err := ReadPrefixLists("pl.json", []byte(`{"PrefixLists": [{"PrefixListId": "pl-1", "PrefixListName": "corp", "AddressFamily": "IPv4", "NewField": 1}]}`))
	if err != nil || len(pls) != 1 || pls[0].PrefixListName != "corp" || !slices.Equal(ws, []string{`PrefixLists[0]: field "NewField" is not one sgd knows; left out`}) {
		t.Errorf("ReadPrefixLists = %+v, %q, %v", pls, ws, err)
	}
	es, _, err := ReadEntries("e.json", []byte(`{"Entries": [{"Cidr": "10.0.0.0/8", "Description": "ten"}, {"Cidr": "2001:db8::/32"}]}`))
	if err != nil || !slices.Equal(es, []PrefixListEntry{{"10.0.0.0/8", "ten"}, {"2001:db8::/32", ""}}) {
		t.Errorf("ReadEntries = %+v, %v", es, err)
	}
	_, _, err = ReadEntries("e.json", []byte(`{"Entries": [{"Cidr": "10.0.0.0/8", "Except": "10.1.0.0/16"}]}`))
	if err == nil || !strings.Contains(err.Error(), `e.json: Entries[0]: unknown field "Except" (the EC2 API's PrefixListEntry has Cidr, Description)`) {
		t.Errorf("ReadEntries(unknown field) = %v", err)
	}
	if _, _, err = ReadPrefixLists("pl.json", []byte(`[`)); err == nil || err.Error() != "pl.json: the file: is not valid JSON: unexpected EOF" {
		t.Errorf("ReadPrefixLists([) = %v", err)
	}
}
