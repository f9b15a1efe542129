package rules

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Attacks on the loader: keys that read as one field in review and decode as another
// (SPEC 1.5: an ignored or swapped field can leave the host more open than the user
// wrote). Each src reads, to a person, as "sg-a has no egress"; a loader that folds keys
// or keeps the last duplicate gives it an allow-all egress instead. Both formats must
// match keys exactly, as YAML always did, and name the key and its line.
func TestParseStrictKeys(t *testing.T) {
	allOut := `[{"ip_protocol": "-1", "cidr_ipv4": "0.0.0.0/0"}]`
	for _, tt := range []struct {
		name, file, src string
		code            string
		line            int
		key             string // the key the message must name
	}{
		// U+017F LATIN SMALL LETTER LONG S folds to 's': encoding/json took egreſſ for egress.
		{"json long s", "c.json", lines(`{"security_groups": [{"group_id": "sg-a", "egress": [],`,
			`  "egreſſ": `+allOut+`}]}`), CodeUnknownParameter, 2, "egreſſ"},
		{"json long s, escaped", "c.json", lines(`{"security_groups": [{"group_id": "sg-a", "egress": [],`,
			`  "egre\u017f\u017f": `+allOut+`}]}`), CodeUnknownParameter, 2, "egreſſ"},
		{"json long s, top level", "c.json", lines(`{"security_groups": [{"group_id": "sg-a", "egress": []}],`,
			`  "ſecurity_groups": [{"group_id": "sg-a"}]}`), CodeUnknownParameter, 2, "ſecurity_groups"},
		{"json case", "c.json", lines(`{"security_groups": [{"group_id": "sg-a", "egress": [],`,
			`  "Egress": `+allOut+`}]}`), CodeUnknownParameter, 2, "Egress"},
		{"json case, alone", "c.json", lines(`{"Security_Groups": [{"group_id": "sg-a"}]}`), CodeUnknownParameter, 1, "Security_Groups"},
		{"json exact duplicate", "c.json", lines(`{"security_groups": [{"group_id": "sg-a", "egress": [],`,
			`  "egress": `+allOut+`}]}`), CodeMalformedConfig, 2, "egress"},
		{"json duplicate through an escape", "c.json", lines(`{"security_groups": [{"group_id": "sg-a", "egress": [],`,
			`  "\u0065gress": `+allOut+`}]}`), CodeMalformedConfig, 2, "egress"},
		{"json merge key is a plain key", "c.json", lines(`{"security_groups": [{"group_id": "sg-a", "egress": [],`,
			`  "<<": {"egress": `+allOut+`}}]}`), CodeUnknownParameter, 2, "<<"},
		{"yaml long s", "c.yaml", lines("security_groups:", "  - group_id: sg-a", "    egress: []",
			"    egreſſ: "+allOut), CodeUnknownParameter, 4, "egreſſ"},
		{"yaml case", "c.yaml", lines("security_groups:", "  - group_id: sg-a", "    egress: []",
			"    Egress: "+allOut), CodeUnknownParameter, 4, "Egress"},
		{"yaml exact duplicate", "c.yaml", lines("security_groups:", "  - group_id: sg-a", "    egress: []",
			"    egress: "+allOut), CodeMalformedConfig, 4, "egress"},
		{"yaml duplicate, quoted", "c.yaml", lines("security_groups:", "  - group_id: sg-a", "    egress: []",
			`    "egress": `+allOut), CodeMalformedConfig, 4, "egress"},
		// !!binary ZWdyZXNz is base64 for "egress": a key a reviewer cannot read.
		{"yaml binary key", "c.yaml", lines("security_groups:", "  - group_id: sg-a",
			"    !!binary ZWdyZXNz: "+allOut), CodeMalformedConfig, 3, "ZWdyZXNz"},
		{"yaml merge twice", "c.yaml", lines("security_groups:", "  - group_id: sg-a",
			"    <<: {egress: []}", "    <<: {egress: "+allOut+"}"), CodeMalformedConfig, 4, "<<"},
		{"yaml merged key unknown", "c.yaml", lines("security_groups:", "  - group_id: sg-a",
			"    <<: {Egress: "+allOut+"}"), CodeUnknownParameter, 3, "Egress"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.file, []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse(%q) = nil; want %s at line %d naming %q", tt.src, tt.code, tt.line, tt.key)
			}
			e := asErrors(t, err)[0]
			if e.Code != tt.code || e.Line != tt.line || !strings.Contains(e.Msg, fmt.Sprintf("%q", tt.key)) {
				t.Errorf("Parse(%q) = %v; want %s at line %d naming %q", tt.src, err, tt.code, tt.line, tt.key)
			}
		})
	}
}

