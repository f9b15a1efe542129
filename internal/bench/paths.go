package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sgd-firewall/sgd/internal/lab"
)

// setup prepares s's filter in the namespace of the filter; checkPolicy then proves it.
func (b *bencher) setup(ctx context.Context, s session) error {
	p := s.path
	if p.Forwarded() {
		// fwd-sgd starts with br_netfilter's calls off: sgd turns them on (and back).
		if err := b.bridgeCalls(p.kind() == iptables || p.kind() == iptablesSet); err != nil {
			return err
		}
	}
	switch p.kind() {
	case noFilter:
		return nil
	case iptables:
		_, err := b.l.RunInput(ctx, b.t.judge, []byte(kernelRules(p.Forwarded(), s.rules)), "iptables-restore")
		return err
	case iptablesSet:
		if _, err := b.l.RunInput(ctx, b.t.judge, []byte(ipsetRestore(s.rules)), "ipset", "restore"); err != nil {
			return err
		}
		if _, err := b.l.RunInput(ctx, b.t.judge, []byte(kernelIPSetRules(p.Forwarded())), "iptables-restore"); err != nil {
			_, _ = b.l.Run(ctx, b.t.judge, "ipset", "destroy", ipsetName) // no rule refers to it
			return err
		}
		return nil
	case sgdDefault, sgdQueue, sgdUntracked:
		cfg := b.t.config(s)
		args := []string{b.o.SGD, "run", "--config", cfg.path, "--metrics-listen", "127.0.0.1:9640",
			"--status-socket", "off", "--log-format", "json", "--log-level", "info"}
		if p.kind() == sgdQueue {
			args = append(args, "--fast-path=false")
		}
		if b.o.Queues > 0 {
			args = append(args, "--queue-count", strconv.Itoa(b.o.Queues))
		}
		proc, err := b.l.Start(b.t.judge, s.String(), args...)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := proc.WaitFor(wctx, `"msg":"started"`); err != nil {
			_ = proc.Stop(5 * time.Second)
			return err
		}
		b.sgd = proc
		b.counters = b.rep.sgdCounters(p, s.rules)
		b.counters.Runs++
		b.counters.Args = args[1:]
		st, err := parseStarted(proc.Output())
		if err != nil {
			return err
		}
		b.counters.FastPath = st.FastPath
		return nil
	}
	return fmt.Errorf("unknown path %q", p)
}

func (b *bencher) teardown(p Path) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch p.kind() {
	case iptables:
		_, err := b.l.RunInput(ctx, b.t.judge, []byte(emptyRules), "iptables-restore")
		return err
	case iptablesSet:
		// The set can go only once no rule refers to it.
		if _, err := b.l.RunInput(ctx, b.t.judge, []byte(emptyRules), "iptables-restore"); err != nil {
			return err
		}
		_, err := b.l.Run(ctx, b.t.judge, "ipset", "destroy", ipsetName)
		return err
	case sgdDefault, sgdQueue, sgdUntracked:
		if b.sgd == nil {
			return nil
		}
		b.readMetrics(ctx)
		if user, sys, err := procCPU(b.sgd.PID()); err == nil {
			b.counters.CPUSeconds += user + sys
		}
		proc := b.sgd
		b.sgd, b.counters = nil, nil
		if err := proc.Stop(10 * time.Second); err != nil {
			return err
		}
		if err := proc.Err(); err != nil {
			return fmt.Errorf("sgd exited with %v; its log ends:\n%s", err, proc.Tail(10))
		}
		// A clean stop removes sgd's chains; check, so that the next path runs unfiltered.
		out, err := b.l.Run(ctx, b.t.judge, "iptables", "-t", "mangle", "-S")
		if err == nil && strings.Contains(out, "SGD-") {
			return fmt.Errorf("sgd stopped but left its chains:\n%s", out)
		}
	}
	return nil
}

// started is what the benchmark reads of sgd's "started" log line.
type started struct {
	Rules    *int  `json:"rules"`
	FastPath *bool `json:"fast_path"`
}

// parseStarted finds sgd's "started" line in its JSON log.
func parseStarted(log string) (started, error) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `"msg":"started"`) {
			continue
		}
		var st started
		if err := json.Unmarshal([]byte(line), &st); err != nil {
			return started{}, fmt.Errorf("sgd's started line: %w: %s", err, line)
		}
		return st, nil
	}
	return started{}, errors.New("sgd logged no started line")
}

