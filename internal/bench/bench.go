// Package bench is sgd's own throughput benchmark (SPEC 3.1): the same traffic over one
// veth pair between two network namespaces, with no filter (raw), with iptables and the
// kernel's conntrack enforcing the policy as a linear chain (kernel) and with the rules in
// one ipset (kernel+ipset), and with sgd enforcing it in its default mode (sgd) and with
// every packet through its queue (sgd-userspace), measured in one run and compared as
// ratios. On request, sgd-untracked: sgd's default mode with a policy whose flows are
// untracked (SPEC 1.4), every packet judged on the queue.
//
// The forwarded paths (SPEC 4.3, hypervisor mode) measure the same traffic between two
// ports of one bridge in a third, "hypervisor" namespace: no filter (fwd-raw), iptables
// with physdev and conntrack in the hypervisor's FORWARD chain (fwd-kernel, and
// fwd-kernel+ipset), and sgd in the hypervisor judging both ports (fwd-sgd,
// fwd-sgd-userspace: the client port's egress, then the server port's ingress).
//
// Options.Rules puts N non-matching rules in front of the policy's real ones on every
// filtering path (policy.go); a run over several N is the scale table.
//
// The figures: TCP bulk throughput over one stream (iperf3, receiver side), 64-byte UDP
// datagrams delivered per second (counted by the receiver; the sender pushes batches with
// sendmmsg as fast as it can) and new TCP connections per second (connect, a 4-byte
// request, a 3-byte response, close; a few concurrent workers). Each figure is measured
// Repeat times, in an order shuffled per repeat (order.go), and the medians compared.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sgd-firewall/sgd/internal/lab"
)

// Path is a way the packets take through the server's namespace.
type Path string

// The paths over the veth pair, in the order tables show them.
const (
	Raw          Path = "raw"           // no filter at all
	Kernel       Path = "kernel"        // iptables + kernel conntrack, the same policy as a linear chain
	KernelIPSet  Path = "kernel+ipset"  // the same, with the rules in one ipset
	SGD          Path = "sgd"           // sgd run in its default mode
	SGDUserspace Path = "sgd-userspace" // sgd run --fast-path=false: every packet through NFQUEUE
	// SGDUntracked is sgd run in its default mode with the policy's rules open to
	// 0.0.0.0/0: with all egress allowed, SPEC 1.4 leaves those flows untracked, and sgd
	// judges every packet of an untracked flow on the queue (it offloads tracked flows
	// only). Measured on request (--paths), to weigh offloading untracked flows too.
	SGDUntracked Path = "sgd-untracked"
)

// The forwarded paths: client and server are two ports of one bridge in the hypervisor's
// namespace, where the filter runs.
const (
	FwdRaw          Path = "fwd-raw"           // the bridge, br_netfilter's iptables calls off
	FwdKernel       Path = "fwd-kernel"        // iptables FORWARD with physdev + conntrack in the hypervisor
	FwdKernelIPSet  Path = "fwd-kernel+ipset"  // the same, with the server's rules in one ipset
	FwdSGD          Path = "fwd-sgd"           // sgd run in the hypervisor with both bridge ports under ports:
	FwdSGDUserspace Path = "fwd-sgd-userspace" // the same with --fast-path=false
)

// AllPaths lists every path in table order.
var AllPaths = []Path{Raw, Kernel, KernelIPSet, SGD, SGDUserspace, SGDUntracked, FwdRaw, FwdKernel, FwdKernelIPSet, FwdSGD, FwdSGDUserspace}

// DefaultPaths are measured when Options.Paths is nil: the veth pair's.
var DefaultPaths = []Path{Raw, Kernel, KernelIPSet, SGD, SGDUserspace}

// OptionalPaths are measured only when --paths names them.
var OptionalPaths = []Path{SGDUntracked}

// ForwardedPaths are the bridge's.
var ForwardedPaths = []Path{FwdRaw, FwdKernel, FwdKernelIPSet, FwdSGD, FwdSGDUserspace}

// filterKind is what enforces a path's policy.
type filterKind uint8

const (
	noFilter     filterKind = iota
	iptables                // a linear iptables chain with conntrack
	iptablesSet             // iptables with the rules in one ipset
	sgdDefault              // sgd run
	sgdQueue                // sgd run --fast-path=false
	sgdUntracked            // sgd run, the policy open to 0.0.0.0/0 (its flows untracked)
)

// kind returns what filters on p.
func (p Path) kind() filterKind {
	switch p.Base() {
	case Kernel:
		return iptables
	case KernelIPSet:
		return iptablesSet
	case SGD:
		return sgdDefault
	case SGDUserspace:
		return sgdQueue
	case SGDUntracked:
		return sgdUntracked
	}
	return noFilter
}

// Forwarded reports whether p runs on the bridge topology.
func (p Path) Forwarded() bool { return strings.HasPrefix(string(p), "fwd-") }

// Base is the veth pair's path that p is the forwarded form of (p itself on the veth pair).
func (p Path) Base() Path { return Path(strings.TrimPrefix(string(p), "fwd-")) }

