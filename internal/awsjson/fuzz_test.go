package awsjson

import (
	"slices"
	"testing"

	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
)

// FuzzImport: whatever ReadSecurityGroups accepts, Import prints YAML that sgd's loader
// parses (no quoting mistake can turn a value into another or a key into an unknown
// field); when the printed config is valid, export and import again change nothing.
func FuzzImport(f *testing.F) {
	for _, name := range []string{"describe-security-groups.json", "cli-example-vpc.json"} {
		f.Add(readFixture(f, name))
	}
	f.Add([]byte(`{"GroupId": "sg-1", "GroupName": "a: b", "Description": "#x", "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 1, "ToPort": 2, "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "\"q\", {x}\n"}]}], "IpPermissionsEgress": []}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		groups, _, err := ReadSecurityGroups("in.json", data)
		if err != nil {
			return
		}
		printed := Import(Sources{File: "in.json", Groups: groups}).YAML()
		var sec settings.Section
		doc, err := rules.Parse("imported.yaml", printed, sec.Of())
		if err != nil {
			t.Fatalf("the printed config does not parse: %v\n%s", err, printed)
		}
		m, err := rules.ValidateConfig(&doc.Config, doc, rules.Options{Quotas: sec.Quotas()})
		if err != nil || len(sec.Validate(doc)) > 0 {
			return
		}
		out := Export(m, sec.AccountID)
		js, err := JSON(out)
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := ReadSecurityGroups("exported.json", js)
		if err != nil {
			t.Fatalf("the export does not read back: %v\n%s", err, js)
		}
		m2, sec2 := load(t, "again.yaml", Import(Sources{File: "exported.json", Groups: again}).YAML())
		if a, b := permissions(out.SecurityGroups), permissions(Export(m2, sec2.AccountID).SecurityGroups); !slices.Equal(a, b) {
			t.Fatalf("export, import, export changed the permissions:\n%q\n%q", a, b)
		}
	})
}
