package netfilter

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestRules(t *testing.T) {
	tests := []struct {
		name   string
		spec   Spec
		v4, v6 string
	}{
		{
			name: "one interface, one queue, fail-closed, no DHCP exemption",
			spec: Spec{Interfaces: []string{"eth0"}, QueueNum: 0, QueueCount: 1},
			v4: `*mangle
:SGD-INPUT - [0:0]
:SGD-OUTPUT - [0:0]
-A SGD-INPUT -i lo -j RETURN
-A SGD-INPUT -i eth0 -j NFQUEUE --queue-num 0
-A SGD-OUTPUT -o lo -j RETURN
-A SGD-OUTPUT -o eth0 -j NFQUEUE --queue-num 0
COMMIT
`,
			v6: `*mangle
:SGD-INPUT - [0:0]
:SGD-OUTPUT - [0:0]
-A SGD-INPUT -i lo -j RETURN
-A SGD-INPUT -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED
-A SGD-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN
-A SGD-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 134 -j RETURN
-A SGD-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN
-A SGD-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN
-A SGD-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 137 -j RETURN
-A SGD-INPUT -i eth0 -j NFQUEUE --queue-num 0
-A SGD-OUTPUT -o lo -j RETURN
-A SGD-OUTPUT -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED
-A SGD-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN
-A SGD-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 134 -j RETURN
-A SGD-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN
-A SGD-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN
-A SGD-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 137 -j RETURN
-A SGD-OUTPUT -o eth0 -j NFQUEUE --queue-num 0
COMMIT
`,
		},
		{
			name: "two interfaces, fail-open, DHCP exempt",
			spec: Spec{Interfaces: []string{"eth0", "ens5.100"}, QueueNum: 7, QueueCount: 1, FailOpen: true},
			v4: `*mangle
:SGD-INPUT - [0:0]
:SGD-OUTPUT - [0:0]
-A SGD-INPUT -i lo -j RETURN
-A SGD-INPUT -i eth0 -j NFQUEUE --queue-num 7 --queue-bypass
-A SGD-INPUT -i ens5.100 -j NFQUEUE --queue-num 7 --queue-bypass
-A SGD-OUTPUT -o lo -j RETURN
-A SGD-OUTPUT -o eth0 -j NFQUEUE --queue-num 7 --queue-bypass
-A SGD-OUTPUT -o ens5.100 -j NFQUEUE --queue-num 7 --queue-bypass
COMMIT
`,
			v6: `*mangle
:SGD-INPUT - [0:0]
:SGD-OUTPUT - [0:0]
-A SGD-INPUT -i lo -j RETURN
-A SGD-INPUT -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED
-A SGD-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN
-A SGD-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 134 -j RETURN
-A SGD-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN
-A SGD-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN
-A SGD-INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 137 -j RETURN
-A SGD-INPUT -i eth0 -j NFQUEUE --queue-num 7 --queue-bypass
-A SGD-INPUT -i ens5.100 -j NFQUEUE --queue-num 7 --queue-bypass
-A SGD-OUTPUT -o lo -j RETURN
-A SGD-OUTPUT -m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED
-A SGD-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j RETURN
-A SGD-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 134 -j RETURN
-A SGD-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN
-A SGD-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN
-A SGD-OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type 137 -j RETURN
-A SGD-OUTPUT -o eth0 -j NFQUEUE --queue-num 7 --queue-bypass
-A SGD-OUTPUT -o ens5.100 -j NFQUEUE --queue-num 7 --queue-bypass
COMMIT
`,
		},
		{
			name: "several queues, fail-closed",
			spec: Spec{Interfaces: []string{"eth0"}, QueueNum: 2, QueueCount: 4},
			v4: `*mangle
:SGD-INPUT - [0:0]
:SGD-OUTPUT - [0:0]
-A SGD-INPUT -i lo -j RETURN
-A SGD-INPUT -i eth0 -j NFQUEUE --queue-balance 2:5 --queue-cpu-fanout
-A SGD-OUTPUT -o lo -j RETURN
-A SGD-OUTPUT -o eth0 -j NFQUEUE --queue-balance 2:5 --queue-cpu-fanout
COMMIT
`,
		},
		{
			name: "several queues, fail-open",
			spec: Spec{Interfaces: []string{"eth0"}, QueueNum: 0, QueueCount: 2, FailOpen: true},
			v4: `*mangle
:SGD-INPUT - [0:0]
:SGD-OUTPUT - [0:0]
-A SGD-INPUT -i lo -j RETURN
-A SGD-INPUT -i eth0 -j NFQUEUE --queue-balance 0:1 --queue-bypass --queue-cpu-fanout
-A SGD-OUTPUT -o lo -j RETURN
-A SGD-OUTPUT -o eth0 -j NFQUEUE --queue-balance 0:1 --queue-bypass --queue-cpu-fanout
COMMIT
`,
		},
		{
			name: "no interfaces: nothing queued",
			spec: Spec{QueueCount: 1},
			v4: `*mangle
:SGD-INPUT - [0:0]
:SGD-OUTPUT - [0:0]
-A SGD-INPUT -i lo -j RETURN
-A SGD-OUTPUT -o lo -j RETURN
COMMIT
`,
		},
	}
	m := New(DefaultOptions())
	for _, tt := range tests {
		v4, v6 := m.Rules(tt.spec)
		if string(v4) != tt.v4 {
			t.Errorf("%s: Rules(%+v) v4 =\n%s\nwant\n%s", tt.name, tt.spec, v4, tt.v4)
		}
		if tt.v6 != "" && string(v6) != tt.v6 {
			t.Errorf("%s: Rules(%+v) v6 =\n%s\nwant\n%s", tt.name, tt.spec, v6, tt.v6)
		}
	}
}