// fwd is p's forwarded form when forwarded is true, else p.
func (p Path) fwd(forwarded bool) Path {
	if forwarded {
		return "fwd-" + p
	}
	return p
}

// filters reports whether p enforces the policy (every path but the two raw ones).
func (p Path) filters() bool { return p.kind() != noFilter }

// runsSGD reports whether p runs sgd.
func (p Path) runsSGD() bool {
	return p.kind() == sgdDefault || p.kind() == sgdQueue || p.kind() == sgdUntracked
}

// usesIPSet reports whether p keeps its rules in an ipset.
func (p Path) usesIPSet() bool { return p.kind() == iptablesSet }

// Figure is one thing measured.
type Figure string

// The figures.
const (
	TCP  Figure = "tcp"  // TCP bulk throughput, one stream, bits/s at the receiver
	UDP  Figure = "udp"  // 64-byte UDP datagrams/s delivered to the receiving socket
	Conn Figure = "conn" // new TCP connections/s (connect, request, response, close)
)

// AllFigures lists every figure in measuring order.
var AllFigures = []Figure{TCP, UDP, Conn}

// Title is the figure's name in tables.
func (f Figure) Title() string {
	switch f {
	case TCP:
		return "TCP bulk, 1 stream"
	case UDP:
		return "UDP 64 B datagrams delivered"
	case Conn:
		return "new TCP connections"
	}
	return string(f)
}

// Unit is the unit of the figure's values.
func (f Figure) Unit() string {
	switch f {
	case TCP:
		return "bit/s"
	case UDP:
		return "datagrams/s"
	case Conn:
		return "connections/s"
	}
	return ""
}

// Options configure Run.
type Options struct {
	SGD      string        // the sgd binary (run as `sgd run` for the sgd paths)
	Duration time.Duration // per measurement (the measured window; a short warm-up comes first)
	Repeat   int           // measurements per figure, path and rule count
	Queues   int           // --queue-count for sgd; 0 leaves sgd's default
	Paths    []Path        // nil: DefaultPaths
	Figures  []Figure      // nil: AllFigures (TCP is skipped with a note when iperf3 is missing)
	// Rules are the counts of non-matching rules put in front of the policy's real ones on
	// every filtering path, each measured in turn (nil: just 0). At most MaxRules.
	Rules []int
	// Seed orders the measurements (order.go); 0 draws one, which the report prints.
	Seed    uint64
	Version string // sgd's version, for the report
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

// The lab's addresses and ports (RFC 5737 documentation range).
var (
	serverAddr = netip.MustParseAddr("192.0.2.1")
	clientAddr = netip.MustParseAddr("192.0.2.2")
)

const (
	portTCP    = 5201 // iperf3
	portUDP    = 5202
	portConn   = 5203
	portClosed = 5209 // not allowed by the policy: the check that the filter enforces
	serverDev  = "eth0"
	labPrefix  = "sgd-bench"
)

// session is one setup of one path measured: the path with n non-matching rules in front
// (0 on the raw paths, which have no rules).
type session struct {
	path  Path
	rules int
}

// String is "kernel", or "kernel@100" with rules in front.
func (s session) String() string {
	if s.rules == 0 {
		return string(s.path)
	}
	return fmt.Sprintf("%s@%d", s.path, s.rules)
}

// sessions lists what one repeat measures: each raw path once, each filtering path once
// per rule count.
func sessions(paths []Path, counts []int) []session {
	var out []session
	for _, p := range paths {
		if !p.filters() {
			out = append(out, session{p, 0})
			continue
		}
		for _, n := range counts {
			out = append(out, session{p, n})
		}
	}
	return out
}

// Run builds the lab, measures and tears the lab down (also when ctx is cancelled). It
// returns the report of what was measured, complete or, with an error, partial.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Repeat <= 0 {
		o.Repeat = 3
	}
	if o.Paths == nil {
		o.Paths = DefaultPaths
	}
	if o.Figures == nil {
		o.Figures = AllFigures
	}
	if len(o.Rules) == 0 {
		o.Rules = []int{0}
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64N(999_999) + 1 // short enough to type back as --seed
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	for _, n := range o.Rules {
		if n < 0 || n > MaxRules {
			return newReport(o), fmt.Errorf("%d rules in front: %w", n, errTooManyRules)
		}
	}
	o.Rules = slices.Compact(slices.Sorted(slices.Values(o.Rules)))
	var notes []string
	for _, tool := range []string{"ip", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			return newReport(o), fmt.Errorf("%s is not installed (the benchmark needs iproute2 and iptables): %w", tool, err)
		}
	}
	if slices.Contains(o.Figures, TCP) {
		if _, err := exec.LookPath("iperf3"); err != nil {
			o.Figures = slices.DeleteFunc(slices.Clone(o.Figures), func(f Figure) bool { return f == TCP })
			notes = append(notes, "TCP bulk throughput skipped: iperf3 is not installed (apt-get install iperf3)")
		}
	}
	if slices.ContainsFunc(o.Paths, Path.usesIPSet) {
		if _, err := exec.LookPath("ipset"); err != nil {
			o.Paths = slices.DeleteFunc(slices.Clone(o.Paths), Path.usesIPSet)
			notes = append(notes, "the kernel+ipset paths skipped: ipset is not installed (apt-get install ipset)")
		}
	}
	rep := newReport(o)
	rep.Notes = notes
	for _, n := range notes {
		fmt.Fprintln(o.Progress, "note:", n)
	}

	l, err := lab.New(labPrefix)
	if err != nil {
		return rep, err
	}
	defer func() {
		if r := recover(); r != nil {
			_ = l.Cleanup()
			panic(r)
		}
	}()
	b := &bencher{o: o, l: l, rep: rep}
	err = b.run(ctx)
	b.closeLoad()
	if cerr := l.Cleanup(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
	}
	rep.finish()
	return rep, err
}