// Values are read as written or refused: yaml.v3 alone would truncate 22.5 to port 22 and
// read yes/on as true; JSON has neither. Where a mapping, list or value is wanted, nothing
// else is taken.
func TestParseStrictValues(t *testing.T) {
	for _, tt := range []struct {
		name, file, src string
		line            int
	}{
		{"yaml fractional port", "c.yaml", rule1("{ip_protocol: tcp, from_port: 21.5, to_port: 22, cidr_ipv4: 10.0.0.0/8}"), 4},
		{"yaml icmp type -1.5", "c.yaml", rule1("{ip_protocol: icmp, from_port: -1.5, to_port: -1, cidr_ipv4: 10.0.0.0/8}"), 4},
		{"yaml exponent port", "c.yaml", rule1("{ip_protocol: tcp, from_port: 2e1, to_port: 22, cidr_ipv4: 10.0.0.0/8}"), 4},
		{"json fractional port", "c.json", `{"security_groups": [{"group_id": "sg-a", "ingress": [{"ip_protocol": "tcp", "from_port": 21.5, "to_port": 22, "cidr_ipv4": "10.0.0.0/8"}]}]}`, 1},
		{"yaml binary value", "c.yaml", rule1("{ip_protocol: -1, cidr_ipv4: !!binary MC4wLjAuMC8w}"), 4},
		{"json protocol as list", "c.json", lines(`{"security_groups": [{"group_id": "sg-a",`, `"ingress": [{"ip_protocol": ["tcp"]}]}]}`), 2},
		{"json groups as object", "c.json", lines(`{`, `"security_groups": {"group_id": "sg-a"}}`), 2},
		{"json text as object", "c.json", lines(`{"security_groups": [{"group_id": {"a": 1, "a": 2}}]}`), 1},
		{"json top level not an object", "c.json", `{"security_groups": []} []`, 0},
		{"json too deep", "c.json", strings.Repeat(`{"a": [`, 40) + strings.Repeat(`]}`, 40), 1},
		{"json not UTF-8", "c.json", "{\"security_groups\": [{\"group_id\": \"sg-\xff\"}]}", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.file, []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse(%q) = nil; want %s at line %d", tt.src, CodeMalformedConfig, tt.line)
			}
			if e := asErrors(t, err)[0]; e.Code != CodeMalformedConfig || e.Line != tt.line {
				t.Errorf("Parse(%q) = %v; want %s at line %d", tt.src, err, CodeMalformedConfig, tt.line)
			}
		})
	}
}

// Valid JSON is read as JSON means it, even where yaml.v3's own parser would refuse it
// (\/ escapes, surrogate pairs, a key's colon on the next line, tabs), and integers in any
// JSON spelling of an integer.
func TestParseJSONGrammar(t *testing.T) {
	src := "{\"security_groups\":\n\t[{\"group_id\"\n\t:\"sg-a\", \"description\": \"a\\/b\", \"group_name\": \"x\\ud83d\\ude00\",\n" +
		"\t\"ingress\": [{\"ip_protocol\": 6, \"from_port\": -0, \"to_port\": 22, \"cidr_ipv4\": \"10.0.0.0/8\"}]}]}"
	doc, err := Parse("c.json", []byte(src))
	if err != nil {
		t.Fatalf("Parse(%q) = %v; want no error", src, err)
	}
	g := doc.Config.SecurityGroups[0]
	if g.Description != "a/b" || g.GroupName != "x\U0001F600" || *g.Ingress[0].FromPort != 0 || g.Ingress[0].IPProtocol != "6" {
		t.Errorf("Parse(%q) = %+v; want description a/b, name x😀, from_port 0, protocol 6", src, g)
	}
	if got := doc.line("security_groups", 0, "ingress", 0, "to_port"); got != 4 {
		t.Errorf("line(to_port) = %d; want 4", got)
	}
}

