// Package settings holds the daemon's own settings — queues, fail mode, listeners, logs,
// limits: the daemon: section of the config file and the flags of `sgd run` that override
// it — their schema, their validation with AWS error codes, and their resolution into the
// values the daemon runs with. They are not the Security Group model (internal/rules);
// the one thing they hand it is the SG quotas (Section.Quotas).
package settings

import (
	"os"
	"strings"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// Key is the config file's top-level key of the section (SPEC 2.1, README "Daemon
// settings"): the file stays one document, and the SG model's loader reads this key as
// a rules.Section owned here.
const Key = "daemon"

// Defaults (README "Daemon settings").
const (
	DefaultQueueNum        = 100
	DefaultMetricsListen   = "127.0.0.1:9640"
	DefaultStatusSocket    = "/run/sgd/sgd.sock"
	DefaultDeniedLogPerSec = 10
	DefaultFlowLogInterval = 60
	DefaultMaxTracked      = 262144
	DefaultStateDir        = "/var/lib/sgd"
	DefaultEtcdPrefix      = "/sgd/"
	// DefaultMemberTTL is daemon.etcd.member_ttl's default, in seconds (SPEC 4.6).
	DefaultMemberTTL = 10
)

// Section is the daemon's settings as written: the config file's daemon: section, or the
// flags of `sgd run`, whose set fields win over it (Resolve). Every field is optional;
// pointers mark "not set" where the zero value is meaningful. The zero value sets nothing.
// The yaml tags are the file's field names, matched exactly (rules.Parse); the json tags,
// the same names, are for printing.
type Section struct {
	QueueNum                *int   `yaml:"queue_num" json:"queue_num"`
	QueueCount              *int   `yaml:"queue_count" json:"queue_count"`
	FailOpen                bool   `yaml:"fail_open" json:"fail_open"`
	ExemptDHCP              *bool  `yaml:"exempt_dhcp" json:"exempt_dhcp"`
	AllowRelatedICMP        bool   `yaml:"allow_related_icmp" json:"allow_related_icmp"`
	MaxTrackedConnections   *int   `yaml:"max_tracked_connections" json:"max_tracked_connections"`
	MetricsListen           string `yaml:"metrics_listen" json:"metrics_listen"`
	LogLevel                string `yaml:"log_level" json:"log_level"`
	LogFormat               string `yaml:"log_format" json:"log_format"`
	FlowLogFile             string `yaml:"flow_log_file" json:"flow_log_file"`
	FlowLogInterval         *int   `yaml:"flow_log_interval" json:"flow_log_interval"`
	FastPath                *bool  `yaml:"fast_path" json:"fast_path"`
	RulesPerGroupQuota      *int   `yaml:"rules_per_group_quota" json:"rules_per_group_quota"`
	GroupsPerInterfaceQuota *int   `yaml:"groups_per_interface_quota" json:"groups_per_interface_quota"`
	DeniedLogPerSecond      *int   `yaml:"denied_log_per_second" json:"denied_log_per_second"`
	StatusSocket            string `yaml:"status_socket" json:"status_socket"`
	AccountID               string `yaml:"account_id" json:"account_id"`
	// APIListen, when set, is where the EC2 Query API listens (SPEC 4.4; off by default).
	APIListen          string `yaml:"api_listen" json:"api_listen"`
	APICredentialsFile string `yaml:"api_credentials_file" json:"api_credentials_file"`
	StateDir           string `yaml:"state_dir" json:"state_dir"`
	// Audit judges, tracks, counts and logs every packet as usual but drops none: what
	// would have been dropped is counted as verdict would_drop (SPEC 4.8). It implies
	// fail_open: nothing is dropped while no daemon answers either.
	Audit bool `yaml:"audit" json:"audit"`
	// AdoptEstablished tracks the host's established TCP connections at start, so that
	// starting sgd cuts none of them (default true).
	AdoptEstablished *bool `yaml:"adopt_established" json:"adopt_established"`
	// AllowMissingInterfaces starts sgd although a configured interface does not exist
	// (yet); it is filtered from the moment it appears.
	AllowMissingInterfaces bool `yaml:"allow_missing_interfaces" json:"allow_missing_interfaces"`
	// Etcd, when it names endpoints, is fleet mode (SPEC 4.6): the API's objects live in
	// etcd and this host enforces them.
	Etcd *EtcdSection `yaml:"etcd" json:"etcd"`
}

// EtcdSection is the daemon: section's etcd: mapping as written (SPEC 4.6).
type EtcdSection struct {
	// Endpoints are etcd's client URLs (http:// or https://); the flag takes them
	// comma-separated.
	Endpoints []string `yaml:"endpoints" json:"endpoints"`
	// CACert verifies etcd's server certificate; Cert and Key, given together, are this
	// host's client certificate. Any of them makes the connection TLS.
	CACert string `yaml:"cacert" json:"cacert"`
	Cert   string `yaml:"cert" json:"cert"`
	Key    string `yaml:"key" json:"key"`
	// Prefix is the key prefix of sgd's keys (DefaultEtcdPrefix when empty).
	Prefix string `yaml:"prefix" json:"prefix"`
	// HostID names this host in the fleet: its member record is <prefix>members/<host_id>
	// (default: the host name). Two live hosts with one id are refused.
	HostID string `yaml:"host_id" json:"host_id"`
	// MemberTTL is the lease, in seconds, of this host's member record: a host that stops
	// or is cut off from etcd drops out of other hosts' groups after it (default 10).
	MemberTTL *int `yaml:"member_ttl" json:"member_ttl"`
}

// Of returns the section of the file as Parse reads it: rules.Parse(name, data, s.Of())
// decodes the daemon: section into s.
func (s *Section) Of() rules.Section { return rules.Section{Key: Key, Into: s} }

// Quotas are the SG quotas the section sets, for rules.Options, as written: Validate
// reports one out of range, and validation of the SG model holds the config to it as
// written all the same (a quota of 17 groups is refused, and 17 groups are not also
// reported over it); one not set, or below 1, is AWS's default.
func (s *Section) Quotas() rules.Quotas {
	var q rules.Quotas
	if s.RulesPerGroupQuota != nil {
		q.RulesPerGroup = *s.RulesPerGroupQuota
	}
	if s.GroupsPerInterfaceQuota != nil {
		q.GroupsPerInterface = *s.GroupsPerInterfaceQuota
	}
	return q
}

// Daemon is the settings the daemon runs with: a config section with the command-line
// overrides applied and defaults filled in (Resolve). It is comparable: a reload that
// resolves to another Daemon has settings that take effect only at a restart.
type Daemon struct {
	QueueNum, QueueCount   uint16
	FailOpen               bool
	ExemptDHCP             bool
	AllowRelatedICMP       bool
	MaxTracked             int
	MetricsListen          string // "" = no metrics server
	LogLevel, LogFormat    string
	FlowLogFile            string
	FlowLogInterval        int
	FastPath               bool
	DeniedLogPerSec        int
	StatusSocket           string // "" = none
	AccountID              string
	Audit                  bool // drop nothing; count would_drop
	AdoptEstablished       bool
	AllowMissingInterfaces bool
	APIListen              string // "" = no EC2 API
	APICredentialsFile     string
	StateDir               string
	Etcd                   Etcd // fleet mode when Etcd.Endpoints is set
}

// Etcd is fleet mode's connection as resolved. Endpoints is comma-separated so that Daemon
// stays comparable; Fleet and EndpointList read it.
type Etcd struct {
	Endpoints         string // "" = no fleet mode
	CACert, Cert, Key string
	Prefix            string
	// HostID is the one set, else in fleet mode the host name (os.Hostname; "" when it
	// cannot be read): CheckHostID says whether it can be used.
	HostID    string
	MemberTTL int // seconds
}

// Fleet says whether the daemon is in fleet mode (etcd endpoints set).
func (e Etcd) Fleet() bool { return e.Endpoints != "" }

// EndpointList is Endpoints as a list.
func (e Etcd) EndpointList() []string {
	if e.Endpoints == "" {
		return nil
	}
	return strings.Split(e.Endpoints, ",")
}

// Resolve merges the config's section d with the overrides o (fields set there win) and
// fills in defaults.
func Resolve(d, o Section) Daemon {
	pick := func(a, b *int) *int {
		if b != nil {
			return b
		}
		return a
	}
	s := Daemon{QueueNum: DefaultQueueNum, QueueCount: 1, ExemptDHCP: true, MaxTracked: DefaultMaxTracked,
		MetricsListen: DefaultMetricsListen, LogLevel: "info", LogFormat: "json", FlowLogInterval: DefaultFlowLogInterval,
		DeniedLogPerSec: DefaultDeniedLogPerSec, StatusSocket: DefaultStatusSocket, AccountID: "000000000000",
		AdoptEstablished: true, StateDir: DefaultStateDir}
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
		{&s.APIListen, d.APIListen, o.APIListen},
		{&s.APICredentialsFile, d.APICredentialsFile, o.APICredentialsFile},
		{&s.StateDir, d.StateDir, o.StateDir},
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
	if s.APIListen == "off" {
		s.APIListen = ""
	}
	if p := pick(d.FlowLogInterval, o.FlowLogInterval); p != nil {
		s.FlowLogInterval = *p
	}
	s.FastPath = true // SPEC 4.7: on by default; false judges every packet in sgd
	if o.FastPath != nil {
		s.FastPath = *o.FastPath
	} else if d.FastPath != nil {
		s.FastPath = *d.FastPath
	}
	s.Audit = d.Audit || o.Audit
	// Audit mode drops nothing, so not even while no daemon answers: its hooks fail open.
	s.FailOpen = s.FailOpen || s.Audit
	s.AllowMissingInterfaces = d.AllowMissingInterfaces || o.AllowMissingInterfaces
	if o.AdoptEstablished != nil {
		s.AdoptEstablished = *o.AdoptEstablished
	} else if d.AdoptEstablished != nil {
		s.AdoptEstablished = *d.AdoptEstablished
	}
	if p := pick(d.DeniedLogPerSecond, o.DeniedLogPerSecond); p != nil {
		s.DeniedLogPerSec = *p
	}
	s.Etcd = resolveEtcd(d.Etcd, o.Etcd)
	return s
}

// resolveEtcd merges the file's etcd: mapping with the flags', field by field.
func resolveEtcd(d, o *EtcdSection) Etcd {
	var f, g EtcdSection
	if d != nil {
		f = *d
	}
	if o != nil {
		g = *o
	}
	e := Etcd{Prefix: DefaultEtcdPrefix, MemberTTL: DefaultMemberTTL}
	if eps := g.Endpoints; len(eps) > 0 {
		e.Endpoints = strings.Join(eps, ",")
	} else if len(f.Endpoints) > 0 {
		e.Endpoints = strings.Join(f.Endpoints, ",")
	}
	for _, x := range []struct {
		dst  *string
		a, b string
	}{{&e.CACert, f.CACert, g.CACert}, {&e.Cert, f.Cert, g.Cert}, {&e.Key, f.Key, g.Key}, {&e.Prefix, f.Prefix, g.Prefix},
		{&e.HostID, f.HostID, g.HostID}} {
		if x.b != "" {
			*x.dst = x.b
		} else if x.a != "" {
			*x.dst = x.a
		}
	}
	if g.MemberTTL != nil {
		e.MemberTTL = *g.MemberTTL
	} else if f.MemberTTL != nil {
		e.MemberTTL = *f.MemberTTL
	}
	if e.HostID == "" && e.Fleet() {
		e.HostID, _ = os.Hostname() // "" on error: CheckHostID says so where it is used
	}
	return e
}