func TestRulesFamilies(t *testing.T) {
	s := Spec{Interfaces: []string{"eth0"}, QueueCount: 1}
	for _, tt := range []struct {
		ipv4, ipv6 bool
	}{{true, true}, {true, false}, {false, true}, {false, false}} {
		v4, v6 := New(Options{IPv4: tt.ipv4, IPv6: tt.ipv6}).Rules(s)
		if (v4 != nil) != tt.ipv4 || (v6 != nil) != tt.ipv6 {
			t.Errorf("Options{IPv4: %v, IPv6: %v}: Rules gave v4 %v, v6 %v", tt.ipv4, tt.ipv6, v4 != nil, v6 != nil)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := func(names ...string) Spec { return Spec{Interfaces: names, QueueCount: 1} }
	tests := []struct {
		spec Spec
		want string // substring of the error; "" for valid
	}{
		{ok("eth0"), ""},
		{ok("eth0", "ens5.100", "veth-sgd_1", "br-0123456789ab"), ""},
		{ok(), ""},
		{Spec{Interfaces: []string{"eth0"}, QueueNum: 65535, QueueCount: 1}, ""},
		{Spec{Interfaces: []string{"eth0"}, QueueNum: 65534, QueueCount: 3}, "above 65535"},
		{Spec{Interfaces: []string{"eth0"}}, "queue count 0"},
		{ok("lo"), "loopback"},
		{ok(""), "empty"},
		{ok("0123456789abcdef"), "longer than 15"},
		{ok("0123456789abcde"), ""},
		{ok("eth/0"), `"eth/0"`},
		{ok("eth:0"), "not allowed"},
		{ok("eth 0"), "not allowed"},
		{ok("eth\t0"), "not allowed"},
		{ok(`eth"0`), "not allowed"},
		{ok("eth\u00e90"), "not allowed"},
		{ok("."), "not a valid name"},
		{ok(".."), "not a valid name"},
		{ok("eth+"), "wildcard"},
		{ok("!eth0"), "negation"},
		{ok("eth0", "eth1", "eth0"), "listed twice"},
	}
	for _, tt := range tests {
		err := tt.spec.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Validate(%+v) = %v; want nil", tt.spec, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Validate(%+v) = %v; want error containing %q", tt.spec, err, tt.want)
		}
	}
}

