package rules

import (
	"errors"
	"strings"
	"testing"
)

// A bare `egress:` is refused: it parses as "omitted" (allow all out) although the writer
// may have meant "none". An explicit null keeps meaning "omitted".
func TestBareEgressRefused(t *testing.T) {
	doc, err := Parse("t.yaml", []byte("security_groups:\n  - group_id: sg-a\n    egress:\ninterfaces:\n  - {name: eth0, security_groups: [sg-a]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Validate(doc, Options{})
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Code != CodeParameterValue || es[0].Field != "egress" || es[0].Line != 3 {
		t.Fatalf("Validate(bare egress) = %v; want one InvalidParameterValue on egress at line 3", err)
	}
	for _, src := range []string{"egress: null", "egress: ~"} {
		doc, err := Parse("t.yaml", []byte("security_groups:\n  - group_id: sg-a\n    "+src+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if m, err := Validate(doc, Options{}); err != nil || len(m.Group("sg-a").Egress) != 2 {
			t.Errorf("Validate(%s) = %v; want AWS's default egress", src, err)
		}
	}
}

// encoding/json matches keys case-insensitively: a second key differing only in case
// would silently replace the first. sgd's keys match exactly; others are unknown fields.
func TestJSONKeyCase(t *testing.T) {
	_, err := Parse("t.json", []byte(`{"security_groups": [{"group_id": "sg-a", "ingress": [
		{"ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_ipv4": "10.0.0.0/8", "CIDR_IPV4": "0.0.0.0/0"}]}]}`))
	if err == nil {
		t.Fatalf("Parse(JSON with CIDR_IPV4) = nil; want UnknownParameter on line 2")
	}
	if es := asErrors(t, err); len(es) != 1 || es[0].Code != CodeUnknownParameter || es[0].Line != 2 || !strings.Contains(es[0].Msg, `"CIDR_IPV4"`) {
		t.Fatalf("Parse(JSON with CIDR_IPV4) = %v; want one UnknownParameter on line 2 naming it", err)
	}
}