// A mapping full of unknown or repeated keys is refused quickly with a bounded list of
// problems; yaml.v3's duplicate scan is quadratic in the keys of one mapping.
func TestParseManyKeys(t *testing.T) {
	var y, j strings.Builder
	j.WriteString("{")
	for i := range 50000 {
		fmt.Fprintf(&y, "k%d: 0\n", i)
		fmt.Fprintf(&j, `"k%d": 0, `, i)
	}
	j.WriteString(`"k": 0}`)
	for _, f := range []struct{ file, src string }{{"c.yaml", y.String()}, {"c.json", j.String()}} {
		start := time.Now()
		_, err := Parse(f.file, []byte(f.src))
		if err == nil {
			t.Fatalf("Parse(%s, 50000 unknown keys) = nil; want errors", f.file)
		}
		if n := len(asErrors(t, err)); n > maxParseErrors+1 {
			t.Errorf("Parse(%s, 50000 unknown keys) = %d errors; want at most %d", f.file, n, maxParseErrors+1)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Parse(%s, 50000 unknown keys) took %v", f.file, d)
		}
	}
}

// JSON is decoded by yaml tags (one decoder for both formats); the json tags, used to
// print configs as JSON, must say the same, with no options that would change a name.
func TestConfigTags(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] {
			return
		}
		seen[typ] = true
		for i := range typ.NumField() {
			f := typ.Field(i)
			y, j := f.Tag.Get("yaml"), f.Tag.Get("json")
			if y == "" || y != j || strings.ContainsAny(y, ",-") {
				t.Errorf("%s.%s tags yaml:%q json:%q; want one plain snake_case name, the same in both", typ.Name(), f.Name, y, j)
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[Config]())
}

// The config file is read only if it is a regular file (after symlinks) of at most
// MaxConfigSize bytes: a FIFO would block the reload forever, /dev/zero or a huge file
// would take the daemon's memory.
func TestLoadFileRefuses(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	write := func(name string, size int) string {
		b := []byte(strings.Repeat("# padding line\n", size/15+1)[:size])
		if err := os.WriteFile(path(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path(name)
	}
	if err := syscall.Mkfifo(path("fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("fifo", path("fifo-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(write("ok.yaml", MaxConfigSize), path("ok-link")); err != nil {
		t.Fatal(err)
	}
	big := write("big.yaml", MaxConfigSize+1)
	for _, tt := range []struct {
		path string
		want string // in the message; "" = loads
	}{
		{path("fifo"), "is a FIFO"},
		{path("fifo-link"), "is a FIFO"},
		{"/dev/zero", "is a device"},
		{"/dev/null", "is a device"},
		{dir, "is a directory"},
		{big, fmt.Sprintf("is %d bytes; the limit is %d", MaxConfigSize+1, MaxConfigSize)},
		{path("ok-link"), ""},
		{path("ok.yaml"), ""},
	} {
		done := make(chan error, 1)
		go func() { _, err := LoadFile(tt.path); done <- err }()
		var err error
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("LoadFile(%q) still blocked after 5 s; want %q", tt.path, tt.want)
		}
		if tt.want == "" {
			if err != nil {
				t.Errorf("LoadFile(%q) = %v; want no error", tt.path, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("LoadFile(%q) = nil; want %s %q", tt.path, CodeMalformedConfig, tt.want)
			continue
		}
		if e := asErrors(t, err)[0]; e.Code != CodeMalformedConfig || !strings.Contains(e.Msg, tt.want) || e.File != tt.path {
			t.Errorf("LoadFile(%q) = %v; want %s %q", tt.path, err, CodeMalformedConfig, tt.want)
		}
	}
}

// A file that grows while it is read (the size said at open was small) is caught by the
// read itself, which never takes more than MaxConfigSize+1 bytes.
func TestReadCapped(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{MaxConfigSize, ""},
		{MaxConfigSize + 1, "grew past"},
		{1 << 40, "grew past"}, // endless, like /dev/zero
	} {
		data, err := readCapped("c.yaml", &zeros{n: tt.n})
		switch {
		case tt.want == "" && (err != nil || int64(len(data)) != tt.n):
			t.Errorf("readCapped(%d bytes) = %d bytes, %v; want all of it", tt.n, len(data), err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || len(data) > 0):
			t.Errorf("readCapped(%d bytes) = %d bytes, %v; want an error saying %q", tt.n, len(data), err, tt.want)
		}
	}
}

// zeros reads n zero bytes, then EOF.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

// Parse refuses oversized bytes too, whoever hands them in.
func TestParseSizeLimit(t *testing.T) {
	src := []byte(strings.Repeat("#\n", MaxConfigSize/2) + "#")
	if _, err := Parse("c.yaml", src); err == nil || asErrors(t, err)[0].Code != CodeMalformedConfig {
		t.Errorf("Parse(%d bytes) = %v; want %s", len(src), err, CodeMalformedConfig)
	}
}