func TestApplyIdempotent(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.table("ipv4", "mangle")["INPUT"] = []string{"-s 192.0.2.9/32 -j MARK --set-xmark 0x3/0xffffffff"}
	opts := DefaultOptions()
	opts.Runner = f
	s := Spec{Interfaces: []string{"eth0"}, QueueCount: 1}

	if err := New(opts).Apply(ctx, s); err != nil {
		t.Fatalf("Apply(%+v) = %v; want nil", s, err)
	}
	first := f.dump()
	if got := f.count(" -I "); got != 4 {
		t.Errorf("first Apply inserted %d jumps; want 4 (INPUT, OUTPUT x 2 families)\ncalls:\n%s", got, strings.Join(f.calls, "\n"))
	}
	want := "ipv4 mangle -A INPUT -j SGD-INPUT\n" +
		"ipv4 mangle -A INPUT -s 192.0.2.9/32 -j MARK --set-xmark 0x3/0xffffffff\n"
	if !strings.Contains(first, want) {
		t.Errorf("after Apply, ruleset =\n%s\nwant it to contain\n%s", first, want)
	}

	// Again, with the same Manager and with a new one (a restart after a crash).
	for i, m := range []*Manager{New(opts), New(opts)} {
		f.calls = nil
		if err := m.Apply(ctx, s); err != nil {
			t.Fatalf("Apply #%d = %v; want nil", i+2, err)
		}
		if got := f.count(" -I "); got != 0 {
			t.Errorf("Apply #%d inserted %d jumps; want 0 (-C found them)", i+2, got)
		}
		if got := f.count(" -C "); got != 4 {
			t.Errorf("Apply #%d ran %d checks; want 4", i+2, got)
		}
		if got := f.dump(); got != first {
			t.Errorf("Apply #%d: ruleset =\n%s\nwant (unchanged)\n%s", i+2, got, first)
		}
	}
}

func TestApplyReplacesContent(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	opts := DefaultOptions()
	opts.Runner = f
	m := New(opts)
	if err := m.Apply(ctx, Spec{Interfaces: []string{"eth0", "eth1"}, QueueCount: 1}); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ctx, Spec{Interfaces: []string{"eth2"}, QueueNum: 3, QueueCount: 1}); err != nil {
		t.Fatal(err)
	}
	got := f.state["ipv4"]["mangle"][ChainInput]
	want := []string{"-i lo -j RETURN", "-i eth2 -j NFQUEUE --queue-num 3"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("SGD-INPUT after second Apply = %q; want %q", got, want)
	}
}

