package metrics

import (
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func fullMetrics(t *testing.T) *Metrics {
	t.Helper()
	m := New(Options{
		Snapshot:       fullSnapshot,
		QueueStatsPath: queueFile(t, realQueueLines),
		Queues:         []uint16{0, 1},
		Version:        "v0.1.0",
		GoVersion:      "go1.26.8",
	})
	m.ReloadResult(true, time.Unix(1700000000, 0))
	m.ReloadResult(false, time.Unix(1700000100, 0))
	m.SetConfigInfo("3f2a9c")
	return m
}

// The metric-name lint (STYLE 15): every family on the registry, sgd's and the Go
// and process collectors', passes promlint.
func TestPromlint(t *testing.T) {
	mfs, err := fullMetrics(t).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// Every series SPEC 2.5 and the package doc promise is there, and sgd's series carry
// only the bounded label names: never an address, port or flow key.
func TestFamiliesAndLabels(t *testing.T) {
	mfs, err := fullMetrics(t).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	allowed := []string{"direction", "verdict", "reason", "group", "rule", "protocol",
		"result", "hash", "queue", "interface", "state", "version", "goversion"}
	got := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		got[name] = true
		if !strings.HasPrefix(name, "sgd_") {
			continue
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(allowed, l.GetName()) {
					t.Errorf("%s has label %q; want one of %v", name, l.GetName(), allowed)
				}
			}
		}
	}
	for _, want := range []string{
		"sgd_packets_total", "sgd_bytes_total",
		"sgd_rule_hits_total", "sgd_group_hits_total",
		"sgd_tracked_flows", "sgd_conntrack_allowance_exceeded_total",
		"sgd_config_reloads_total", "sgd_config_last_reload_success_timestamp_seconds", "sgd_config_info",
		"sgd_queue_dropped_total", "sgd_queue_user_dropped_total", "sgd_queue_waiting",
		"sgd_build_info", "sgd_interfaces", "sgd_offloaded_flows", "sgd_offloaded_packets_total",
		"go_goroutines", "process_start_time_seconds",
	} {
		if !got[want] {
			t.Errorf("family %s missing from the registry", want)
		}
	}
}

// Values of one scrape of a full snapshot, through the same handler the daemon serves.
func TestScrapeValues(t *testing.T) {
	srv := httptest.NewServer(fullMetrics(t).Handler())
	defer srv.Close()
	s := scrape(t, srv.URL)
	for _, tc := range []struct{ series, want string }{
		{`sgd_packets_total{direction="ingress",reason="rule",verdict="accept"}`, "10"},
		{`sgd_packets_total{direction="egress",reason="conntrack_full",verdict="drop"}`, "2"},
		{`sgd_bytes_total{direction="ingress",reason="tracked",verdict="accept"}`, "90000"},
		{`sgd_rule_hits_total{group="sg-web",rule="sg-web/ingress/2"}`, "3"},
		{`sgd_group_hits_total{group="sg-web"}`, "10"},
		{`sgd_group_hits_total{group="sg-db"}`, "5"},
		{`sgd_tracked_flows{protocol="tcp"}`, "4"},
		{`sgd_tracked_flows{protocol="other"}`, "0"},
		{`sgd_conntrack_allowance_exceeded_total`, "2"},
		{`sgd_offloaded_flows`, "3"},
		{`sgd_offloaded_packets_total`, "1234"},
		{`sgd_config_reloads_total{result="success"}`, "1"},
		{`sgd_config_reloads_total{result="failure"}`, "1"},
		// The failed reload at 1700000100 does not move the timestamp.
		{`sgd_config_last_reload_success_timestamp_seconds`, "1.7e+09"},
		{`sgd_config_info{hash="3f2a9c"}`, "1"},
		{`sgd_queue_dropped_total{queue="1"}`, "40"},
		{`sgd_queue_user_dropped_total{queue="1"}`, "9"},
		{`sgd_queue_waiting{queue="1"}`, "12"},
		{`sgd_queue_waiting{queue="0"}`, "0"},
		{`sgd_build_info{goversion="go1.26.8",version="v0.1.0"}`, "1"},
		{`sgd_packets_total{direction="ingress",reason="no_rule",verdict="would_drop"}`, "4"},
		{`sgd_interfaces{interface="eth0",state="present"}`, "1"},
		{`sgd_interfaces{interface="veth-sgd",state="missing"}`, "1"},
	} {
		if got, ok := s[tc.series]; !ok || got != tc.want {
			t.Errorf("scrape[%s] = %q (present %v); want %q", tc.series, got, ok, tc.want)
		}
	}
	// Queue 3 is in the file but not sgd's.
	for k := range s {
		if strings.Contains(k, `queue="3"`) {
			t.Errorf("scrape has %s; queue 3 is not sgd's", k)
		}
	}
}

