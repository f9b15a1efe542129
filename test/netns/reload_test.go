package netns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricSet is one scrape of sgd's /metrics, parsed.
type metricSet map[string]*dto.MetricFamily

// scrape fetches /metrics from d's listener (127.0.0.1 inside d's namespace) and parses
// the text exposition.
func scrape(t *testing.T, d *sgd) metricSet {
	t.Helper()
	addr := netip.MustParseAddrPort(d.metrics)
	c, _, err := dialFrom(t, d.ns, addr, netip.AddrPort{}, 2*time.Second)
	if err != nil {
		t.Fatalf("metrics %v inside %s: %v", addr, d.ns, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req, err := http.NewRequest(http.MethodGet, "http://"+d.metrics+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true
	if err := req.Write(c); err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %s, %v: %.300s", resp.Status, err, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics (%s): %v\n%.2000s", resp.Header.Get("Content-Type"), err, body)
	}
	return fams
}

// sum adds up the series of family name whose labels include every pair of kv (name,
// value, name, value, …); ok is false when no series matches.
func (m metricSet) sum(name string, kv ...string) (v float64, ok bool) {
	f := m[name]
	if f == nil {
		return 0, false
	}
	for _, s := range f.GetMetric() {
		if !hasLabels(s, kv) {
			continue
		}
		ok = true
		switch {
		case s.Counter != nil:
			v += s.Counter.GetValue()
		case s.Gauge != nil:
			v += s.Gauge.GetValue()
		case s.Untyped != nil:
			v += s.Untyped.GetValue()
		}
	}
	return v, ok
}

// val is sum without the ok: an absent series reads as 0.
func (m metricSet) val(name string, kv ...string) float64 {
	v, _ := m.sum(name, kv...)
	return v
}

func hasLabels(s *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range s.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// label returns the value of label key of the first series of family name ("" if none).
func (m metricSet) label(name, key string) string {
	f := m[name]
	if f == nil || len(f.GetMetric()) == 0 {
		return ""
	}
	for _, l := range f.GetMetric()[0].GetLabel() {
		if l.GetName() == key {
			return l.GetValue()
		}
	}
	return ""
}

// waitReloads polls /metrics every 10 ms until sgd_config_reloads_total shows ok successes
// and bad failures, and returns that scrape; it fails the test when a counter overshoots
// or the reloads are not done within 5 s.
func waitReloads(t *testing.T, d *sgd, ok, bad float64) metricSet {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := scrape(t, d)
		gotOK := m.val("sgd_config_reloads_total", "result", "success")
		gotBad := m.val("sgd_config_reloads_total", "result", "failure")
		if gotOK > ok || gotBad > bad {
			t.Fatalf("sgd_config_reloads_total success=%v failure=%v; want %v and %v (a reload nobody asked for?)", gotOK, gotBad, ok, bad)
		}
		if gotOK == ok && gotBad == bad {
			return m
		}
		if time.Now().After(deadline) || !d.running() {
			t.Fatalf("sgd_config_reloads_total success=%v failure=%v after 5s (running %v); want %v and %v", gotOK, gotBad, d.running(), ok, bad)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// loopConfig is the policy of TestReloadLoopUnderTraffic: client may reach UDP 9000 and TCP
// 8080, plus one extra TCP port (%d) that changes with every valid reload, so each one
// publishes a different policy. No egress rule matches UDP or TCP, so every reply passes
// by tracking alone; the one egress rule lets out the host's own MLDv2 reports (ICMPv6
// 143 to ff02::16, sent when eth0's addresses come up and not exempt like neighbour
// discovery), which would otherwise be drops unrelated to the flows.
const loopConfig = `
security_groups:
  - group_id: sg-loop
    group_name: loop
    ingress:
      - {ip_protocol: udp, from_port: 9000, to_port: 9000, cidr_ipv4: 192.0.2.20/32}
      - {ip_protocol: tcp, from_port: 8080, to_port: 8080, cidr_ipv4: 192.0.2.20/32}
      - {ip_protocol: tcp, from_port: %d, to_port: %d, cidr_ipv4: %s, description: changes every reload}
    egress:
      - {ip_protocol: icmpv6, from_port: 143, to_port: -1, cidr_ipv6: "ff02::16/128", description: MLDv2 reports}
interfaces:
  - name: eth0
    security_groups: [sg-loop]
`

// udpLoad is what the datagram sender saw.
type udpLoad struct {
	sent, echoed, late int
	lost               []int // sequence numbers that got no echo within the wait
	err                error // a socket error other than a timeout
}

// tcpLoad is what the request/response client saw.
type tcpLoad struct {
	trips int
	err   error // the first failed round trip; the client stops there
}

// TestReloadLoopUnderTraffic checks SPEC 3.2 ("reloads in a loop while traffic runs drop no
// packet of an allowed flow") and 2.4: 50 file changes, valid and invalid files in turn,
// every fifth one reloaded once more by SIGHUP, while a UDP flow and a TCP connection,
// both allowed and both answered by tracking alone, run the whole time. Every datagram
// must be echoed, every round trip complete, every reload counted by result and trigger,
// and sgd must drop nothing at all.
//
// The config path is a symlink into another directory, and the file there is replaced
// atomically (write + rename): the watcher follows the link to it. Each step waits for
// its reload to be counted before the next, so the counts are exact.
func TestReloadLoopUnderTraffic(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	h, c := tp.host.ns, tp.client.ns
	listenEcho(t, h, ":8080", peerFirst)
	udpEcho(t, h, ":9000")

	real := filepath.Join(t.TempDir(), "sgd.yaml")
	valid := func(i int) string { return fmt.Sprintf(loopConfig, 8100+i, 8100+i, "192.0.2.20/32") }
	if err := os.WriteFile(real, []byte(valid(0)), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "sgd.yaml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	d := startSGD(t, h, link, nextQueue())
	base := scrape(t, d)
	baseOK := base.val("sgd_config_reloads_total", "result", "success")
	baseBad := base.val("sgd_config_reloads_total", "result", "failure")
	hash := base.label("sgd_config_info", "hash")
	if hash == "" {
		t.Fatalf("no sgd_config_info{hash} at start")
	}

	// The flows: their sockets are made in client's namespace here; the goroutines only
	// use them (a socket keeps its namespace) and never call t.Fatal.
	udpDst := netip.AddrPortFrom(tp.host.v4, 9000)
	var uc *net.UDPConn
	var err error
	inNS(t, c, func() { uc, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(udpDst)) })
	if err != nil {
		t.Fatalf("udp socket in %s: %v", c, err)
	}
	defer uc.Close()
	tcpDst := netip.AddrPortFrom(tp.host.v4, 8080)
	tc, _, err := dialFrom(t, c, tcpDst, netip.AddrPort{}, dialTimeout)
	if err != nil {
		t.Fatalf("connect client → %v: %v", tcpDst, err)
	}
	defer tc.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex // guards ul and tl
	var ul udpLoad
	var tl tcpLoad
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64)
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			msg := fmt.Sprintf("datagram %d", seq)
			if _, err := uc.Write([]byte(msg)); err != nil {
				mu.Lock()
				ul.err = fmt.Errorf("send %d: %w", seq, err)
				mu.Unlock()
				return
			}
			_ = uc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			echoed, late := false, 0
			var rerr error
			for !echoed && rerr == nil {
				n, err := uc.Read(buf)
				switch {
				case err != nil:
					rerr = err
				case string(buf[:n]) == msg:
					echoed = true
				default:
					late++ // the echo of an earlier datagram, after its wait
				}
			}
			var ne net.Error
			mu.Lock()
			ul.sent++
			ul.late += late
			if echoed {
				ul.echoed++
			} else {
				ul.lost = append(ul.lost, seq)
				if !errors.As(rerr, &ne) || !ne.Timeout() {
					ul.err = fmt.Errorf("receive %d: %w", seq, rerr)
				}
			}
			broken := ul.err != nil
			mu.Unlock()
			if broken {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			req := []byte(fmt.Sprintf("round trip %d\n", i))
			_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
			got := make([]byte, len(req))
			_, err := tc.Write(req)
			if err == nil {
				_, err = io.ReadFull(tc, got)
			}
			if err == nil && !bytes.Equal(got, req) {
				err = fmt.Errorf("echoed %q", got)
			}
			mu.Lock()
			if err != nil {
				tl.err = fmt.Errorf("round trip %d: %w", i, err)
			} else {
				tl.trips++
			}
			mu.Unlock()
			if err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopLoad()

	// Both flows must be running (and tracked) before the first reload.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		ready, failed := ul.echoed >= 10 && tl.trips >= 10, ul.err != nil || tl.err != nil || len(ul.lost) > 0
		mu.Unlock()
		if ready || failed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flows did not get going within 5s")
		}
	}
	before := scrape(t, d)

	const reloads, everySIGHUP = 50, 5
	wantOK, wantBad := baseOK, baseBad
	count := func(i int) {
		if i%2 == 1 {
			wantOK++
		} else {
			wantBad++
		}
		waitReloads(t, d, wantOK, wantBad)
	}
	for i := 1; i <= reloads; i++ {
		if i%2 == 1 {
			replaceFile(t, real, valid(i)) // the extra port moves: a different policy
		} else {
			replaceFile(t, real, fmt.Sprintf(loopConfig, 8100+i, 8100+i, "192.0.2.300/32")) // InvalidPermission.Malformed
		}
		count(i)
		// A fresh scrape: the registry gathers its collectors concurrently, so the one
		// that saw the reload counted may have read sgd_config_info just before.
		got := scrape(t, d).label("sgd_config_info", "hash")
		if i%2 == 1 && got == hash {
			t.Errorf("reload %d (valid, extra port %d): sgd_config_info hash still %s; want a new one", i, 8100+i, hash)
		}
		if i%2 == 0 && got != hash {
			t.Errorf("reload %d (invalid): sgd_config_info hash %s; want the running %s", i, got, hash)
		}
		hash = got
		if i%everySIGHUP == 0 {
			if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatalf("SIGHUP: %v", err)
			}
			count(i) // the same file again: the same result
			if got := scrape(t, d).label("sgd_config_info", "hash"); got != hash {
				t.Errorf("SIGHUP after reload %d: sgd_config_info hash %s; want %s (the same file)", i, got, hash)
			}
		}
		mu.Lock()
		failed := ul.err != nil || tl.err != nil || len(ul.lost) > 0
		mu.Unlock()
		if failed {
			break // report below
		}
		time.Sleep(20 * time.Millisecond) // let the flows cross each policy
	}
	time.Sleep(100 * time.Millisecond)
	stopLoad()
	after := scrape(t, d)

	mu.Lock()
	defer mu.Unlock()
	t.Logf("UDP: %d sent, %d echoed, %d late, lost %v; TCP: %d round trips", ul.sent, ul.echoed, ul.late, ul.lost, tl.trips)
	if ul.err != nil || len(ul.lost) > 0 || ul.late > 0 {
		t.Errorf("UDP flow client → %v during the reloads: lost %d of %d datagrams (seq %v), %d late echoes, error %v; want every one echoed",
			udpDst, len(ul.lost), ul.sent, ul.lost, ul.late, ul.err)
	}
	if tl.err != nil {
		t.Errorf("TCP connection client → %v during the reloads: %v after %d good round trips; want none to fail", tcpDst, tl.err, tl.trips)
	}
	if ul.sent < 100 || tl.trips < 100 {
		t.Errorf("only %d datagrams and %d round trips ran alongside the reloads; want ≥ 100 each", ul.sent, tl.trips)
	}
	const each = (reloads + reloads/everySIGHUP) / 2 // valid and invalid alike
	if got := after.val("sgd_config_reloads_total", "result", "success") - baseOK; got != each {
		t.Errorf("sgd_config_reloads_total{result=success} rose by %v; want %d", got, each)
	}
	if got := after.val("sgd_config_reloads_total", "result", "failure") - baseBad; got != each {
		t.Errorf("sgd_config_reloads_total{result=failure} rose by %v; want %d", got, each)
	}
	out := d.out.String()
	if n := strings.Count(out, `"trigger": "file change"`); n != reloads {
		t.Errorf("sgd logged %d reloads triggered by a file change; want %d (one per replacement of the link's target)", n, reloads)
	}
	if n := strings.Count(out, `"trigger": "SIGHUP"`); n != reloads/everySIGHUP {
		t.Errorf("sgd logged %d reloads triggered by SIGHUP; want %d", n, reloads/everySIGHUP)
	}
	if d0, d1 := base.val("sgd_packets_total", "verdict", "drop"), after.val("sgd_packets_total", "verdict", "drop"); d1 != d0 {
		t.Errorf("sgd_packets_total{verdict=drop} went from %v to %v during the test; want no drop at all", d0, d1)
	}
	if a0, a1 := before.val("sgd_packets_total", "direction", "egress", "verdict", "accept", "reason", "tracked"),
		after.val("sgd_packets_total", "direction", "egress", "verdict", "accept", "reason", "tracked"); a1-a0 < float64(ul.sent) {
		t.Errorf("sgd_packets_total{egress,accept,tracked} rose by %v during the reloads; want ≥ %d (every echo is a tracked reply)", a1-a0, ul.sent)
	}
	for _, name := range []string{"sgd_queue_dropped_total", "sgd_queue_user_dropped_total"} {
		if v, ok := after.sum(name); ok && v != 0 {
			t.Errorf("%s = %v; want 0", name, v)
		}
	}
	// The last valid file is in force: its extra port is allowed (nothing listens: refused).
	checkTCP(t, c, netip.AddrPortFrom(tp.host.v4, 8100+reloads-1), refused)
}

// addRuleConfig allows client only TCP 8099 (%s adds rules).
const addRuleConfig = `
security_groups:
  - group_id: sg-add
    group_name: add
    ingress:
      - {ip_protocol: tcp, from_port: 8099, to_port: 8099, cidr_ipv4: 192.0.2.20/32}%s
    egress: []
interfaces:
  - name: eth0
    security_groups: [sg-add]
`

// TestReloadAddsRuleWithinOneSecond checks SPEC 2.4 and 1.4 by the clock: a rule added by
// rewriting the config file lets a new connection in within 1 s of the write (file watch,
// debounce and compile included); when it is removed again, the connection it let in
// keeps working and a new one times out.
func TestReloadAddsRuleWithinOneSecond(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	h, c := tp.host.ns, tp.client.ns
	listenEcho(t, h, ":8080", peerFirst)
	p8080 := netip.AddrPortFrom(tp.host.v4, 8080)
	without := fmt.Sprintf(addRuleConfig, "")
	with := fmt.Sprintf(addRuleConfig, "\n      - {ip_protocol: tcp, from_port: 8080, to_port: 8080, cidr_ipv4: 192.0.2.20/32}")
	config := writeConfig(t, without)
	d := startSGD(t, h, config, nextQueue())

	checkTCP(t, c, p8080, timeout)

	const bar, poll = time.Second, 50 * time.Millisecond
	start := time.Now()
	replaceFile(t, config, with)
	var conn *net.TCPConn
	for attempt := 1; conn == nil; attempt++ {
		next := time.Now().Add(poll)
		cn, _, err := dialFrom(t, c, p8080, netip.AddrPort{}, poll)
		switch {
		case err == nil:
			conn = cn
			continue
		case classify(err) != timeout:
			t.Fatalf("connect client → %v, attempt %d, %v after the write: %v; want a timeout or a connection", p8080, attempt, time.Since(start).Round(time.Millisecond), err)
		case time.Since(start) > bar:
			t.Fatalf("connect client → %v still times out %v after the rule was added (%d attempts); want a connection within %v",
				p8080, time.Since(start).Round(time.Millisecond), attempt, bar)
		}
		time.Sleep(time.Until(next))
	}
	took := time.Since(start)
	defer conn.Close()
	t.Logf("a new connection got in %v after the rule was written", took.Round(time.Millisecond))
	if took > bar {
		t.Errorf("connect client → %v worked %v after the rule was added; want within %v", p8080, took.Round(time.Millisecond), bar)
	}
	roundTrip(t, conn, []byte("let in by the new rule\n"))
	waitReloads(t, d, 1, 0) // exactly one reload for one write (the debounce gathers the rename's events)

	replaceFile(t, config, without)
	waitReloads(t, d, 2, 0)
	roundTrip(t, conn, []byte("a tracked connection outlives its rule\n"))
	checkTCP(t, c, p8080, timeout)
	roundTrip(t, conn, []byte("still\n"))
}

// metricsConfig allows client TCP 8080 only (one rule, sg-met/ingress/0, with an explicit
// rule id: metrics name rules by id).
const metricsConfig = `
security_groups:
  - group_id: sg-met
    group_name: metrics
    ingress:
      - {ip_protocol: tcp, from_port: 8080, to_port: 8080, cidr_ipv4: 192.0.2.20/32, security_group_rule_id: sgr-0123456789abcdef0}
    egress: []
interfaces:
  - name: eth0
    security_groups: [sg-met]
`

// TestMetricsMove checks SPEC 2.5 on a live daemon: the series it names exist and move with
// the traffic — accepted packets and the allowing rule's hits, ingress drops for want of a
// rule, the tracked TCP flow gauge while a connection is open — and build info is there.
func TestMetricsMove(t *testing.T) {
	requireEnv(t)
	tp := newTopology(t)
	h, c := tp.host.ns, tp.client.ns
	listenEcho(t, h, ":8080", peerFirst)
	listenEcho(t, h, ":8099", peerFirst)
	d := startSGD(t, h, writeConfig(t, metricsConfig), nextQueue())
	const rule, group = "sgr-0123456789abcdef0", "sg-met"

	m0 := scrape(t, d)
	if v, ok := m0.sum("sgd_build_info"); !ok || v != 1 {
		t.Errorf("sgd_build_info = %v (present %v); want 1", v, ok)
	}
	if gv := m0.label("sgd_build_info", "goversion"); !strings.HasPrefix(gv, "go") {
		t.Errorf("sgd_build_info{goversion} = %q; want the Go version", gv)
	}
	if v, ok := m0.sum("sgd_interfaces", "interface", hostIf); !ok || v != 1 {
		t.Errorf("sgd_interfaces{interface=%q} = %v (present %v); want 1", hostIf, v, ok)
	}

	conn, _, err := dialFrom(t, c, netip.AddrPortFrom(tp.host.v4, 8080), netip.AddrPort{}, dialTimeout)
	if err != nil {
		t.Fatalf("connect client → 8080: %v", err)
	}
	defer conn.Close()
	roundTrip(t, conn, []byte("counted\n"))
	m1 := scrape(t, d)
	for _, s := range []struct {
		name string
		kv   []string
		want float64 // minimum rise
	}{
		{"sgd_packets_total", []string{"verdict", "accept"}, 4}, // SYN, ACK, data in; SYN/ACK, data out
		{"sgd_packets_total", []string{"direction", "ingress", "verdict", "accept", "reason", "rule"}, 1},
		{"sgd_packets_total", []string{"direction", "egress", "verdict", "accept", "reason", "tracked"}, 1},
		{"sgd_bytes_total", []string{"verdict", "accept"}, 100},
		{"sgd_rule_hits_total", []string{"group", group, "rule", rule}, 1},
		{"sgd_group_hits_total", []string{"group", group}, 1},
	} {
		if rise := m1.val(s.name, s.kv...) - m0.val(s.name, s.kv...); rise < s.want {
			t.Errorf("%s%v rose by %v after an allowed connection; want ≥ %v", s.name, s.kv, rise, s.want)
		}
	}
	if v := m1.val("sgd_tracked_flows", "protocol", "tcp"); v < 1 {
		t.Errorf("sgd_tracked_flows{protocol=tcp} = %v with a connection open; want ≥ 1", v)
	}

	checkTCP(t, c, netip.AddrPortFrom(tp.host.v4, 8099), timeout)
	m2 := scrape(t, d)
	noRule := []string{"direction", "ingress", "verdict", "drop", "reason", "no_rule"}
	if rise := m2.val("sgd_packets_total", noRule...) - m1.val("sgd_packets_total", noRule...); rise < 1 {
		t.Errorf("sgd_packets_total%v rose by %v after a blocked connect; want ≥ 1", noRule, rise)
	}
	if rise := m2.val("sgd_rule_hits_total", "rule", rule) - m1.val("sgd_rule_hits_total", "rule", rule); rise != 0 {
		t.Errorf("sgd_rule_hits_total{rule=%q} rose by %v for a blocked connect; want 0", rule, rise)
	}
	if v, ok := m2.sum("sgd_conntrack_allowance_exceeded_total"); !ok || v != 0 {
		t.Errorf("sgd_conntrack_allowance_exceeded_total = %v (present %v); want 0", v, ok)
	}
}
