package rules

import (
	"errors"
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