// Repeated label sets in a snapshot are summed instead of failing the scrape.
func TestDuplicatesSummed(t *testing.T) {
	m := New(Options{Snapshot: func() Snapshot {
		return Snapshot{
			Packets:    []Count{{"ingress", "drop", "no_rule", 2}, {"ingress", "drop", "no_rule", 3}},
			RuleHits:   []RuleHit{{"sg-a", "sg-a/ingress/0", 1}, {"sg-a", "sg-a/ingress/0", 4}},
			Interfaces: []string{"eth0", "eth0"},
		}
	}})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	s := scrape(t, srv.URL)
	for _, tc := range []struct{ series, want string }{
		{`sgd_packets_total{direction="ingress",reason="no_rule",verdict="drop"}`, "5"},
		{`sgd_rule_hits_total{group="sg-a",rule="sg-a/ingress/0"}`, "5"},
		{`sgd_group_hits_total{group="sg-a"}`, "5"},
		{`sgd_interfaces{interface="eth0",state="present"}`, "1"},
	} {
		if got := s[tc.series]; got != tc.want {
			t.Errorf("scrape[%s] = %q; want %q", tc.series, got, tc.want)
		}
	}
}

// With no snapshot callback, no config info and no queues the registry still
// gathers: only what New owns is present.
func TestZeroOptions(t *testing.T) {
	mfs, err := New(Options{}).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sgd []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "sgd_") {
			sgd = append(sgd, mf.GetName())
		}
	}
	want := []string{"sgd_build_info", "sgd_config_last_reload_success_timestamp_seconds", "sgd_config_reloads_total"}
	if !slices.Equal(sgd, want) {
		t.Errorf("New(Options{}) families = %v; want %v", sgd, want)
	}
}

// A missing statistics file, or one with a malformed line, never fails the scrape:
// the queue series are absent, or hold the good lines.
func TestQueueFileProblems(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		want       map[string]string // series -> value; nil = no queue series at all
	}{
		{"missing", "/nonexistent/nfnetlink_queue", nil},
		{"empty", queueFile(t, ""), nil},
		{"malformed line skipped", queueFile(t, "    0 1 2 2 65531 bogus 0 1 1\n    1 1 7 2 65531 8 9 10 1\n"),
			map[string]string{`sgd_queue_waiting{queue="1"}`: "7", `sgd_queue_dropped_total{queue="1"}`: "8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Options{QueueStatsPath: tc.path, Queues: []uint16{0, 1}})
			srv := httptest.NewServer(m.Handler())
			defer srv.Close()
			s := scrape(t, srv.URL)
			var queue []string
			for k := range s {
				if strings.HasPrefix(k, "sgd_queue_") {
					queue = append(queue, k)
				}
			}
			if tc.want == nil && len(queue) > 0 {
				t.Errorf("queue series %v; want none", queue)
			}
			for k, v := range tc.want {
				if s[k] != v {
					t.Errorf("scrape[%s] = %q; want %q", k, s[k], v)
				}
			}
			if tc.want != nil && len(queue) != 3 {
				t.Errorf("queue series %v; want the 3 of queue 1 only", queue)
			}
		})
	}
}

// Reloads, config changes and scrapes from several goroutines (run with -race).
func TestConcurrentUse(t *testing.T) {
	m := fullMetrics(t)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				switch i {
				case 0:
					m.ReloadResult(j%2 == 0, time.Unix(int64(j), 0))
				case 1:
					m.SetConfigInfo(strings.Repeat("a", j%3+1))
				default:
					if _, err := m.Registry().Gather(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestConfigLoadedSetsTimeWithoutCounting(t *testing.T) {
	m := New(Options{})
	m.ConfigLoaded(time.Unix(1800000000, 0))
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "sgd_config_last_reload_success_timestamp_seconds":
			if v := mf.GetMetric()[0].GetGauge().GetValue(); v != 1800000000 {
				t.Errorf("last reload time = %v; want 1800000000", v)
			}
		case "sgd_config_reloads_total":
			for _, s := range mf.GetMetric() {
				if v := s.GetCounter().GetValue(); v != 0 {
					t.Errorf("ConfigLoaded counted a reload: %v", s)
				}
			}
		}
	}
}
