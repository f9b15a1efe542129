package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"testing"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"go.yaml.in/yaml/v3"
)

// CheckLoad is the body of FuzzLoad (load_fuzz_test.go, in package rules_test so that
// it can read the file's daemon: section with internal/settings, which imports this
// package): data goes through the whole config path — Parse with the section sec,
// the section's own validation (settingsErrs), Validate with the quotas the section sets,
// Compile — and a few packets are judged on every interface of what compiles. Nothing
// may panic; errors must be sgd's coded errors; and every verdict must agree with the
// reference evaluator. What Parse accepts is also checked against oracles that share no
// code with it: for JSON (input starting with '{'), every object key encoding/json's
// tokenizer sees is exactly one of the field names of Config or the section; for YAML,
// yaml.v3's own strict decoder (KnownFields) reads the same Config and section.
func CheckLoad(t *testing.T, data []byte, sec Section, settingsErrs func(*Document) Errors, quotas func() Quotas) {
	doc, err := Parse("fuzz", data, sec)
	if err != nil {
		checkCoded(t, err)
		return
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		checkJSONKeys(t, data, sec)
	} else {
		checkYAMLStrict(t, data, &doc.Config, sec)
	}
	if es := settingsErrs(doc); len(es) > 0 {
		checkCoded(t, es)
	}
	m, err := Validate(doc, Options{Quotas: quotas()})
	if err != nil {
		checkCoded(t, err)
		// Unlimited lifts quotas only; a config it accepts must still compile.
		if m, err = Validate(doc, Options{Unlimited: true}); err != nil {
			return
		}
	}
	env := locals("eth0=192.0.2.10", "eth0=2001:db8::10", "eth1=198.51.100.1")
	p, err := Compile(m, env)
	if err != nil {
		t.Fatalf("Compile of a validated model: %v", err)
	}
	if len(p.InterfaceNames()) != len(m.Interfaces) {
		t.Fatalf("InterfaceNames() = %v; want %d interfaces", p.InterfaceNames(), len(m.Interfaces))
	}
	ref := &reference{m: m, locals: env.LocalAddrs}
	for _, k := range fuzzPackets(m) {
		for _, name := range p.InterfaceNames() {
			if !checkAgainstReference(t, p, ref, name, k, "fuzz") {
				t.FailNow()
			}
		}
	}
}

// checkCoded: a rejected config yields *Error or Errors, each with a code.
func checkCoded(t *testing.T, err error) {
	t.Helper()
	var es Errors
	var e *Error
	switch {
	case errors.As(err, &es):
		if len(es) == 0 {
			t.Fatalf("empty Errors")
		}
		for _, e := range es {
			if e.Code == "" {
				t.Fatalf("error without a code: %v", e)
			}
		}
	case errors.As(err, &e):
		if e.Code == "" {
			t.Fatalf("error without a code: %v", e)
		}
	default:
		t.Fatalf("error %v (%T) is not sgd's coded error", err, err)
	}
}

// fuzzPackets: a handful of packets of each kind, to the addresses the model names.
func fuzzPackets(m *Model) []pkt {
	addrs := []netip.Addr{
		netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("203.0.113.5"),
		netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("10.0.2.15"),
	}
	for _, g := range m.Groups {
		for _, list := range [][]NRule{g.Ingress, g.Egress} {
			for _, r := range list {
				if r.Peer.Kind == PeerCIDR && len(addrs) < 12 {
					addrs = append(addrs, r.Peer.Prefix.Addr(), lastAddr(r.Peer.Prefix))
				}
			}
		}
	}
	for _, mb := range m.Members {
		if len(addrs) < 16 {
			addrs = append(addrs, mb.Addr)
		}
	}
	var out []pkt
	for _, a := range addrs {
		for _, d := range []Direction{Ingress, Egress} {
			out = append(out,
				pkt{dir: d, proto: ipproto.TCP, remote: a, port: 22},
				pkt{dir: d, proto: ipproto.UDP, remote: a, port: 53},
				pkt{dir: d, proto: ipproto.ICMP, remote: a, typ: 8},
				pkt{dir: d, proto: ipproto.ICMPv6, remote: a, typ: 128},
				pkt{dir: d, proto: 47, remote: a, port: 1})
		}
	}
	return out
}

// checkJSONKeys: accepted JSON is valid JSON whose every object key is, byte for byte, the
// name of some field of Config or of the section (a folded key like "egreſſ" is in no struct).
func checkJSONKeys(t *testing.T, data []byte, sec Section) {
	t.Helper()
	if !json.Valid(data) {
		t.Fatalf("Parse accepted invalid JSON %q", data)
	}
	names := fieldNames(reflect.TypeFor[Config](), map[string]bool{sec.Key: true})
	fieldNames(reflect.TypeOf(sec.Into), names)
	type frame struct{ object, wantKey bool }
	var stack []frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				stack = append(stack, frame{object: true, wantKey: true})
			case '[':
				stack = append(stack, frame{})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
			continue
		}
		if n := len(stack); n > 0 && stack[n-1].wantKey {
			if key := tok.(string); !names[key] {
				t.Fatalf("Parse accepted JSON key %q, which is no field of Config:\n%s", key, data)
			}
			stack[n-1].wantKey = false
			continue
		}
		valueDone()
	}
}

// fieldNames collects the yaml names of every field of t and the types it holds.
func fieldNames(t reflect.Type, names map[string]bool) map[string]bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return names
	}
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get("yaml"); !names[name] {
			names[name] = true
			fieldNames(t.Field(i).Type, names)
		}
	}
	return names
}

// checkYAMLStrict: yaml.v3's own strict decoder reads accepted YAML as the same Config,
// and the same section, decoding both as fields of one struct.
func checkYAMLStrict(t *testing.T, data []byte, got *Config, sec Section) {
	t.Helper()
	secType := reflect.TypeOf(sec.Into).Elem()
	all := reflect.New(reflect.StructOf([]reflect.StructField{
		{Name: "Config", Type: reflect.TypeFor[Config](), Tag: `yaml:",inline"`},
		{Name: "Section", Type: secType, Tag: reflect.StructTag(`yaml:"` + sec.Key + `"`)},
	}))
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(all.Interface()); err != nil && err != io.EOF {
		t.Fatalf("Parse accepted YAML that yaml.v3 KnownFields refuses (%v):\n%s", err, data)
	}
	want := all.Elem().Field(0).Addr().Interface().(*Config)
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("Parse read %+v; yaml.v3 KnownFields reads %+v:\n%s", *got, *want, data)
	}
	if gotSec, wantSec := reflect.ValueOf(sec.Into).Elem().Interface(), all.Elem().Field(1).Interface(); !reflect.DeepEqual(wantSec, gotSec) {
		t.Fatalf("Parse read the %s section %+v; yaml.v3 KnownFields reads %+v:\n%s", sec.Key, gotSec, wantSec, data)
	}
}
