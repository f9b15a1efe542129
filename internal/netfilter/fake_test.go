package netfilter

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// exitStatus is the error of a command that exited non-zero.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitStatus) ExitCode() int { return int(e) }

// fakeTables is a tiny in-memory iptables: enough of -C, -I, -A, -S and iptables-restore
// --noflush (":chain", -A, -I, -D, -X, COMMIT) to drive the Manager. Rules are kept in the
// form iptables -S prints after "-A CHAIN ".
type fakeTables struct {
	// state[family][table][chain] = rules; built-in chains exist implicitly.
	state   map[string]map[string]map[string][]string
	calls   []string // "name arg arg..." of every command run
	fail    map[string]error
	backend string // what -V says: "nf_tables" or "legacy"
}

func newFake() *fakeTables {
	return &fakeTables{state: map[string]map[string]map[string][]string{}, fail: map[string]error{}, backend: "nf_tables"}
}

var builtins = map[string]bool{"INPUT": true, "OUTPUT": true, "FORWARD": true, "PREROUTING": true, "POSTROUTING": true}

func (f *fakeTables) table(fam, table string) map[string][]string {
	if f.state[fam] == nil {
		f.state[fam] = map[string]map[string][]string{}
	}
	if f.state[fam][table] == nil {
		f.state[fam][table] = map[string][]string{}
	}
	return f.state[fam][table]
}

// count returns how many commands contain all of the given words, in order.
func (f *fakeTables) count(sub string) int {
	n := 0
	for _, c := range f.calls {
		if strings.Contains(c, sub) {
			n++
		}
	}
	return n
}

func (f *fakeTables) Run(_ context.Context, name string, args []string, stdin []byte) ([]byte, error) {
	f.calls = append(f.calls, strings.TrimSpace(name+" "+strings.Join(args, " ")))
	for sub, err := range f.fail {
		if strings.Contains(f.calls[len(f.calls)-1], sub) {
			return nil, err
		}
	}
	fam := "ipv4"
	if strings.HasPrefix(name, "ip6") {
		fam = "ipv6"
	}
	if strings.HasSuffix(name, "-restore") {
		return nil, f.restore(fam, stdin)
	}
	// iptables -w -t TABLE OP ...
	if len(args) == 1 && args[0] == "-V" {
		return []byte(name + " v1.8.9 (" + f.backend + ")\n"), nil
	}
	if len(args) < 4 || args[0] != "-w" || args[1] != "-t" {
		return nil, fmt.Errorf("fake: unexpected command %s %v", name, args)
	}
	t := f.table(fam, args[2])
	switch args[3] {
	case "-S":
		var b bytes.Buffer
		for _, c := range slices.Sorted(maps.Keys(t)) {
			if !builtins[c] {
				fmt.Fprintf(&b, "-N %s\n", c)
			}
		}
		for _, c := range slices.Sorted(maps.Keys(t)) {
			for _, r := range t[c] {
				fmt.Fprintf(&b, "-A %s %s\n", c, r)
			}
		}
		return b.Bytes(), nil
	case "-C":
		target := args[len(args)-1]
		if _, ok := t[target]; !ok && !builtins[target] {
			return nil, exitStatus(2)
		}
		if slices.Contains(t[args[4]], strings.Join(args[5:], " ")) {
			return nil, nil
		}
		return nil, exitStatus(1)
	case "-I":
		t[args[4]] = slices.Insert(t[args[4]], 0, strings.Join(args[6:], " "))
		return nil, nil
	case "-A":
		t[args[4]] = append(t[args[4]], strings.Join(args[5:], " "))
		return nil, nil
	}
	return nil, fmt.Errorf("fake: unexpected command %s %v", name, args)
}

func (f *fakeTables) restore(fam string, in []byte) error {
	var work map[string][]string
	var table string
	sc := bufio.NewScanner(bytes.NewReader(in))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		fields := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
			work = maps.Clone(f.table(fam, table))
		case line == "COMMIT":
			f.state[fam][table] = work
			work = nil
		case strings.HasPrefix(line, ":"):
			work[fields[0][1:]] = nil
		case fields[0] == "-A":
			work[fields[1]] = append(slices.Clone(work[fields[1]]), strings.Join(fields[2:], " "))
		case fields[0] == "-I":
			work[fields[1]] = slices.Insert(slices.Clone(work[fields[1]]), 0, strings.Join(fields[3:], " "))
		case fields[0] == "-D":
			i := slices.Index(work[fields[1]], strings.Join(fields[2:], " "))
			if i < 0 {
				return exitStatus(1)
			}
			work[fields[1]] = slices.Delete(slices.Clone(work[fields[1]]), i, i+1)
		case fields[0] == "-X":
			if len(work[fields[1]]) > 0 {
				return fmt.Errorf("fake: line %d: -X of non-empty chain", n)
			}
			if _, ok := work[fields[1]]; !ok {
				return fmt.Errorf("fake: line %d: -X of missing chain", n)
			}
			delete(work, fields[1])
		default:
			return fmt.Errorf("fake: line %d: cannot parse %q", n, line)
		}
	}
	if work != nil {
		return fmt.Errorf("fake: missing COMMIT")
	}
	return nil
}

// dump renders the whole fake ruleset in a stable form, for comparisons.
func (f *fakeTables) dump() string {
	var b strings.Builder
	for _, fam := range slices.Sorted(maps.Keys(f.state)) {
		for _, tb := range slices.Sorted(maps.Keys(f.state[fam])) {
			t := f.state[fam][tb]
			for _, c := range slices.Sorted(maps.Keys(t)) {
				if !builtins[c] {
					fmt.Fprintf(&b, "%s %s -N %s\n", fam, tb, c)
				}
				for _, r := range t[c] {
					fmt.Fprintf(&b, "%s %s -A %s %s\n", fam, tb, c, r)
				}
			}
		}
	}
	return b.String()
}
