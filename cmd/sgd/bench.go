package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sgd-firewall/sgd/internal/bench"
)

func cmdBench(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench", "[--duration D] [--repeat N] [--queues N] [--forwarded] [--json FILE]",
		`Measure sgd against the alternatives in one run, on one veth pair between two network
namespaces (SPEC 3.1): raw (no filter), kernel (iptables + the kernel's conntrack with
the same policy), sgd (this binary as `+"`sgd run`"+` in the server's namespace) and
sgd-fastpath (sgd run --fast-path). With --forwarded (or naming them in --paths), also
the forwarded paths of hypervisor mode (SPEC 4.3): client and server as two ports of one
bridge in a third namespace, with fwd-raw (the bridge alone), fwd-kernel (iptables in the
hypervisor's FORWARD chain with physdev and conntrack, br_netfilter on) and fwd-sgd (sgd
in the hypervisor with both ports under ports:, judging the client's egress and then the
server's ingress); they need br_netfilter loaded. Figures: TCP bulk throughput over one
stream (iperf3), 64-byte UDP datagrams per second delivered to the receiver, and new TCP
connections per second (connect, request, response, close). Each is measured --repeat
times with the paths interleaved; the table shows the medians, the ratios, their spread,
which SPEC 3.1 bars hold, then sgd's own counters (CPU, kernel queue drops). Progress
goes to standard error, the table to standard output. Needs root, iproute2, iptables and
iperf3 (without iperf3 the TCP figure is skipped). Nothing outside the lab's namespaces
changes.`, stderr)
	duration := durationFlag(fs, "duration", 5*time.Second, "measured time per figure and path, with a unit: 5s, 1m (plus a short warm-up; iperf3 rounds up to whole seconds)")
	repeat := fs.Int("repeat", 3, "measurements per figure and path; the table shows medians")
	queues := fs.Int("queues", 0, "--queue-count passed to sgd (default: sgd's own, 1)")
	jsonPath := fs.String("json", "", "also write every sample, the medians, ratios and machine info to this `file`")
	pathsS := fs.String("paths", joinList(bench.DefaultPaths), "comma-separated `paths` to measure, of "+joinList(bench.AllPaths))
	forwarded := fs.Bool("forwarded", false, "add the forwarded paths ("+joinList(bench.ForwardedPaths)+") to --paths")
	figuresS := fs.String("figures", "tcp,udp,conn", "comma-separated `figures` to measure")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *duration < 100*time.Millisecond || *repeat < 1 || *queues < 0 || *queues > 64 {
		fmt.Fprintln(stderr, "sgd bench: --duration must be at least 100ms, --repeat at least 1, --queues 0–64")
		return 2
	}
	if *forwarded {
		*pathsS += "," + joinList(bench.ForwardedPaths)
	}
	paths, err := parseList(*pathsS, bench.AllPaths)
	if err != nil {
		fmt.Fprintln(stderr, "sgd bench: --paths:", err)
		return 2
	}
	figures, err := parseList(*figuresS, bench.AllFigures)
	if err != nil {
		fmt.Fprintln(stderr, "sgd bench: --figures:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "sgd bench: needs root (network namespaces, iptables, NFQUEUE)")
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "sgd bench: cannot find my own binary to run as the daemon:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once; the next run sweeps the leftovers
	}()
	rep, err := bench.Run(ctx, bench.Options{SGD: exe, Duration: *duration, Repeat: *repeat, Queues: *queues,
		Paths: paths, Figures: figures, Version: buildVersion(), Progress: stderr})
	if len(rep.Samples) > 0 {
		if err != nil {
			fmt.Fprintln(stdout, "(partial results: the run stopped early)")
		}
		fmt.Fprintln(stdout)
		rep.WriteTable(stdout)
		if *jsonPath != "" {
			if jerr := rep.WriteJSON(*jsonPath); jerr != nil {
				fmt.Fprintln(stderr, "sgd bench: --json:", jerr)
				return 1
			}
			fmt.Fprintf(stdout, "\nall samples written to %s\n", *jsonPath)
		}
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintln(stderr, "sgd bench: interrupted; the namespaces were removed")
		return 130
	default:
		fmt.Fprintln(stderr, "sgd bench:", err)
		return 1
	}
}

// parseList parses a comma-separated subset of all, keeping the order of all.
func parseList[T ~string](s string, all []T) ([]T, error) {
	want := map[T]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(all, T(f)) {
			return nil, fmt.Errorf("%q is not one of %v", f, all)
		}
		want[T(f)] = true
	}
	if len(want) == 0 {
		return nil, errors.New("empty")
	}
	var out []T
	for _, a := range all {
		if want[a] {
			out = append(out, a)
		}
	}
	return out, nil
}

// joinList joins names with commas.
func joinList[T ~string](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = string(x)
	}
	return strings.Join(s, ",")
}

// unitDuration is a time.Duration flag whose error for a bare number says which unit to add.
type unitDuration time.Duration

func (d *unitDuration) String() string { return time.Duration(*d).String() }

func (d *unitDuration) Set(v string) error {
	x, err := time.ParseDuration(v)
	if err != nil {
		if _, nerr := strconv.ParseFloat(v, 64); nerr == nil {
			return fmt.Errorf("%q has no unit: use %ss (or ms, m)", v, v)
		}
		return errors.New("not a duration such as 5s, 500ms or 1m")
	}
	*d = unitDuration(x)
	return nil
}

func durationFlag(fs *flag.FlagSet, name string, def time.Duration, usage string) *time.Duration {
	d := unitDuration(def)
	fs.Var(&d, name, usage)
	return (*time.Duration)(&d)
}
