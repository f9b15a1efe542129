// Package daemon runs sgd: it loads and compiles the config, opens the queues, installs
// the netfilter rules, reloads on SIGHUP or a change of the file, serves metrics and
// status, and removes its rules on a clean stop.
package daemon

import (
	"github.com/sgd-firewall/sgd/internal/rules"
)

// Defaults for the daemon settings (README "Daemon settings").
const (
	DefaultQueueNum        = 100
	DefaultMetricsListen   = "127.0.0.1:9640"
	DefaultStatusSocket    = "/run/sgd/sgd.sock"
	DefaultDeniedLogPerSec = 10
	DefaultFlowLogInterval = 60
	// FastPathMask is the field of packet/connection mark bits of the optional kernel fast
	// path: it holds the zone of the interface a flow was accepted on (netfilter.Spec), so
	// up to 255 interfaces are offloaded; flows of later ones stay on the queue.
	FastPathMask = 0x00ff0000
)

// Settings are the resolved daemon settings: the config's daemon section with command-line
// overrides applied and defaults filled in.
type Settings struct {
	QueueNum, QueueCount uint16
	FailOpen             bool
	ExemptDHCP           bool
	AllowRelatedICMP     bool
	MaxTracked           int
	MetricsListen        string // "" = no metrics server
	LogLevel, LogFormat  string
	FlowLogFile          string
	FlowLogInterval      int
	FastPath             bool
	DeniedLogPerSec      int
	StatusSocket         string // "" = none
	AccountID            string
}

// Resolve merges the config's daemon section d with the overrides o (fields set there
// win) and fills in defaults.
func Resolve(d, o rules.Daemon) Settings {
	pick := func(a, b *int) *int {
		if b != nil {
			return b
		}
		return a
	}
	s := Settings{QueueNum: DefaultQueueNum, QueueCount: 1, ExemptDHCP: true, MaxTracked: rules.DefaultMaxTracked,
		MetricsListen: DefaultMetricsListen, LogLevel: "info", LogFormat: "json", FlowLogInterval: DefaultFlowLogInterval,
		DeniedLogPerSec: DefaultDeniedLogPerSec, StatusSocket: DefaultStatusSocket, AccountID: "000000000000"}
	if p := pick(d.QueueNum, o.QueueNum); p != nil {
		s.QueueNum = uint16(*p)
	}
	if p := pick(d.QueueCount, o.QueueCount); p != nil {
		s.QueueCount = uint16(*p)
	}
	s.FailOpen = d.FailOpen || o.FailOpen
	if o.ExemptDHCP != nil {
		s.ExemptDHCP = *o.ExemptDHCP
	} else if d.ExemptDHCP != nil {
		s.ExemptDHCP = *d.ExemptDHCP
	}
	s.AllowRelatedICMP = d.AllowRelatedICMP || o.AllowRelatedICMP
	if p := pick(d.MaxTrackedConnections, o.MaxTrackedConnections); p != nil {
		s.MaxTracked = *p
	}
	for _, f := range []struct {
		dst  *string
		a, b string
	}{
		{&s.MetricsListen, d.MetricsListen, o.MetricsListen},
		{&s.LogLevel, d.LogLevel, o.LogLevel},
		{&s.LogFormat, d.LogFormat, o.LogFormat},
		{&s.FlowLogFile, d.FlowLogFile, o.FlowLogFile},
		{&s.StatusSocket, d.StatusSocket, o.StatusSocket},
		{&s.AccountID, d.AccountID, o.AccountID},
	} {
		if f.b != "" {
			*f.dst = f.b
		} else if f.a != "" {
			*f.dst = f.a
		}
	}
	if s.MetricsListen == "off" {
		s.MetricsListen = ""
	}
	if s.StatusSocket == "off" {
		s.StatusSocket = ""
	}
	if p := pick(d.FlowLogInterval, o.FlowLogInterval); p != nil {
		s.FlowLogInterval = *p
	}
	s.FastPath = d.FastPath || o.FastPath
	if p := pick(d.DeniedLogPerSecond, o.DeniedLogPerSecond); p != nil {
		s.DeniedLogPerSec = *p
	}
	return s
}
