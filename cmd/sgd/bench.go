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
	fs := newFlags("bench", "[--duration D] [--repeat N] [--rules N,...] [--forwarded] [--plot FILE.svg] [--json FILE] [flags]",
		`Measure sgd against the kernel's own firewall in one run (SPEC 3.1), on one veth pair
between two network namespaces, server 192.0.2.1 and client 192.0.2.2. The policy is the
same on every filtering path: tcp/5201, udp/5202 and tcp/5203 from the client's /32 in,
anything else in dropped, everything out allowed (AWS's default egress).

Paths (--paths):
  raw            no filter at all
  kernel         iptables in the server's namespace with the kernel's conntrack, as a user
                 writes it: a RELATED,ESTABLISHED accept first, then one accept per rule
                 (-s PEER/32 -p PROTO --dport PORT -j ACCEPT), then DROP
  kernel+ipset   the same chain with every rule in one hash:ip,port ipset (the set lives
                 in the server's namespace and goes with it; needs ipset)
  sgd            this binary as `+"`sgd run`"+` in the server's namespace, in its default mode
  sgd-userspace  `+"`sgd run --fast-path=false`"+`: every packet through sgd's queue
  sgd-untracked  (only when named) `+"`sgd run`"+` with the policy's rules from 0.0.0.0/0: with
                 all egress allowed, their flows are untracked (SPEC 1.4), and sgd judges
                 every packet of an untracked flow on the queue, fast path or not
With --forwarded, the same five between two ports (vserver, vclient) of one bridge in a
third, "hypervisor" namespace (SPEC 4.3; needs br_netfilter loaded): fwd-raw (the bridge
alone), fwd-kernel and fwd-kernel+ipset (the hypervisor's FORWARD chain with physdev and
conntrack, br_netfilter's iptables calls on), fwd-sgd and fwd-sgd-userspace (sgd in the
hypervisor with both ports under ports:, judging the client's egress, then the server's
ingress).

Figures (--figures): tcp, bulk throughput over one stream (iperf3, the receiver's bit/s;
skipped without iperf3); udp, 64-byte datagrams per second delivered to the receiving
socket (sendmmsg as fast as it goes); conn, new TCP connections per second (4 workers:
connect, 4-byte request, 3-byte answer, close).

--rules N puts N non-matching rules in front of the policy's on every filtering path:
kernel, N lines of the chain after the ESTABLISHED accept (so new connections and every
datagram of an unreplied UDP flow walk them, established TCP does not); kernel+ipset, N
more entries in the one set; sgd, N more rules in the server's group (AWS's quota of 1000
rules per interface applies: N ≤ 997). The peers come from 198.51.100.0/24 and
203.0.113.0/24 and never match. A list, --rules 0,100,990, is the scale run: every
filtering path at every N (raw once), a table per figure with N as columns, and lines
over N in --plot.

Before each path is measured, the benchmark checks that it enforces the policy: the
filter holds every rule it was given (iptables -S, ipset list, sgd's "started" line), the
allowed port connects, and tcp/5209 is refused on the raw paths but dropped silently
(a timeout) on the filtering ones. Each figure is measured --repeat times, the paths in an
order shuffled per repeat (--seed repeats it; no path is first twice while repeats ≤
paths). The table shows each median with the lowest–highest of its repeats, warns (!)
where they differ by more than 20 %, gives the ratios (with their lowest–highest within
one repeat) and which SPEC 3.1 bars hold: with no rules in front, sgd ≥ 0.95 × kernel on
all three figures and sgd-userspace ≥ 0.9 / 0.6 / 0.8 × kernel; with 990 in front, sgd ≥
1.1 × kernel and ≥ 0.95 × kernel+ipset. Then sgd's own counters (CPU, kernel queue drops).

Progress goes to standard error, the table to standard output. Needs root, iproute2,
iptables, iperf3 and ipset (without one of the last two its figure or paths are skipped
with a note). Nothing outside the lab's namespaces changes, and everything is removed at
the end, also on Ctrl-C.`, stderr)
	duration := durationFlag(fs, "duration", 5*time.Second, "measured time per figure and path, with a unit: 5s, 1m (plus a short warm-up; iperf3 rounds up to whole seconds)")
	repeat := fs.Int("repeat", 3, "measurements per figure, path and rule count; the table shows their median and lowest–highest")
	queues := fs.Int("queues", 0, "--queue-count passed to sgd (default: sgd's own, 1)")
	rulesS := fs.String("rules", "0", fmt.Sprintf("non-matching rules in front of the policy's on every filtering path: a `count` (0–%d), or a comma-separated list for the scale run (0,100,990)", bench.MaxRules))
	seed := fs.Uint64("seed", 0, "seed of the measuring order, to repeat a run's order (default: a new one, printed)")
	jsonPath := fs.String("json", "", "also write every sample, the medians, spreads, ratios, bars and machine info to this `file`")
	plotPath := fs.String("plot", "", "also draw the figures as an SVG `file`: bars per path with lowest–highest whiskers, and for a scale run lines over N")
	pathsS := fs.String("paths", joinList(bench.DefaultPaths), "comma-separated `paths` to measure, of "+joinList(bench.AllPaths))
	forwarded := fs.Bool("forwarded", false, "add the forwarded paths ("+joinList(bench.ForwardedPaths)+") to --paths")
	figuresS := fs.String("figures", "tcp,udp,conn", "comma-separated `figures` to measure, of tcp,udp,conn")
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
	counts, err := parseCounts(*rulesS, bench.MaxRules)
	if err != nil {
		fmt.Fprintln(stderr, "sgd bench: --rules:", err)
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
		Paths: paths, Figures: figures, Rules: counts, Seed: *seed, Version: buildVersion(), Progress: stderr})
	code := 0
	if len(rep.Samples) > 0 {
		if err != nil {
			fmt.Fprintln(stdout, "(partial results: the run stopped early)")
		}
		fmt.Fprintln(stdout)
		rep.WriteTable(stdout)
		if *jsonPath != "" || *plotPath != "" {
			fmt.Fprintln(stdout)
		}
		for _, out := range []struct {
			flag, path, what string
			write            func(string) error
		}{
			{"--json", *jsonPath, "all samples", rep.WriteJSON},
			{"--plot", *plotPath, "the plot", rep.WriteSVG},
		} {
			if out.path == "" {
				continue
			}
			if werr := out.write(out.path); werr != nil {
				fmt.Fprintf(stderr, "sgd bench: %s: %v\n", out.flag, werr)
				code = 1
				continue
			}
			fmt.Fprintf(stdout, "%s written to %s\n", out.what, out.path)
		}
	}
	switch {
	case err == nil:
		return code
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintln(stderr, "sgd bench: interrupted; the namespaces were removed")
		return 130
	default:
		fmt.Fprintln(stderr, "sgd bench:", err)
		return 1
	}
}

// parseCounts parses a comma-separated list of rule counts, each 0–most, sorted and
// without repeats.
func parseCounts(s string, most int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a count of rules", f)
		}
		if n > most {
			return nil, fmt.Errorf("%d: at most %d (sgd holds a config to AWS's quota of 1000 rules per interface, and the policy's own 3 come on top; SPEC 3.1 measures 990)", n, most)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	slices.Sort(out)
	return slices.Compact(out), nil
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
