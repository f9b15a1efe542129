package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// snapshotCollector turns one Options.Snapshot call per scrape into const metrics,
// so the packet path counts with plain atomics and never touches a prometheus type.
// Build info rides along because it is just as constant.
type snapshotCollector struct {
	snapshot  func() Snapshot
	buildInfo prometheus.Metric

	packets, bytes     *prometheus.Desc
	ruleHits, groupHit *prometheus.Desc
	trackedFlows       *prometheus.Desc
	allowanceExceeded  *prometheus.Desc
	interfaces         *prometheus.Desc
	offloadedFlows     *prometheus.Desc
	offloadedPackets   *prometheus.Desc
	build              *prometheus.Desc
}

func newSnapshotCollector(opt Options) *snapshotCollector {
	traffic := []string{"direction", "verdict", "reason"}
	c := &snapshotCollector{
		snapshot: opt.Snapshot,
		packets: prometheus.NewDesc("sgd_packets_total",
			"Packets judged by sgd, by direction (ingress|egress), verdict (accept|drop; would_drop in audit mode) and reason.", traffic, nil),
		bytes: prometheus.NewDesc("sgd_bytes_total",
			"Bytes (whole IP packets) judged by sgd, by direction, verdict and reason.", traffic, nil),
		ruleHits: prometheus.NewDesc("sgd_rule_hits_total",
			"New flows and untracked packets allowed by each security group rule.", []string{"group", "rule"}, nil),
		groupHit: prometheus.NewDesc("sgd_group_hits_total",
			"New flows and untracked packets allowed by each security group (sum of its rules).", []string{"group"}, nil),
		trackedFlows: prometheus.NewDesc("sgd_tracked_flows",
			"Flows currently in sgd's connection table, by protocol.", []string{"protocol"}, nil),
		offloadedFlows: prometheus.NewDesc("sgd_offloaded_flows",
			"Tracked flows the kernel carries past the queue (the fast path); they count in sgd_tracked_flows too.", nil, nil),
		offloadedPackets: prometheus.NewDesc("sgd_offloaded_packets_total",
			"Packets of offloaded flows the kernel accepted without queueing them, from its accounting; they count in sgd_packets_total (reason tracked) too.",
			nil, nil),
		allowanceExceeded: prometheus.NewDesc("sgd_conntrack_allowance_exceeded_total",
			"Packets dropped because the connection table was full and could not track a new flow.", nil, nil),
		interfaces: prometheus.NewDesc("sgd_interfaces",
			"Interfaces sgd filters, from the configuration, by state: present, or missing (not on this host yet: filtered once it appears); always 1.",
			[]string{"interface", "state"}, nil),
		build: prometheus.NewDesc("sgd_build_info",
			"Build information of the running sgd; always 1.", []string{"version", "goversion"}, nil),
	}
	c.buildInfo = constMetric(c.build, prometheus.GaugeValue, 1, opt.Version, opt.GoVersion)
	return c
}

// Describe sends every descriptor the collector can emit, so the registry checks
// names and label sets once, at registration.
func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.packets, c.bytes, c.ruleHits, c.groupHit,
		c.trackedFlows, c.allowanceExceeded, c.interfaces, c.offloadedFlows, c.offloadedPackets, c.build} {
		ch <- d
	}
}

// Collect calls the snapshot callback once. Entries repeating a label set are summed
// (the registry would otherwise fail the scrape on a duplicate series).
func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- c.buildInfo
	if c.snapshot == nil {
		return
	}
	s := c.snapshot()

	emitCounts(ch, c.packets, s.Packets)
	emitCounts(ch, c.bytes, s.Bytes)

	type ruleKey struct{ group, rule string }
	rules := make(map[ruleKey]uint64, len(s.RuleHits))
	groups := make(map[string]uint64)
	for _, h := range s.RuleHits {
		rules[ruleKey{h.Group, h.Rule}] += h.Value
		groups[h.Group] += h.Value
	}
	for k, v := range rules {
		ch <- constMetric(c.ruleHits, prometheus.CounterValue, float64(v), k.group, k.rule)
	}
	for g, v := range groups {
		ch <- constMetric(c.groupHit, prometheus.CounterValue, float64(v), g)
	}

	for proto, n := range s.TrackedFlows {
		ch <- constMetric(c.trackedFlows, prometheus.GaugeValue, float64(n), proto)
	}
	ch <- constMetric(c.allowanceExceeded, prometheus.CounterValue, float64(s.ConntrackAllowanceExceeded))
	ch <- constMetric(c.offloadedFlows, prometheus.GaugeValue, float64(s.OffloadedFlows))
	ch <- constMetric(c.offloadedPackets, prometheus.CounterValue, float64(s.OffloadedPackets))

	seen := make(map[string]bool, len(s.Interfaces))
	for _, name := range s.Interfaces {
		if !seen[name] {
			seen[name] = true
			state := "present"
			if slices.Contains(s.Missing, name) {
				state = "missing"
			}
			ch <- constMetric(c.interfaces, prometheus.GaugeValue, 1, name, state)
		}
	}
}

func emitCounts(ch chan<- prometheus.Metric, d *prometheus.Desc, counts []Count) {
	type key struct{ dir, verdict, reason string }
	sum := make(map[key]uint64, len(counts))
	for _, c := range counts {
		sum[key{c.Direction, c.Verdict, c.Reason}] += c.Value
	}
	for k, v := range sum {
		ch <- constMetric(d, prometheus.CounterValue, float64(v), k.dir, k.verdict, k.reason)
	}
}
