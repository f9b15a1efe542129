package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// Tiny helpers shared by the tests of this package: build a policy from a YAML snippet,
// describe a packet in one call (tcp("203.0.113.5", 80)), and judge it.

// pkt is the first packet of a flow as Iface.Decide sees it. The zero direction is
// ingress; wrap a packet in out(...) for egress.
type pkt struct {
	dir       Direction
	proto     uint8
	remote    netip.Addr
	port      uint16
	typ, code uint8
}

func (k pkt) String() string {
	switch k.proto {
	case ipproto.TCP, ipproto.UDP:
		return fmt.Sprintf("%s %s %s port %d", k.dir, ipproto.Name(int(k.proto)), k.remote, k.port)
	case ipproto.ICMP, ipproto.ICMPv6:
		return fmt.Sprintf("%s %s %s type %d code %d", k.dir, ipproto.Name(int(k.proto)), k.remote, k.typ, k.code)
	}
	return fmt.Sprintf("%s proto %d %s port %d", k.dir, k.proto, k.remote, k.port)
}

func tcp(remote string, port uint16) pkt {
	return pkt{proto: ipproto.TCP, remote: netip.MustParseAddr(remote), port: port}
}

func udp(remote string, port uint16) pkt {
	return pkt{proto: ipproto.UDP, remote: netip.MustParseAddr(remote), port: port}
}

func icmp(remote string, typ, code uint8) pkt {
	return pkt{proto: ipproto.ICMP, remote: netip.MustParseAddr(remote), typ: typ, code: code}
}

func icmp6(remote string, typ, code uint8) pkt {
	return pkt{proto: ipproto.ICMPv6, remote: netip.MustParseAddr(remote), typ: typ, code: code}
}

// protoPkt is a packet of any protocol number; port is what a port-ful protocol would carry
// (rules for protocols other than tcp/udp must ignore it).
func protoPkt(n uint8, remote string, port uint16) pkt {
	return pkt{proto: n, remote: netip.MustParseAddr(remote), port: port}
}

func out(k pkt) pkt { k.dir = Egress; return k }

// verdict is what a test expects of Decide: the label ("sg-web/ingress/2") of the first
// rule that allows the packet ("" = denied) and whether the flow is untracked.
type verdict struct {
	rule      string
	untracked bool
}

func (v verdict) String() string {
	switch {
	case v.rule == "":
		return "DENY"
	case v.untracked:
		return "ALLOW " + v.rule + " untracked"
	}
	return "ALLOW " + v.rule
}

// allow, allowU and deny spell verdicts in table rows.
func allow(label string) verdict  { return verdict{rule: label} }
func allowU(label string) verdict { return verdict{rule: label, untracked: true} }

var deny = verdict{}

// decide runs Iface.Decide and turns the answer into a verdict.
func decide(t testing.TB, p *Policy, iface string, k pkt) verdict {
	t.Helper()
	itf := p.Interface(iface)
	if itf == nil {
		t.Fatalf("Interface(%q) = nil; want the interface", iface)
	}
	id, untracked := itf.Decide(k.dir, k.proto, k.remote, k.port, k.typ, k.code)
	if id == 0 {
		if untracked {
			return verdict{rule: "", untracked: true} // a bug: shows as "ALLOW  untracked"
		}
		return deny
	}
	if int(id) >= len(p.Rules) {
		t.Fatalf("Decide(%v) = rule %d; the policy has %d rules", k, id, len(p.Rules)-1)
	}
	return verdict{rule: p.Rules[id].Label, untracked: untracked}
}

// locals builds an Env from "iface=addr" pairs.
func locals(pairs ...string) Env {
	m := map[string][]netip.Addr{}
	for _, s := range pairs {
		name, addr, ok := strings.Cut(s, "=")
		if !ok {
			panic("locals: want iface=addr, got " + s)
		}
		m[name] = append(m[name], netip.MustParseAddr(addr))
	}
	return Env{LocalAddrs: func(iface string) []netip.Addr { return m[iface] }}
}

// model parses and validates src with opt, failing the test on any error.
func model(t testing.TB, src string, opt Options) *Model {
	t.Helper()
	doc, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, src)
	}
	m, err := Validate(doc, opt)
	if err != nil {
		t.Fatalf("Validate: %v\n%s", err, src)
	}
	return m
}

// policy parses, validates (AWS quotas) and compiles src.
func policy(t testing.TB, src string, env Env) *Policy {
	t.Helper()
	p, err := Compile(model(t, src, Options{}), env)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

// configErrors parses and validates src and returns the errors, failing the test when
// there are none. Parse errors and validation errors both count.
func configErrors(t testing.TB, name, src string, opt Options) Errors {
	t.Helper()
	doc, err := Parse(name, []byte(src))
	if err == nil {
		_, err = Validate(doc, opt)
	}
	if err == nil {
		t.Fatalf("config accepted; want an error\n%s", src)
	}
	return asErrors(t, err)
}

// asErrors flattens an *Error or Errors.
func asErrors(t testing.TB, err error) Errors {
	t.Helper()
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var e *Error
	if errors.As(err, &e) {
		return Errors{e}
	}
	t.Fatalf("error %v (%T) is neither *Error nor Errors", err, err)
	return nil
}

// group wraps rule lines into a one-group config on eth0: a quick way to test a rule.
// ingress and egress are YAML flow sequences ("[...]"); egress "" leaves it omitted.
func group(ingress, egress string) string {
	s := "security_groups:\n  - group_id: sg-a\n    ingress: " + ingress + "\n"
	if egress != "" {
		s += "    egress: " + egress + "\n"
	}
	return s + "interfaces:\n  - {name: eth0, security_groups: [sg-a]}\n"
}

// specExample is the configuration of SPEC 2.1, verbatim.
func specExample(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("testdata/spec-example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
