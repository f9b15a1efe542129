package netfilter

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
)

// offloadSpec is the sample of the golden files: a host interface with both policies, a
// port with a TCP policy, and a port never offloaded (zone 0).
var offloadSpec = Spec{Interfaces: []string{"eth0"}, Ports: []string{"vweb0", "vdb0"}, QueueNum: 4, QueueCount: 1,
	Offload: &Offload{
		Zones:    map[string]uint16{"eth0": 1, "vweb0": 2, "vdb0": 0, "gone0": 3},
		Timeouts: map[string][2]string{"eth0": {"sgd-tcp-432000", "sgd-udp-30-180"}, "vweb0": {"sgd-tcp-60", ""}},
	}}

// The offload's rules, whole, in iptables-save's canonical form (TestNetnsOffloadRules
// checks that the kernel lists them so).
func TestRulesOffload(t *testing.T) {
	v4, v6 := New(DefaultOptions()).Rules(offloadSpec)
	for _, g := range []struct {
		file string
		got  []byte
	}{{"testdata/offload.ipv4", v4}, {"testdata/offload.ipv6", v6}} {
		want, err := os.ReadFile(g.file)
		if err != nil {
			t.Fatal(err)
		}
		if string(g.got) != string(want) {
			t.Errorf("Rules(offloadSpec) for %s =\n%s\nwant\n%s", g.file, g.got, want)
		}
	}
	// Without Offload, exactly the rules of before: mangle only, no label, no CT.
	plain := offloadSpec
	plain.Offload = nil
	for _, r := range [][]byte{rules(plain, ipv4), rules(plain, ipv6)} {
		for _, no := range []string{"*raw", "*filter", "connlabel", "FAST", "CT --timeout"} {
			if strings.Contains(string(r), no) {
				t.Errorf("rules without Offload contain %q:\n%s", no, r)
			}
		}
	}
	// Without ports, nothing of the forwarding path, offload or not.
	host := offloadSpec
	host.Ports = nil
	if r := string(rules(host, ipv4)); strings.Contains(r, "FORWARD") || strings.Contains(r, "SAVE-FWD") || strings.Contains(r, "physdev") {
		t.Errorf("rules with Offload and no ports =\n%s\nwant no forwarding path", r)
	}
}

func TestValidateOffload(t *testing.T) {
	spec := func(zones map[string]uint16, timeouts map[string][2]string) Spec {
		return Spec{Interfaces: []string{"eth0", "eth1"}, Ports: []string{"v0"}, QueueCount: 1, Offload: &Offload{Zones: zones, Timeouts: timeouts}}
	}
	long := "sgd-udp-" + strings.Repeat("9", 20)
	for _, tt := range []struct {
		spec Spec
		bad  string
	}{
		{spec(nil, nil), ""},
		{spec(map[string]uint16{"eth0": 1, "eth1": 2, "v0": 127}, nil), ""},
		{spec(map[string]uint16{"eth0": 0, "eth1": 0, "v0": 128}, nil), ""}, // never offloaded, not shared
		{spec(map[string]uint16{"eth0": 1, "gone": 1}, nil), ""},            // gone is not configured
		{spec(map[string]uint16{"eth0": 5, "v0": 5}, nil), `devices "eth0" and "v0" share zone 5`},
		{spec(nil, map[string][2]string{"eth0": {"sgd-tcp-60", ""}, "v0": {"", "sgd-udp-30-60"}}), ""},
		{spec(nil, map[string][2]string{"eth1": {"sgd tcp", ""}}), `device "eth1": timeout policy "sgd tcp": byte ' '`},
		{spec(nil, map[string][2]string{"v0": {"", long}}), "the kernel takes 31"},
		{spec(nil, map[string][2]string{"other": {"bad name", ""}}), ""}, // not configured: ignored
	} {
		err := tt.spec.Validate()
		switch {
		case tt.bad == "" && err != nil:
			t.Errorf("Validate(%+v) = %v; want nil", tt.spec.Offload, err)
		case tt.bad != "" && (err == nil || !strings.Contains(err.Error(), tt.bad)):
			t.Errorf("Validate(%+v) = %v; want an error with %q", tt.spec.Offload, err, tt.bad)
		}
	}
}

