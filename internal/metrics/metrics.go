// Package metrics exposes sgd's Prometheus series on a registry of its own.
//
// The packet path does not count through this package: it keeps per-worker atomic
// counters, and a scrape reads them through the Options.Snapshot callback and turns
// them into const metrics (see collector.go). What this package owns itself is the
// low-rate state: reload results, the current config hash, build info and the
// kernel's nfnetlink_queue statistics, read from /proc at scrape time.
//
// Every series name starts with "sgd_"; the standard Go and process collectors are
// registered next to them. Labels are a bounded set (direction, verdict, reason,
// group, rule, protocol, result, hash, queue, interface, version, goversion);
// addresses, ports and flow keys never become label values (SPEC 2.5, STYLE 7).
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultQueueStatsPath is where Linux reports per-queue nfnetlink_queue statistics.
const DefaultQueueStatsPath = "/proc/net/netfilter/nfnetlink_queue"

// scrapeTimeout bounds one /metrics request, snapshot callback included.
const scrapeTimeout = 10 * time.Second

// Snapshot is what the daemon reports at each scrape. All counters are cumulative
// since the daemon started; a counter that goes down reads as a reset to Prometheus.
type Snapshot struct {
	// Packets and Bytes are counted by direction (ingress|egress), verdict
	// (accept|drop, or would_drop in audit mode) and reason (a bounded set: no_rule, malformed, conntrack_full,
	// tracked, rule, untracked, rule_no_flow, related_icmp, exempt, ...).
	// Entries with the same three labels are summed.
	Packets []Count
	Bytes   []Count
	// RuleHits counts, per rule, the new flows and untracked packets it allowed.
	// Rule is the rule's security group rule id (sgr-…, stable across reloads); Group is
	// its group id.
	// sgd_group_hits_total is the sum over a group's rules.
	RuleHits []RuleHit
	// TrackedFlows is the number of flows in the connection table by protocol
	// (tcp, udp, icmp, other).
	TrackedFlows map[string]int
	// OffloadedFlows are the tracked flows the kernel carries (sgd_offloaded_flows), and
	// OffloadedPackets the packets it accepted for them without queueing
	// (sgd_offloaded_packets_total).
	OffloadedFlows   int
	OffloadedPackets uint64
	// ConntrackAllowanceExceeded counts packets dropped because the flow table was
	// full (SPEC 2.5: sgd_conntrack_allowance_exceeded_total).
	ConntrackAllowanceExceeded uint64
	// Interfaces are the configured interfaces.
	Interfaces []string
	// Missing are those of Interfaces this host does not have (yet): sgd_interfaces
	// labels them state="missing", the others state="present".
	Missing []string
}

// Count is one packet or byte counter.
type Count struct {
	Direction, Verdict, Reason string
	Value                      uint64
}

// RuleHit is the hit counter of one rule.
type RuleHit struct {
	Group, Rule string
	Value       uint64
}

// Options configure New. The zero value is usable: no snapshot series, no queue
// series, empty build info.
type Options struct {
	// Snapshot is called once per scrape. It may be called from several
	// goroutines at once (concurrent scrapes) and must not block for long.
	// Nil means the snapshot series are absent.
	Snapshot func() Snapshot
	// QueueStatsPath is the nfnetlink_queue statistics file; "" means
	// DefaultQueueStatsPath.
	QueueStatsPath string
	// Queues are the queue numbers sgd owns. Only those are reported; none
	// means no queue series.
	Queues []uint16
	// Version and GoVersion label sgd_build_info.
	Version, GoVersion string
}

// Metrics holds sgd's registry and the state it does not read from a snapshot.
// Create it with New; the zero value is not usable. All methods are safe for
// concurrent use, also while the registry is being scraped.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler

	reloads       *prometheus.CounterVec
	lastReloadOK  prometheus.Gauge
	configInfoMu  sync.Mutex
	configHash    string
	configInfoSet bool
}

// New builds a registry holding sgd's series and the Go and process collectors.
// It does no I/O; the snapshot and the queue statistics are read at scrape time.
func New(opt Options) *Metrics {
	if opt.QueueStatsPath == "" {
		opt.QueueStatsPath = DefaultQueueStatsPath
	}
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sgd_config_reloads_total",
		Help: "Configuration reloads by result (success or failure). A failed reload leaves the running rules in force.",
	}, []string{"result"})
	// Both results exist from the start, so rate() and alerts see a 0 rather than nothing.
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	m.lastReloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sgd_config_last_reload_success_timestamp_seconds",
		Help: "Unix time the running configuration came into force: the start, or the last successful reload.",
	})
	m.reg.MustRegister(
		m.reloads,
		m.lastReloadOK,
		configInfoCollector{m},
		newSnapshotCollector(opt),
		newQueueCollector(opt.QueueStatsPath, opt.Queues),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.handler = promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A series that cannot be collected (say, a label that is not valid UTF-8)
		// costs that series, not the whole scrape; promhttp_metric_handler_errors_total
		// counts it.
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.reg,
		MaxRequestsInFlight: 4,
		Timeout:             scrapeTimeout,
	}))
	return m
}

// Registry returns the registry all of sgd's series are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats. It is built
// once in New, so every call returns the same handler.
func (m *Metrics) Handler() http.Handler { return m.handler }

// ReloadResult counts one configuration reload in sgd_config_reloads_total; a
// successful one also sets sgd_config_last_reload_success_timestamp_seconds to at.
func (m *Metrics) ReloadResult(ok bool, at time.Time) {
	if !ok {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.lastReloadOK.Set(float64(at.UnixNano()) / 1e9)
}

// ConfigLoaded records the time a good config came into force without counting a reload
// (the config the daemon started with).
func (m *Metrics) ConfigLoaded(at time.Time) {
	m.lastReloadOK.Set(float64(at.UnixNano()) / 1e9)
}

// SetConfigInfo makes sgd_config_info{hash} report the running config: after it
// returns, a scrape shows exactly one series, labelled with hash, valued 1.
func (m *Metrics) SetConfigInfo(hash string) {
	m.configInfoMu.Lock()
	m.configHash, m.configInfoSet = hash, true
	m.configInfoMu.Unlock()
}

var configInfoDesc = prometheus.NewDesc("sgd_config_info",
	"The running configuration, identified by the hash of its file; always 1.", []string{"hash"}, nil)

// configInfoCollector emits the current hash. A custom collector rather than a
// GaugeVec, because Reset-then-Set would let a scrape in between see no hash at all.
type configInfoCollector struct{ m *Metrics }

func (c configInfoCollector) Describe(ch chan<- *prometheus.Desc) { ch <- configInfoDesc }

func (c configInfoCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.configInfoMu.Lock()
	hash, ok := c.m.configHash, c.m.configInfoSet
	c.m.configInfoMu.Unlock()
	if ok {
		ch <- constMetric(configInfoDesc, prometheus.GaugeValue, 1, hash)
	}
}

// constMetric is prometheus.MustNewConstMetric without the panic: a bad label value
// (invalid UTF-8) becomes an invalid metric, which fails that series only.
func constMetric(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}