// bencher holds the lab while Run measures.
type bencher struct {
	o        Options
	l        *lab.Lab
	rep      *Report
	direct   *topology // the veth pair, when a direct path is measured
	fwd      *topology // the bridge, when a forwarded path is measured
	t        *topology // the one the current path runs on
	step     int
	steps    int
	sgd      *lab.Proc // running sgd, on the sgd paths
	counters *SGDCounters
}

func (b *bencher) progress(format string, a ...any) {
	fmt.Fprintf(b.o.Progress, format+"\n", a...)
}

func (b *bencher) run(ctx context.Context) error {
	if slices.ContainsFunc(b.o.Paths, func(p Path) bool { return !p.Forwarded() }) {
		t, err := b.buildDirect(ctx)
		if err != nil {
			return err
		}
		b.direct = t
	}
	if slices.ContainsFunc(b.o.Paths, Path.Forwarded) {
		t, err := b.buildForwarded(ctx)
		if err != nil {
			return err
		}
		b.fwd = t
	}
	all := sessions(b.o.Paths, b.o.Rules)
	b.steps = b.o.Repeat * len(all) * len(b.o.Figures)
	b.progress("measuring: %d paths, %s in front, %d figures, %d repeats, %s each (+ warm-up); order shuffled per repeat, seed %d",
		len(b.o.Paths), ruleCounts(b.o.Rules), len(b.o.Figures), b.o.Repeat, b.o.Duration, b.o.Seed)
	for r, order := range orders(len(all), b.o.Repeat, b.o.Seed) {
		names := make([]string, len(order))
		for i, k := range order {
			names[i] = all[k].String()
		}
		b.progress("repeat %d: %s", r+1, strings.Join(names, " "))
		for _, k := range order {
			if err := b.session(ctx, r+1, all[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// ruleCounts says which rule counts are measured, for people.
func ruleCounts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	if len(ns) == 1 {
		return plural(ns[0], "non-matching rule")
	}
	return strings.Join(s, ", ") + " non-matching rules"
}

// plural is "1 rule", "3 rules".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// session sets s up, checks that it enforces the policy, measures every figure once and
// tears it down.
func (b *bencher) session(ctx context.Context, r int, s session) (err error) {
	p := s.path
	b.t = b.direct
	if p.Forwarded() {
		b.t = b.fwd
	}
	if err := b.setup(ctx, s); err != nil {
		return fmt.Errorf("set up path %s: %w", s, err)
	}
	defer func() {
		if terr := b.teardown(p); terr != nil && err == nil {
			err = fmt.Errorf("tear down path %s: %w", s, terr)
		}
	}()
	if err := b.checkPolicy(ctx, s); err != nil {
		return err
	}
	for _, f := range b.o.Figures {
		b.step++
		user0, sys0, drops0 := b.sgdUsage()
		m, err := b.measure(ctx, f)
		if err != nil {
			return fmt.Errorf("%s over %s: %w", f, s, err)
		}
		m.Path, m.Figure, m.Repeat, m.Rules, m.Seq = p, f, r, s.rules, b.step
		if b.sgd != nil {
			user1, sys1, drops1 := b.sgdUsage()
			m.SGDCPUSeconds = max(0, user1+sys1-user0-sys0)
			m.SGDSysSeconds = max(0, sys1-sys0)
			m.QueueDrops = drops1 - drops0
		}
		b.rep.Samples = append(b.rep.Samples, m)
		line := fmt.Sprintf("[%2d/%d] repeat %d  %-22s %-4s %s", b.step, b.steps, r, s, f, formatValue(f, m.Value))
		if m.Errors > 0 {
			line += fmt.Sprintf("  (%d failed)", m.Errors)
		}
		if b.sgd != nil && m.Seconds > 0 {
			line += fmt.Sprintf("  sgd CPU %.0f%% (kernel %.0f%%), queue drops %d", 100*m.SGDCPUSeconds/m.Seconds, 100*m.SGDSysSeconds/m.Seconds, m.QueueDrops)
		}
		b.progress("%s", line)
	}
	return nil
}

// Machine describes where the benchmark ran.
type Machine struct {
	NProc     int    `json:"nproc"`
	Kernel    string `json:"kernel"`
	CPU       string `json:"cpu,omitempty"`
	GoVersion string `json:"go_version"`
}

func machine() Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}