func TestFastPathOnOff(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.table("ipv4", "filter")["INPUT"] = []string{"-s 192.0.2.9/32 -j DROP"}
	opts := DefaultOptions()
	opts.Runner = f
	m := New(opts)
	on := Spec{Interfaces: []string{"eth0"}, QueueCount: 1, Offload: &Offload{Zones: map[string]uint16{"eth0": 1}}}
	if err := m.Apply(ctx, on); err != nil {
		t.Fatalf("Apply(%+v) = %v", on, err)
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		for _, c := range []struct{ builtin, chain string }{{"INPUT", ChainSaveIn}, {"OUTPUT", ChainSaveOut}} {
			fl := f.state[fam]["filter"]
			want := `-i eth0 -m connlabel --label "1" --set -j CONNMARK --set-xmark 0x800000/0x800000`
			if c.builtin == "OUTPUT" {
				want = strings.Replace(want, "-i", "-o", 1)
			}
			if got := fl[c.chain]; len(got) != 2 || got[1] != want {
				t.Errorf("%s filter %s = %q; want 2 rules ending with %q", fam, c.chain, got, want)
			}
			if got := fl[c.builtin]; len(got) == 0 || got[0] != "-m mark --mark 0x800000/0x800000 -j "+c.chain {
				t.Errorf("%s filter %s = %q; want the jump to %s, for marked packets, first", fam, c.builtin, got, c.chain)
			}
		}
	}
	if got := f.count("-t filter -I "); got != 4 {
		t.Errorf("fast path Apply inserted %d filter jumps; want 4", got)
	}

	off := on
	off.Offload = nil
	if err := m.Apply(ctx, off); err != nil {
		t.Fatalf("Apply(%+v) = %v", off, err)
	}
	dump := f.dump()
	for _, c := range []string{"SGD-SAVE", "-FAST", "SGD-RAW", "raw"} {
		if strings.Contains(dump, c) {
			t.Errorf("after Apply without Offload, ruleset still has %s:\n%s", c, dump)
		}
	}
	if !strings.Contains(dump, "ipv4 filter -A INPUT -s 192.0.2.9/32 -j DROP\n") {
		t.Errorf("after Apply without Offload, foreign filter rule is gone:\n%s", dump)
	}

	// Off again: nothing in filter to remove, so no restore touches it.
	f.calls = nil
	if err := m.Apply(ctx, off); err != nil {
		t.Fatal(err)
	}
	if got := f.count("-restore"); got != 2 {
		t.Errorf("Apply with fast path already off ran %d restores; want 2 (mangle per family)\n%s", got, strings.Join(f.calls, "\n"))
	}
}

func TestRemove(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	f.table("ipv4", "mangle")["INPUT"] = []string{"-s 192.0.2.9/32 -j MARK --set-xmark 0x3/0xffffffff"}
	f.table("ipv6", "filter")["OUTPUT"] = []string{"-d 2001:db8::9/128 -j DROP"}
	before := f.dump()
	opts := DefaultOptions()
	opts.Runner = f
	m := New(opts)

	if err := m.Remove(ctx); err != nil {
		t.Fatalf("Remove on a clean ruleset = %v; want nil", err)
	}
	if got := f.count("-restore"); got != 0 {
		t.Errorf("Remove on a clean ruleset ran %d restores; want 0", got)
	}
	if ok, err := m.Installed(ctx); ok || err != nil {
		t.Errorf("Installed() before Apply = %v, %v; want false, nil", ok, err)
	}

	if err := m.Apply(ctx, Spec{Interfaces: []string{"eth0"}, QueueCount: 1, Offload: &Offload{Zones: map[string]uint16{"eth0": 1}, Timeouts: map[string][2]string{"eth0": {"sgd-tcp-60", "sgd-udp-30-60"}}}}); err != nil {
		t.Fatal(err)
	}
	// A duplicate jump (two sgd instances racing) is removed too.
	in := f.table("ipv4", "mangle")
	// And a jump in the form of versions before 2026-12.
	in["INPUT"] = append(in["INPUT"], "-j SGD-INPUT", "-m comment --comment sgd -j SGD-INPUT")
	if ok, err := m.Installed(ctx); !ok || err != nil {
		t.Errorf("Installed() after Apply = %v, %v; want true, nil", ok, err)
	}
	if err := m.Remove(ctx); err != nil {
		t.Fatalf("Remove() = %v; want nil", err)
	}
	if got := f.dump(); got != before {
		t.Errorf("after Remove, ruleset =\n%s\nwant (as before Apply)\n%s", got, before)
	}
	if ok, err := m.Installed(ctx); ok || err != nil {
		t.Errorf("Installed() after Remove = %v, %v; want false, nil", ok, err)
	}
}