// Offload on adds its chains and jumps (raw's at the end of the built-in chains, after
// the user's own CT rules); off takes them away, and the chains and commented jumps of
// older versions' fast paths (the connmark zone field; the host's check chains) with
// them; others' rules stay.
func TestApplyOffloadOnOff(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.table("ipv4", "raw")["PREROUTING"] = []string{"-p udp -m udp --dport 69 -j CT --helper tftp"}
	f.table("ipv4", "filter")["FORWARD"] = []string{"-j DROP"}
	// An older sgd's fast path, left by a crash.
	old := f.table("ipv4", "filter")
	old["INPUT"] = []string{"-m comment --comment sgd -j SGD-SAVE-IN"}
	old[ChainSaveIn] = []string{"-m mark ! --mark 0x0/0xff0000 -j CONNMARK --save-mark --nfmask 0xff0000 --ctmask 0xff0000"}
	oldMangle := f.table("ipv4", "mangle")
	oldMangle["INPUT"] = []string{"-m comment --comment sgd -j SGD-INPUT"}
	oldMangle[ChainInput] = []string{"-m conntrack --ctstate NEW,ESTABLISHED -j SGD-INPUT-FAST"}
	oldMangle[ChainInputFast] = []string{"-i eth0 -m connlabel ! --label \"1\" -j NFQUEUE --queue-num 4"}
	opts := DefaultOptions()
	opts.Runner = f
	m := New(opts)
	if err := m.Apply(ctx, offloadSpec); err != nil {
		t.Fatalf("Apply(offloadSpec) = %v", err)
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		raw := f.state[fam]["raw"]
		if pre := raw["PREROUTING"]; pre[len(pre)-1] != "-j "+ChainRawPre {
			t.Errorf("%s raw PREROUTING = %q; want sgd's jump last", fam, pre)
		}
		if fw := f.state[fam]["filter"]["FORWARD"]; fw[0] != "-m mark --mark 0x800000/0x800000 -j "+ChainSaveFwd {
			t.Errorf("%s filter FORWARD = %q; want sgd's jump, for marked packets, first", fam, fw)
		}
		if len(f.state[fam]["mangle"][ChainForwardFast]) == 0 {
			t.Errorf("%s mangle %s missing or empty", fam, ChainForwardFast)
		}
		for _, c := range []string{ChainInputFast, ChainOutputFast} {
			if _, ok := f.state[fam]["mangle"][c]; ok {
				t.Errorf("%s mangle still has the older version's %s", fam, c)
			}
		}
		for _, c := range []struct{ table, builtin string }{{"filter", "INPUT"}, {"mangle", "INPUT"}} {
			if got := f.state[fam][c.table][c.builtin]; slices.ContainsFunc(got, func(r string) bool { return strings.Contains(r, "comment") }) || len(got) != 1 {
				t.Errorf("%s %s %s = %q; want sgd's one jump, the commented one gone", fam, c.table, c.builtin, got)
			}
		}
		if s := f.state[fam]["filter"][ChainSaveIn]; slices.ContainsFunc(s, func(r string) bool { return strings.Contains(r, "save-mark") }) {
			t.Errorf("%s %s still has the old CONNMARK rule: %q", fam, ChainSaveIn, s)
		}
	}
	if n := f.count("-t filter -I INPUT"); n != 2 {
		t.Errorf("inserted %d filter INPUT jumps; want 2 (ipv4's old one has the old form)", n)
	}
	off := offloadSpec
	off.Offload = nil
	if err := m.Apply(ctx, off); err != nil {
		t.Fatal(err)
	}
	dump := f.dump()
	for _, c := range []string{"SGD-SAVE", "-FAST", "SGD-RAW"} {
		if strings.Contains(dump, c) {
			t.Errorf("after Apply without Offload, ruleset has %s:\n%s", c, dump)
		}
	}
	for _, r := range []string{"ipv4 raw -A PREROUTING -p udp -m udp --dport 69 -j CT --helper tftp\n", "ipv4 filter -A FORWARD -j DROP\n", "ipv4 mangle -A SGD-FORWARD "} {
		if !strings.Contains(dump, r) {
			t.Errorf("after Apply without Offload, %q is gone:\n%s", r, dump)
		}
	}
	if err := m.Apply(ctx, offloadSpec); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if dump := f.dump(); strings.Contains(dump, "SGD") || strings.Contains(dump, "comment sgd") {
		t.Errorf("after Remove:\n%s\nwant nothing of sgd's", dump)
	}
}

// Timeout policies refuse the legacy backend (Manager.checkBackend); without policies it
// is not asked.
func TestOffloadLegacyBackend(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.backend = "legacy"
	opts := DefaultOptions()
	opts.Runner = f
	err := New(opts).Apply(ctx, offloadSpec)
	if err == nil || !strings.Contains(err.Error(), "legacy backend") {
		t.Errorf("Apply with timeouts on legacy = %v; want it refused", err)
	}
	if n := f.count("-restore"); n != 0 {
		t.Errorf("refused Apply ran %d restores; want none", n)
	}
	noPolicies := offloadSpec
	noPolicies.Offload = &Offload{Zones: offloadSpec.Offload.Zones}
	if err := New(opts).Apply(ctx, noPolicies); err != nil {
		t.Errorf("Apply without timeouts on legacy = %v; want nil", err)
	}
}
