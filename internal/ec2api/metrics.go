package ec2api

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts API requests by action and result code, and times them. The labels are
// bounded: action is one the handler implements, "unsupported" or "unknown" (a request
// whose action was not read: not authenticated, or not an action); code is "Success" or an
// EC2 error code, a fixed set. A nil *Metrics counts nothing.
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers the API's collectors on reg:
//
//	sgd_api_requests_total{action,code}
//	sgd_api_request_duration_seconds{action}
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sgd_api_requests_total",
			Help: "EC2 API requests by action and result code (Success or the EC2 error code).",
		}, []string{"action", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sgd_api_request_duration_seconds",
			Help: "Time to answer an EC2 API request, by action; a change includes validating and publishing it.",
			// From a Describe on a small state (~100 µs) to a change that reloads a large
			// policy and fsyncs the store (tens of ms), with the 1 s bar of SPEC 3.1 in reach.
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"action"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) observe(action, code string, took time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(action, code).Inc()
	m.latency.WithLabelValues(action).Observe(took.Seconds())
}
