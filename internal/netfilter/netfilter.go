// Package netfilter installs and removes the iptables/ip6tables rules that send the packets
// of sgd's interfaces to NFQUEUE, touching nothing but its own chains and jumps.
//
// Layout (SPEC 2.3). In table mangle, chains SGD-INPUT and SGD-OUTPUT, each reached by one
// rule "-j SGD-…" at the top of INPUT and OUTPUT, in iptables and ip6tables (the chain's
// name makes the jump sgd's; jumps of versions before 2026-12 carried "-m comment
// --comment sgd", and are removed in that form too). mangle runs after conntrack and
// defragmentation and before filter, so the host's own filter rules still judge what sgd
// accepts. Each chain RETURNs loopback and
// IPv6 neighbour discovery, then queues the packets of each configured interface (DHCP
// client traffic too: its exemption is scoped to the link, which only sgd can judge);
// packets of other interfaces fall off the end and RETURN.
//
// The nftables "queue" expression is missing from the kernels sgd targets, so the rules go
// through the iptables commands (iptables-nft 1.8.9 translates -j NFQUEUE to its own
// compat expression). Commands are executed with argument lists, never through a shell,
// and chain contents are fed to iptables-restore --noflush on standard input.
//
// With ports (Spec.Ports, SPEC 4.3), a chain SGD-FORWARD in mangle, reached by the same
// kind of jump from FORWARD, queues what each port sends or receives through the host,
// bridged (physdev, which needs br_netfilter's bridge-nf-call switches on: Bridge) and
// routed (by device); SGD-INPUT and SGD-OUTPUT queue a port's traffic with the host
// itself. Without ports there is no SGD-FORWARD and no jump to it.
//
// With the kernel fast path (Spec.Offload, SPEC 4.7), SGD-INPUT and SGD-OUTPUT return a
// NEW or ESTABLISHED packet whose connection carries the label bit of its sgd device
// instead of queueing it (it passes, and the user's later mangle rules still see it), and
// three more kinds of chain, all sgd's: with ports, SGD-FORWARD-FAST in mangle, which
// SGD-FORWARD sends NEW and ESTABLISHED packets to and which queues a packet at the first
// port it crosses whose label bit its connection lacks; SGD-SAVE-IN, SGD-SAVE-OUT and
// (with ports) SGD-SAVE-FWD in filter, jumped to from the top of INPUT, OUTPUT and
// FORWARD by packets carrying offload.Mark, which label the connection of a packet sgd
// accepted with that mark at each device it crosses, and end nothing; SGD-RAW-PRE and
// SGD-RAW-OUT in raw, jumped to from the end of PREROUTING and OUTPUT, which attach the
// devices' conntrack timeout policies to new connections. See Offload. The rules every
// packet crosses use native nftables comparisons where iptables-nft has them (devices,
// protocols, the packet mark) and as few xtables matches (conntrack, connlabel) as
// the decision needs: each of those is a call through the compatibility layer.
//
// Two consequences of NFQUEUE worth knowing: a packet sgd accepts continues at the next
// hook (filter), so mangle INPUT/OUTPUT rules of others placed after sgd's jump do not see
// queued packets; and while the rules are installed and nobody reads a queue, its packets
// are dropped (fail-closed) unless Spec.FailOpen added --queue-bypass.
package netfilter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Options configure a Manager. The zero value selects no address family, which makes
// Apply, Remove and Installed fail; start from DefaultOptions.
type Options struct {
	// Runner executes the commands; nil means ExecRunner.
	Runner Runner
	// IPv4 and IPv6 select the families managed (iptables and ip6tables).
	IPv4, IPv6 bool
	// Netns, when set, runs every command inside that named network namespace as
	// "ip netns exec NAME <command> <args>" (tests, labs).
	Netns string
	// Binaries; empty means the default name, looked up in PATH: "iptables",
	// "ip6tables", "iptables-restore", "ip6tables-restore", and "ip" for Netns.
	IPTables, IP6Tables, IPTablesRestore, IP6TablesRestore, IP string
}

// DefaultOptions returns Options that manage both families with the commands from PATH.
func DefaultOptions() Options {
	return Options{IPv4: true, IPv6: true}
}

// Manager installs, replaces and removes sgd's rules. Its methods are safe for concurrent
// use; they are serialised, so an Apply never interleaves with a Remove. A Manager keeps
// no record of what it installed: every method reads the ruleset, so a new Manager after
// a crash handles the leftovers of the old one.
type Manager struct {
	mu       sync.Mutex
	opts     Options
	families []family
}

// New returns a Manager that runs the commands named in opts (defaults filled in).
func New(opts Options) *Manager {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&opts.IPTables, "iptables")
	def(&opts.IP6Tables, "ip6tables")
	def(&opts.IPTablesRestore, "iptables-restore")
	def(&opts.IP6TablesRestore, "ip6tables-restore")
	def(&opts.IP, "ip")
	if opts.Runner == nil {
		opts.Runner = ExecRunner{}
	}
	m := &Manager{opts: opts}
	if opts.IPv4 {
		m.families = append(m.families, ipv4)
	}
	if opts.IPv6 {
		m.families = append(m.families, ipv6)
	}
	return m
}

