// Package bench is sgd's own throughput benchmark (SPEC 3.1): the same traffic over one
// veth pair between two network namespaces, with no filter (raw), with iptables and the
// kernel's conntrack enforcing the policy (kernel), and with sgd enforcing it (sgd, and
// sgd with its kernel fast path), measured in one run and compared as ratios.
//
// The forwarded paths (SPEC 4.3, hypervisor mode) measure the same traffic between two
// ports of one bridge in a third, "hypervisor" namespace: no filter (fwd-raw), iptables
// with physdev and conntrack in the hypervisor's FORWARD chain (fwd-kernel), and sgd in
// the hypervisor judging both ports (fwd-sgd: the client port's egress, then the server
// port's ingress).
//
// The figures: TCP bulk throughput over one stream (iperf3, receiver side), 64-byte UDP
// datagrams delivered per second (counted by the receiver; the sender pushes batches with
// sendmmsg as fast as it can) and new TCP connections per second (connect, a 4-byte
// request, a 3-byte response, close; a few concurrent workers). Each figure is measured
// Repeat times, the paths interleaved, and the medians compared.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// The paths, in the order they are measured.
const (
	Raw         Path = "raw"          // no filter at all
	Kernel      Path = "kernel"       // iptables + kernel conntrack, the same policy
	SGD         Path = "sgd"          // sgd run, every packet through NFQUEUE
	SGDFastPath Path = "sgd-fastpath" // sgd run --fast-path: tracked flows bypass the queue
)

// The forwarded paths: client and server are two ports of one bridge in the hypervisor's
// namespace, where the filter runs. sgd's fast path does not offload ports (SPEC 4.3), so
// there is no fwd-sgd-fastpath.
const (
	FwdRaw    Path = "fwd-raw"    // the bridge, br_netfilter's iptables calls off
	FwdKernel Path = "fwd-kernel" // iptables FORWARD with physdev + conntrack in the hypervisor
	FwdSGD    Path = "fwd-sgd"    // sgd run in the hypervisor with both bridge ports under ports:
)

// AllPaths lists every path in measuring order.
var AllPaths = []Path{Raw, Kernel, SGD, SGDFastPath, FwdRaw, FwdKernel, FwdSGD}

// DefaultPaths are measured when Options.Paths is nil: the veth pair's.
var DefaultPaths = []Path{Raw, Kernel, SGD, SGDFastPath}

// ForwardedPaths are the bridge's.
var ForwardedPaths = []Path{FwdRaw, FwdKernel, FwdSGD}

// Forwarded reports whether p runs on the bridge topology.
func (p Path) Forwarded() bool { return p == FwdRaw || p == FwdKernel || p == FwdSGD }

// filters reports whether p enforces the policy (every path but the two raw ones).
func (p Path) filters() bool { return p != Raw && p != FwdRaw }

// runsSGD reports whether p runs sgd.
func (p Path) runsSGD() bool { return p == SGD || p == SGDFastPath || p == FwdSGD }

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
	Repeat   int           // measurements per figure and path
	Queues   int           // --queue-count for sgd; 0 leaves sgd's default
	Paths    []Path        // nil: DefaultPaths
	Figures  []Figure      // nil: AllFigures (TCP is skipped with a note when iperf3 is missing)
	Version  string        // sgd's version, for the report
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
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	rep := newReport(o)
	for _, tool := range []string{"ip", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			return rep, fmt.Errorf("%s is not installed (the benchmark needs iproute2 and iptables): %w", tool, err)
		}
	}
	if slices.Contains(o.Figures, TCP) {
		if _, err := exec.LookPath("iperf3"); err != nil {
			o.Figures = slices.DeleteFunc(slices.Clone(o.Figures), func(f Figure) bool { return f == TCP })
			rep.Notes = append(rep.Notes, "TCP bulk throughput skipped: iperf3 is not installed (apt-get install iperf3)")
			fmt.Fprintln(o.Progress, "note: iperf3 is not installed; skipping TCP bulk throughput (apt-get install iperf3)")
		}
	}
	rep.Figures = o.Figures

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
	b.steps = b.o.Repeat * len(b.o.Paths) * len(b.o.Figures)
	b.progress("measuring: %d paths × %d figures × %d repeats, %s each (+ warm-up)", len(b.o.Paths), len(b.o.Figures), b.o.Repeat, b.o.Duration)
	for r := 1; r <= b.o.Repeat; r++ {
		for _, p := range b.o.Paths {
			if err := b.session(ctx, r, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// session sets path p up, checks that it enforces the policy, measures every figure once
// and tears it down.
func (b *bencher) session(ctx context.Context, r int, p Path) (err error) {
	b.t = b.direct
	if p.Forwarded() {
		b.t = b.fwd
	}
	if err := b.setup(ctx, p); err != nil {
		return fmt.Errorf("set up path %s: %w", p, err)
	}
	defer func() {
		if terr := b.teardown(p); terr != nil && err == nil {
			err = fmt.Errorf("tear down path %s: %w", p, terr)
		}
	}()
	if err := b.checkPolicy(ctx, p); err != nil {
		return err
	}
	for _, f := range b.o.Figures {
		b.step++
		user0, sys0, drops0 := b.sgdUsage()
		s, err := b.measure(ctx, f)
		if err != nil {
			return fmt.Errorf("%s over %s: %w", f, p, err)
		}
		s.Path, s.Figure, s.Repeat = p, f, r
		if b.sgd != nil {
			user1, sys1, drops1 := b.sgdUsage()
			s.SGDCPUSeconds = user1 + sys1 - user0 - sys0
			s.SGDSysSeconds = sys1 - sys0
			s.QueueDrops = drops1 - drops0
		}
		b.rep.Samples = append(b.rep.Samples, s)
		line := fmt.Sprintf("[%2d/%d] repeat %d  %-12s %-4s %s", b.step, b.steps, r, p, f, formatValue(f, s.Value))
		if s.Errors > 0 {
			line += fmt.Sprintf("  (%d failed)", s.Errors)
		}
		if b.sgd != nil {
			line += fmt.Sprintf("  sgd CPU %.0f%% (kernel %.0f%%), queue drops %d", 100*s.SGDCPUSeconds/s.Seconds, 100*s.SGDSysSeconds/s.Seconds, s.QueueDrops)
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