func TestErrorsCarryContext(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	cause := &CommandError{Name: "ip6tables-restore", Args: []string{"-w", "--noflush"}, Stderr: "line 3: Bad rule\n", Err: exitStatus(2)}
	f.fail["ip6tables-restore"] = cause
	opts := DefaultOptions()
	opts.Runner = f
	err := New(opts).Apply(ctx, Spec{Interfaces: []string{"eth0"}, QueueCount: 1})
	if err == nil {
		t.Fatal("Apply with a failing ip6tables-restore = nil; want error")
	}
	for _, want := range []string{"ipv6", "replace chains", "ip6tables-restore -w --noflush", "exit status 2", "line 3: Bad rule"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Apply error %q does not contain %q", err, want)
		}
	}
	var ce *CommandError
	if !errors.As(err, &ce) || ce != cause {
		t.Errorf("errors.As(Apply error, *CommandError) = %v; want the runner's error", ce)
	}

	// A -C failure other than "absent" (exit 1) is an error, not a reason to insert.
	f = newFake()
	f.fail["-C INPUT"] = exitStatus(4)
	opts.Runner = f
	err = New(opts).Apply(ctx, Spec{Interfaces: []string{"eth0"}, QueueCount: 1})
	if err == nil || !strings.Contains(err.Error(), "check jump INPUT -> SGD-INPUT") {
		t.Errorf("Apply with -C exiting 4 = %v; want a check jump error", err)
	}
	if got := f.count(" -I "); got != 0 {
		t.Errorf("Apply with -C exiting 4 inserted %d jumps; want 0", got)
	}
}

func TestNoFamily(t *testing.T) {
	ctx := context.Background()
	m := New(Options{Runner: newFake()})
	if err := m.Apply(ctx, Spec{QueueCount: 1}); !errors.Is(err, errNoFamily) {
		t.Errorf("Apply with no family = %v; want %v", err, errNoFamily)
	}
	if err := m.Remove(ctx); !errors.Is(err, errNoFamily) {
		t.Errorf("Remove with no family = %v; want %v", err, errNoFamily)
	}
	if _, err := m.Installed(ctx); !errors.Is(err, errNoFamily) {
		t.Errorf("Installed with no family = %v; want %v", err, errNoFamily)
	}
}

func TestNetnsWrapsCommands(t *testing.T) {
	f := newFake()
	opts := DefaultOptions()
	opts.Runner = f
	opts.Netns = "sgd-t1"
	opts.IPv6 = false
	if _, err := New(opts).Installed(context.Background()); err == nil {
		// The fake does not understand "ip netns exec"; only the command line matters.
		t.Log("fake accepted ip netns exec")
	}
	want := "ip netns exec sgd-t1 iptables -w -t mangle -S"
	if len(f.calls) != 1 || f.calls[0] != want {
		t.Errorf("Installed() in a netns ran %q; want [%q]", f.calls, want)
	}
}

func TestApplyRejectsInvalid(t *testing.T) {
	f := newFake()
	opts := DefaultOptions()
	opts.Runner = f
	s := Spec{Interfaces: []string{"lo"}, QueueCount: 1}
	if err := New(opts).Apply(context.Background(), s); err == nil {
		t.Errorf("Apply(%+v) = nil; want error", s)
	}
	if len(f.calls) != 0 {
		t.Errorf("Apply of an invalid spec ran %q; want nothing", f.calls)
	}
}

// TestConcurrentUse runs Apply, Remove and Installed from several goroutines: the Manager
// serialises them, so the (unsynchronised) fake sees one command at a time (run with -race).
func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	opts := DefaultOptions()
	opts.Runner = f
	m := New(opts)
	s := Spec{Interfaces: []string{"eth0"}, QueueCount: 1, Offload: &Offload{Zones: map[string]uint16{"eth0": 1}}}
	done := make(chan error)
	for i := range 3 {
		go func() {
			var err error
			for range 20 {
				switch i {
				case 0:
					err = errors.Join(err, m.Apply(ctx, s))
				case 1:
					err = errors.Join(err, m.Remove(ctx))
				default:
					_, e := m.Installed(ctx)
					err = errors.Join(err, e)
				}
			}
			done <- err
		}()
	}
	for range 3 {
		if err := <-done; err != nil {
			t.Errorf("concurrent use: %v", err)
		}
	}
}