var errNoFamily = errors.New("netfilter: neither IPv4 nor IPv6 selected in Options")

// Rules returns the iptables-restore input Apply feeds for each family (nil for a family
// not managed). It does not validate s and runs nothing.
func (m *Manager) Rules(s Spec) (v4, v6 []byte) {
	if m.opts.IPv4 {
		v4 = rules(s, ipv4)
	}
	if m.opts.IPv6 {
		v6 = rules(s, ipv6)
	}
	return v4, v6
}

// Apply validates s, then for each family replaces the contents of sgd's chains in one
// iptables-restore transaction and adds each jump to its built-in chain (at the top; in
// raw, at the end) unless iptables -C finds it already there, so applying again, or after
// a crash, leaves exactly one copy. The chains s does not need (the forwarding path's
// without ports; the offload's without Offload, and those of an older version) are
// removed, jumps and all. Packets start being queued when the jumps first appear: open
// the queues before; with Offload, create the timeout policies before (offload.Ensure).
// On error, a family may be left with its old or new rules; Apply again or Remove.
func (m *Manager) Apply(ctx context.Context, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if len(m.families) == 0 {
		return errNoFamily
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range m.families {
		if err := m.apply(ctx, f, s); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manager) apply(ctx context.Context, f family, s Spec) error {
	if s.Offload != nil && s.Offload.hasTimeouts(s) {
		if err := m.checkBackend(ctx, f); err != nil {
			return err
		}
	}
	if _, err := m.run(ctx, m.restoreBin(f), []string{"-w", "--noflush"}, rules(s, f)); err != nil {
		return fmt.Errorf("netfilter: %v: replace chains: %w", f, err)
	}
	want := s.hooks()
	for _, h := range want {
		if h.builtin == "" {
			continue
		}
		if err := m.ensureJump(ctx, f, h); err != nil {
			return err
		}
	}
	for _, table := range tables {
		var unwanted, wanted []hook
		for _, h := range allHooks() {
			switch {
			case h.table != table:
			case slices.Contains(want, h):
				wanted = append(wanted, h)
			default:
				unwanted = append(unwanted, h)
			}
		}
		if err := m.remove(ctx, f, table, unwanted, wanted); err != nil {
			return err
		}
	}
	return nil
}

// checkBackend refuses the legacy iptables backend for timeout policies. Before the
// kernel fix of 2026-05 ("netfilter: xt_CT: fix usersize for v1 and v2 revision"; Linux
// 6.18 here lacks it), the kernel gives userspace only the first 4 bytes of a CT timeout
// name. iptables-nft edits rule by rule and is not affected (its listings just show the
// name cut short); the legacy backend rewrites a whole table from what it reads back, so
// with sgd's CT rules in raw every later change to that table, sgd's own or the user's,
// would fail ("sgd-": no such policy).
func (m *Manager) checkBackend(ctx context.Context, f family) error {
	out, err := m.run(ctx, m.iptablesBin(f), []string{"-V"}, nil)
	if err != nil {
		return fmt.Errorf("netfilter: %v: %s -V: %w", f, m.iptablesBin(f), err)
	}
	if strings.Contains(string(out), "legacy") {
		return fmt.Errorf("netfilter: %v: %s is the legacy backend (%s): timeout policies in raw need iptables-nft", f, m.iptablesBin(f), strings.TrimSpace(string(out)))
	}
	return nil
}

// ensureJump adds h's jump to its built-in chain (as rule 1, or last) unless -C finds one.
func (m *Manager) ensureJump(ctx context.Context, f family, h hook) error {
	check := append([]string{"-w", "-t", h.table, "-C", h.builtin}, h.jumpArgs()...)
	_, err := m.run(ctx, m.iptablesBin(f), check, nil)
	if err == nil {
		return nil
	}
	// iptables -C exits 1 when the rule is absent; anything else is a failure.
	var ec interface{ ExitCode() int }
	if !errors.As(err, &ec) || ec.ExitCode() != 1 {
		return fmt.Errorf("netfilter: %v: check jump %s -> %s in %s: %w", f, h.builtin, h.chain, h.table, err)
	}
	insert := append([]string{"-w", "-t", h.table, "-I", h.builtin, "1"}, h.jumpArgs()...)
	if h.last {
		insert = append([]string{"-w", "-t", h.table, "-A", h.builtin}, h.jumpArgs()...)
	}
	if _, err := m.run(ctx, m.iptablesBin(f), insert, nil); err != nil {
		return fmt.Errorf("netfilter: %v: insert jump %s -> %s in %s: %w", f, h.builtin, h.chain, h.table, err)
	}
	return nil
}

// Remove deletes sgd's jumps and chains from the tables of every managed family (raw,
// mangle, filter), in one
// iptables-restore transaction per family, leaving every other rule as it was. What is
// already absent is skipped, so Remove on a clean ruleset does nothing and returns nil.
// A failure in one family does not stop the other; the errors are joined.
func (m *Manager) Remove(ctx context.Context) error {
	if len(m.families) == 0 {
		return errNoFamily
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, f := range m.families {
		var b bytes.Buffer
		for _, table := range tables {
			var hooks []hook
			for _, h := range allHooks() {
				if h.table == table {
					hooks = append(hooks, h)
				}
			}
			st, err := m.list(ctx, f, table)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			b.Write(removal(st, table, hooks, nil))
		}
		if b.Len() == 0 {
			continue
		}
		if _, err := m.run(ctx, m.restoreBin(f), []string{"-w", "--noflush"}, b.Bytes()); err != nil {
			errs = append(errs, fmt.Errorf("netfilter: %v: remove chains: %w", f, err))
		}
	}
	return errors.Join(errs...)
}

// remove deletes, in one table and family, the jumps and chains of hooks and the
// older version's form of the jumps of kept (hook.legacyJumpArgs), what is present of
// them.
func (m *Manager) remove(ctx context.Context, f family, table string, hooks, kept []hook) error {
	st, err := m.list(ctx, f, table)
	if err != nil {
		return err
	}
	in := removal(st, table, hooks, kept)
	if in == nil {
		return nil
	}
	if _, err := m.run(ctx, m.restoreBin(f), []string{"-w", "--noflush"}, in); err != nil {
		return fmt.Errorf("netfilter: %v: remove chains from %s: %w", f, table, err)
	}
	return nil
}

// removal returns the iptables-restore --noflush input that deletes every copy of the
// hooks' jumps (in either form) and then flushes and deletes their chains, and deletes
// the older form of kept's jumps; nil when none of it is present.
func removal(st tableState, table string, hooks, kept []hook) []byte {
	var b bytes.Buffer
	for _, h := range hooks {
		if st.chains[h.chain] {
			fmt.Fprintf(&b, ":%s - [0:0]\n", h.chain) // flushes it
		}
	}
	del := func(h hook, args []string) {
		spec := strings.Join(args, " ")
		for range st.jumps[h.builtin+" "+spec] {
			fmt.Fprintf(&b, "-D %s %s\n", h.builtin, spec)
		}
	}
	for _, h := range hooks {
		if h.builtin != "" {
			del(h, h.jumpArgs())
			del(h, h.legacyJumpArgs())
		}
	}
	for _, h := range kept {
		if h.builtin != "" {
			del(h, h.legacyJumpArgs())
		}
	}
	for _, h := range hooks {
		if st.chains[h.chain] {
			fmt.Fprintf(&b, "-X %s\n", h.chain)
		}
	}
	if b.Len() == 0 {
		return nil
	}
	return append(append([]byte("*"+table+"\n"), b.Bytes()...), "COMMIT\n"...)
}

// Installed reports whether any of sgd's mangle chains exists in any managed family.
func (m *Manager) Installed(ctx context.Context) (bool, error) {
	if len(m.families) == 0 {
		return false, errNoFamily
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range m.families {
		st, err := m.list(ctx, f, "mangle")
		if err != nil {
			return false, err
		}
		for _, h := range append(queueHooks[:], forwardHooks[:]...) {
			if st.chains[h.chain] {
				return true, nil
			}
		}
	}
	return false, nil
}

// tableState is what "iptables -S" shows of one table: the user-defined chains and, for
// each rule of a built-in chain, how many times it occurs (keyed "CHAIN rule-spec").
type tableState struct {
	chains map[string]bool
	jumps  map[string]int
}

// list reads one table with "iptables -t TABLE -S". Listing does not create the table.
func (m *Manager) list(ctx context.Context, f family, table string) (tableState, error) {
	out, err := m.run(ctx, m.iptablesBin(f), []string{"-w", "-t", table, "-S"}, nil)
	if err != nil {
		return tableState{}, fmt.Errorf("netfilter: %v: list table %s: %w", f, table, err)
	}
	st := tableState{chains: map[string]bool{}, jumps: map[string]int{}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "-N "):
			st.chains[strings.TrimPrefix(line, "-N ")] = true
		case strings.HasPrefix(line, "-A INPUT "), strings.HasPrefix(line, "-A OUTPUT "), strings.HasPrefix(line, "-A FORWARD "),
			strings.HasPrefix(line, "-A PREROUTING "):
			st.jumps[strings.TrimPrefix(line, "-A ")]++
		}
	}
	if err := sc.Err(); err != nil {
		return tableState{}, fmt.Errorf("netfilter: %v: list table %s: %w", f, table, err)
	}
	return st, nil
}

func (m *Manager) iptablesBin(f family) string {
	if f == ipv6 {
		return m.opts.IP6Tables
	}
	return m.opts.IPTables
}

func (m *Manager) restoreBin(f family) string {
	if f == ipv6 {
		return m.opts.IP6TablesRestore
	}
	return m.opts.IPTablesRestore
}

// run executes name with args, inside Options.Netns when set.
func (m *Manager) run(ctx context.Context, name string, args []string, stdin []byte) ([]byte, error) {
	if m.opts.Netns != "" {
		args = append([]string{"netns", "exec", m.opts.Netns, name}, args...)
		name = m.opts.IP
	}
	return m.opts.Runner.Run(ctx, name, args, stdin)
}