// checkPolicy makes sure the path does what it says before it is measured: the filter
// holds the rules it was given (the N in front included), the allowed connection port
// answers, and a port outside the policy is refused on the raw paths (nothing listens)
// but silently dropped (a timeout) on the filtering paths. It prints what it found.
func (b *bencher) checkPolicy(ctx context.Context, s session) error {
	p := s.path
	held, err := b.checkLoaded(ctx, s)
	if err != nil {
		return fmt.Errorf("policy check on path %s: %w", s, err)
	}
	dial := func(port int, timeout time.Duration) error {
		dctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c, err := lab.DialContext(dctx, b.t.client.NS, "tcp4", net.JoinHostPort(serverAddr.String(), strconv.Itoa(port)))
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(portConn, 5*time.Second); err != nil {
		return fmt.Errorf("policy check on path %s: the allowed port tcp/%d does not answer: %w", s, portConn, err)
	}
	err = dial(portClosed, 300*time.Millisecond)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	refusedFast := errors.Is(err, syscall.ECONNREFUSED)
	if !p.filters() && !refusedFast {
		return fmt.Errorf("policy check on path %s: tcp/%d should be refused (nothing listens, nothing filters), got %v", s, portClosed, err)
	}
	if p.filters() && (err == nil || refusedFast) {
		return fmt.Errorf("policy check on path %s: tcp/%d should be dropped silently, got %v — the filter is not enforcing", s, portClosed, err)
	}
	probe := "dropped silently"
	if !p.filters() {
		probe = "refused"
	}
	b.progress("check %s: tcp/%d connects, tcp/%d %s%s", s, portConn, portClosed, probe, held)
	return nil
}

// checkLoaded makes sure the filter of s holds all of its rules (so that N rules in
// front are really there), and says what it holds.
func (b *bencher) checkLoaded(ctx context.Context, s session) (string, error) {
	p := s.path
	chain := "INPUT"
	if p.Forwarded() {
		chain = "FORWARD"
	}
	countChain := func(want string) (int, error) {
		out, err := b.l.Run(ctx, b.t.judge, "iptables", "-S", chain)
		if err != nil {
			return 0, err
		}
		got := countRules(out)
		if w := countRules(want); got != w {
			return got, fmt.Errorf("iptables holds %d rules in %s; %d were loaded:\n%s", got, chain, w, out)
		}
		return got, nil
	}
	switch p.kind() {
	case iptables:
		n, err := countChain(kernelRules(p.Forwarded(), s.rules))
		return fmt.Sprintf("; %d rules in %s", n, chain), err
	case iptablesSet:
		n, err := countChain(kernelIPSetRules(p.Forwarded()))
		if err != nil {
			return "", err
		}
		out, err := b.l.Run(ctx, b.t.judge, "ipset", "list", ipsetName, "-terse")
		if err != nil {
			return "", err
		}
		entries, err := setEntries(out)
		if want := s.rules + len(policyAllows); err == nil && entries != want {
			err = fmt.Errorf("ipset %s holds %d entries; want %d", ipsetName, entries, want)
		}
		return fmt.Sprintf("; %d rules in %s, %d entries in ipset %s", n, chain, entries, ipsetName), err
	case sgdDefault, sgdQueue, sgdUntracked:
		st, err := parseStarted(b.sgd.Output())
		if err != nil {
			return "", err
		}
		want := b.t.config(s).rules
		if st.Rules == nil {
			return "", errors.New("sgd's started line has no rule count")
		}
		if *st.Rules != want {
			return "", fmt.Errorf("sgd started with %d rules; its config compiles to %d", *st.Rules, want)
		}
		if p.kind() == sgdQueue && st.FastPath != nil && *st.FastPath {
			return "", errors.New("sgd run --fast-path=false started with fast_path true")
		}
		mode := ""
		if st.FastPath != nil {
			mode = fmt.Sprintf(", fast_path %v", *st.FastPath)
		}
		return fmt.Sprintf("; sgd started with %d rules%s", want, mode), nil
	}
	return "", nil
}

// sgdUsage returns the running sgd's CPU seconds (in user space and in the kernel) and
// the kernel's drops on its queues so far (zero when no sgd runs).
func (b *bencher) sgdUsage() (user, sys float64, drops uint64) {
	if b.sgd == nil {
		return 0, 0, 0
	}
	user, sys, _ = procCPU(b.sgd.PID())
	drops, _ = queueDrops(b.sgd.PID())
	return user, sys, drops
}

// procCPU reads the user and system CPU seconds (utime, stime) of a process from
// /proc/PID/stat (USER_HZ = 100 on every Linux architecture).
func procCPU(pid int) (user, sys float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	// After the comm: state(3) ... utime(14) stime(15): indexes 11 and 12 here.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return float64(ut) / 100, float64(st) / 100, nil
}

// queueDrops sums the kernel's drops (queue full, and failed deliveries to the reader) on
// every NFQUEUE of the network namespace of pid: /proc/PID/net/netfilter/nfnetlink_queue,
// columns queue, portid, waiting, copy mode, copy range, queue_dropped, user_dropped, ...
func queueDrops(pid int) (uint64, error) {
	return sumQueueDrops(fmt.Sprintf("/proc/%d/net/netfilter/nfnetlink_queue", pid))
}

func sumQueueDrops(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 7 {
			continue
		}
		d, _ := strconv.ParseUint(fs[5], 10, 64)
		u, _ := strconv.ParseUint(fs[6], 10, 64)
		total += d + u
	}
	return total, sc.Err()
}

// readMetrics adds sgd's packet counters (from its metrics endpoint inside the namespace
// it runs in) to the path's counters.
func (b *bencher) readMetrics(ctx context.Context) {
	ns := b.t.judge
	cl := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.DialContext(ctx, ns, network, addr)
		}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:9640/metrics", nil)
	if err != nil {
		return
	}
	resp, err := cl.Do(req)
	if err != nil {
		b.counters.MetricsError = err.Error()
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, `sgd_tracked_flows{protocol="`); ok {
			proto, val, _ := strings.Cut(rest, `"} `)
			if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
				if b.counters.TrackedAtStop == nil {
					b.counters.TrackedAtStop = map[string]uint64{}
				}
				b.counters.TrackedAtStop[proto] = max(b.counters.TrackedAtStop[proto], uint64(v))
			}
			continue
		}
		rest, ok := strings.CutPrefix(line, "sgd_packets_total{")
		if !ok {
			continue
		}
		labels, val, ok := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if !ok || err != nil {
			continue
		}
		var verdict, reason string
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "verdict":
				verdict = strings.Trim(v, `"`)
			case "reason":
				reason = strings.Trim(v, `"`)
			}
		}
		b.counters.Packets += uint64(v)
		if verdict == "drop" {
			if b.counters.Dropped == nil {
				b.counters.Dropped = map[string]uint64{}
			}
			b.counters.Dropped[reason] += uint64(v)
		}
	}
}
