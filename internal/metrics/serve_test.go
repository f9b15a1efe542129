package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDefaultListenIsLoopback(t *testing.T) {
	ap, err := netip.ParseAddrPort(DefaultListen)
	if err != nil {
		t.Fatalf("ParseAddrPort(%q): %v", DefaultListen, err)
	}
	if !ap.Addr().IsLoopback() || ap.Port() == 0 {
		t.Errorf("DefaultListen = %v; want a loopback address with a fixed port", ap)
	}
}

// freeAddr returns a loopback address nothing listens on (there is a small race with
// other processes between Close and reuse; acceptable in a test).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// The daemon's path end to end: Serve on a TCP port, scrape /metrics over HTTP,
// change the snapshot, reload, change the config, scrape again.
func TestServeFollowsSnapshot(t *testing.T) {
	src := &snapshotSource{s: fullSnapshot()}
	m := New(Options{Snapshot: src.get, QueueStatsPath: "/nonexistent", Version: "v1", GoVersion: "go1.26.8"})
	m.SetConfigInfo("old")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr := freeAddr(t)
	serveErr := make(chan error, 1)
	if err := Serve(ctx, addr, m.Handler(), func(err error) { serveErr <- err }); err != nil {
		t.Fatalf("Serve(%s) = %v", addr, err)
	}
	url := "http://" + addr + "/metrics"

	before := scrape(t, url)
	const accepted = `sgd_packets_total{direction="ingress",reason="rule",verdict="accept"}`
	if got := before[accepted]; got != "10" {
		t.Fatalf("first scrape %s = %q; want 10", accepted, got)
	}

	next := fullSnapshot()
	next.Packets[0].Value = 25
	next.RuleHits[0].Value = 9 // sg-web/ingress/0: 7 -> 9
	next.TrackedFlows["tcp"] = 1
	next.ConntrackAllowanceExceeded = 6
	src.set(next)
	m.ReloadResult(false, time.Unix(1800000000, 0))
	m.ReloadResult(true, time.Unix(1800000060, 0))
	m.SetConfigInfo("new")

	after := scrape(t, url)
	for _, tc := range []struct{ series, before, after string }{
		{accepted, "10", "25"},
		{`sgd_rule_hits_total{group="sg-web",rule="sg-web/ingress/0"}`, "7", "9"},
		{`sgd_group_hits_total{group="sg-web"}`, "10", "12"},
		{`sgd_tracked_flows{protocol="tcp"}`, "4", "1"},
		{`sgd_conntrack_allowance_exceeded_total`, "2", "6"},
		{`sgd_config_reloads_total{result="success"}`, "0", "1"},
		{`sgd_config_reloads_total{result="failure"}`, "0", "1"},
		{`sgd_config_last_reload_success_timestamp_seconds`, "0", "1.80000006e+09"},
		{`sgd_config_info{hash="old"}`, "1", ""},
		{`sgd_config_info{hash="new"}`, "", "1"},
	} {
		if before[tc.series] != tc.before || after[tc.series] != tc.after {
			t.Errorf("%s: scrapes = %q then %q; want %q then %q",
				tc.series, before[tc.series], after[tc.series], tc.before, tc.after)
		}
	}

	// The index page links /metrics; other paths are not found.
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `href="/metrics"`) {
		t.Errorf("GET / = %s %q; want 200 with a link to /metrics", resp.Status, body)
	}
	resp, err = http.Get("http://" + addr + "/flows")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /flows = %s; want 404", resp.Status)
	}

	// After ctx is done the port is released, and the shutdown is not an error.
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still bound 5s after cancel: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-serveErr:
		t.Errorf("onErr(%v) after a clean shutdown; want no call", err)
	case <-time.After(50 * time.Millisecond):
	}
}

// A busy address is reported by Serve itself, at once.
func TestServeBindError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Serve(t.Context(), ln.Addr().String(), http.NotFoundHandler(), nil)
	if err == nil {
		t.Fatalf("Serve(%s) on a bound port = nil; want an error", ln.Addr())
	}
}

// ServeListener blocks until ctx is done and then returns nil, closing the listener.
func TestServeListenerReturnsOnCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New(Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, m.Handler()) }()

	if s := scrape(t, "http://"+ln.Addr().String()+"/metrics"); s[`sgd_config_reloads_total{result="success"}`] != "0" {
		t.Errorf("scrape via ServeListener lacks sgd_config_reloads_total")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeListener after cancel = %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeListener did not return after cancel")
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Errorf("listener %s still accepts after ServeListener returned", ln.Addr())
	}
}
