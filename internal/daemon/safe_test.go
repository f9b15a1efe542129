package daemon

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/nfqueue"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
)

// policy compiles cfg.
func policy(t *testing.T, cfg string) *rules.Policy {
	t.Helper()
	doc, err := rules.Parse("t.yaml", []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	m, err := rules.Validate(doc, rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := rules.Compile(m, rules.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// CheckInterfaces refuses a config that lists no interface and one naming a device
// this host lacks (naming it, and the devices there are), unless missing ones are
// allowed. sgdt-none0 never exists; a device of the machine the test runs on stands for
// one that does.
func TestCheckInterfaces(t *testing.T) {
	have, err := hostDevices()
	if err != nil {
		t.Fatal(err)
	}
	present := ""
	for n := range have {
		if n != "lo" && (present == "" || n < present) {
			present = n
		}
	}
	if present == "" {
		t.Skip("this machine has no network device but lo")
	}
	ifaces := func(names ...string) *rules.Policy {
		cfg := "security_groups: [{group_id: sg-a}]\ninterfaces:\n"
		for _, n := range names {
			cfg += "  - {name: " + n + ", security_groups: [sg-a]}\n"
		}
		if len(names) == 0 {
			cfg = "security_groups: [{group_id: sg-a}]\n"
		}
		return policy(t, cfg)
	}
	for _, tc := range []struct {
		names        []string
		allowMissing bool
		missing      string // joined by ","
		err          string // "" for none
	}{
		{nil, false, "", "the config filters nothing: it lists no interfaces"},
		{nil, true, "", "the config filters nothing: it lists no interfaces"},
		{[]string{present}, false, "", ""},
		{[]string{present, "sgdt-none0"}, false, "sgdt-none0", "interface sgdt-none0 does not exist on this host (its devices: " + present},
		{[]string{"sgdt-none0", "sgdt-none1"}, false, "sgdt-none0,sgdt-none1", "interfaces sgdt-none0, sgdt-none1 do not exist"},
		{[]string{present, "sgdt-none0"}, true, "sgdt-none0", ""},
	} {
		missing, err := CheckInterfaces(ifaces(tc.names...), tc.allowMissing)
		if got := strings.Join(missing, ","); got != tc.missing || (err == nil) != (tc.err == "") ||
			(err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("CheckInterfaces(%v, allow missing %v) = %q, %v; want %q and an error containing %q",
				tc.names, tc.allowMissing, got, err, tc.missing, tc.err)
		}
		if tc.names != nil && err != nil && !strings.Contains(err.Error(), "allow_missing_interfaces") {
			t.Errorf("CheckInterfaces(%v) = %v; want it to name allow_missing_interfaces", tc.names, err)
		}
	}
}

// A reload to a config that lists no interface is refused before anything is published.
func TestGuard(t *testing.T) {
	if err := (guard{}).Check(policy(t, "security_groups: [{group_id: sg-a}]\n")); !errors.Is(err, ErrFiltersNothing) {
		t.Errorf("guard.Check(no interfaces) = %v; want ErrFiltersNothing", err)
	}
	if err := (guard{}).Check(policy(t, sshOnly)); err != nil {
		t.Errorf("guard.Check(eth0) = %v; want nil", err)
	}
}

// In audit mode the datapath accepts what the judge drops, logs it as "would drop" and
// labels it would_drop; what the judge accepts is accepted either way. The judge itself
// is the same: the denied SYN is counted as a drop, and starts no flow.
func TestAuditVerdict(t *testing.T) {
	for _, audit := range []bool{false, true} {
		core, logs := observer.New(zap.InfoLevel)
		d := &Daemon{set: settings.Daemon{Audit: audit}, log: zap.New(core)}
		w, table := judge(t, sshOnly)
		r := &reader{d: d, w: w, audit: d.set.Audit, drops: limiter{rate: 10}}
		handle := func(src string) nfqueue.Verdict {
			return r.Handle(&nfqueue.Packet{InDev: 2, Payload: syn(src)})
		}
		if v := handle("198.51.100.7"); !v.Accept {
			t.Errorf("audit %v: Handle(allowed SYN) = %+v; want accept", audit, v)
		}
		if v := handle("203.0.113.9"); v.Accept != audit {
			t.Errorf("audit %v: Handle(denied SYN) = %+v; want accept %v", audit, v, audit)
		}
		want, label := "dropped", "drop"
		if audit {
			want, label = "would drop", "would_drop"
		}
		if got := logs.FilterMessage(want).Len(); got != 1 || logs.Len() != 1 {
			t.Errorf("audit %v: %d %q lines of %d logged; want 1 of 1", audit, got, want, logs.Len())
		}
		if got := d.verdict(filter.ReasonNoRule); got != label {
			t.Errorf("audit %v: verdict(no_rule) = %q; want %q", audit, got, label)
		}
		if got := d.verdict(filter.ReasonRule); got != "accept" {
			t.Errorf("audit %v: verdict(rule) = %q; want accept", audit, got)
		}
		if n := w.C.Packets[filter.DirIngress][filter.ReasonNoRule].Load(); n != 1 {
			t.Errorf("audit %v: judge counted %d no_rule drops; want 1", audit, n)
		}
		if tcp, _, _, _ := table.CountByProto(); tcp != 1 {
			t.Errorf("audit %v: %d TCP flows tracked; want 1 (the allowed SYN's; the denied one starts none)", audit, tcp)
		}
	}
}

// No SSH session, or one that ends on another host (or in another network namespace),
// gets no lock-out warning: it is not this sgd's to cut. (One it would cut: test/netns
// TestAdoptEstablished.)
func TestLockoutWarningElsewhere(t *testing.T) {
	p := policy(t, sshOnly)
	for _, conn := range []string{"", "garbage", "203.0.113.9 50000 198.51.100.250 22"} {
		if w := LockoutWarning(p, true, true, conn); w != "" {
			t.Errorf("LockoutWarning(%q) = %q; want none", conn, w)
		}
	}
}
