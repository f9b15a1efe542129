package settings

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/sgd-firewall/sgd/internal/rules"
)

// Validate checks the section's values and returns every problem, each with the AWS
// error code the EC2 API would give (InvalidParameterValue) and the place loc says the
// value was written (loc may be nil). Paths are the file's: ("daemon", "queue_num").
func (s *Section) Validate(loc rules.Locator) rules.Errors {
	var errs rules.Errors
	at := func(path ...any) rules.Location {
		if loc == nil {
			return rules.Location{}
		}
		return loc.Locate(path...)
	}
	add := func(l rules.Location, field, format string, a ...any) {
		errs = append(errs, &rules.Error{File: l.File, Line: l.Line, Where: Key, Field: field, Code: rules.CodeParameterValue,
			Msg: fmt.Sprintf(format, a...)})
	}
	rulesOK, groupsOK := s.quotasOK()
	if !rulesOK {
		add(at(Key, "rules_per_group_quota"), "rules_per_group_quota", "must be at least 1")
	}
	if !groupsOK {
		add(at(Key, "groups_per_interface_quota"), "groups_per_interface_quota",
			"must be 1–%d (AWS's maximum), not %d", rules.MaxGroupsPerInterface, *s.GroupsPerInterfaceQuota)
	}
	rulesQuota, groupsQuota := rules.DefaultRulesPerGroup, rules.DefaultGroupsPerInterface
	if s.RulesPerGroupQuota != nil {
		rulesQuota = *s.RulesPerGroupQuota
	}
	if s.GroupsPerInterfaceQuota != nil {
		groupsQuota = *s.GroupsPerInterfaceQuota
	}
	// Divide rather than multiply: a huge rules quota must not overflow into a small product.
	if rulesOK && groupsOK && rulesQuota > rules.MaxRulesTimesGroups/groupsQuota {
		add(at(Key), "rules_per_group_quota",
			"rules per group (%d) × groups per interface (%d) exceeds AWS's %d", rulesQuota, groupsQuota, rules.MaxRulesTimesGroups)
	}
	intRange := func(p *int, field string, lo, hi int) {
		if p != nil && (*p < lo || *p > hi) {
			add(at(Key, field), field, "%d is outside %d–%d", *p, lo, hi)
		}
	}
	intRange(s.QueueNum, "queue_num", 0, 65535)
	intRange(s.QueueCount, "queue_count", 1, 64)
	if s.QueueNum != nil && s.QueueCount != nil && *s.QueueNum+*s.QueueCount > 65536 {
		add(at(Key, "queue_count"), "queue_count", "queue_num + queue_count exceeds 65536")
	}
	intRange(s.MaxTrackedConnections, "max_tracked_connections", 1, 1<<26)
	intRange(s.FlowLogInterval, "flow_log_interval", 1, 3600)
	intRange(s.DeniedLogPerSecond, "denied_log_per_second", 0, 1000000)
	switch strings.ToLower(s.LogLevel) {
	case "", "debug", "info", "warn", "error":
	default:
		add(at(Key, "log_level"), "log_level", "%q is not debug, info, warn or error", s.LogLevel)
	}
	switch strings.ToLower(s.LogFormat) {
	case "", "json", "console":
	default:
		add(at(Key, "log_format"), "log_format", "%q is not json or console", s.LogFormat)
	}
	// "off" disables the server, as the flag does (README settings table; Resolve turns
	// it into no server). status_socket takes any path or "off" unchecked.
	if s.MetricsListen != "" && s.MetricsListen != "off" {
		if _, err := netip.ParseAddrPort(s.MetricsListen); err != nil {
			add(at(Key, "metrics_listen"), "metrics_listen", "%q is not ADDRESS:PORT or off", s.MetricsListen)
		}
	}
	if s.APIListen != "" && s.APIListen != "off" {
		if _, err := netip.ParseAddrPort(s.APIListen); err != nil {
			add(at(Key, "api_listen"), "api_listen", "%q is not ADDRESS:PORT or off", s.APIListen)
		}
	}
	if e := s.Etcd; e != nil {
		for i, u := range e.Endpoints {
			if msg := checkEndpoint(u); msg != "" {
				add(at(Key, "etcd", "endpoints", i), "etcd.endpoints", "%q %s", u, msg)
			}
		}
		if (e.Cert == "") != (e.Key == "") {
			add(at(Key, "etcd"), "etcd.cert", "etcd.cert and etcd.key go together: give both (this host's client certificate and its key) or neither")
		}
		if e.Prefix != "" && !strings.HasPrefix(e.Prefix, "/") {
			add(at(Key, "etcd", "prefix"), "etcd.prefix", "%q must start with /", e.Prefix)
		}
		if e.HostID != "" {
			if msg := CheckHostID(e.HostID); msg != "" {
				add(at(Key, "etcd", "host_id"), "etcd.host_id", "%q %s", e.HostID, msg)
			}
		}
		if p := e.MemberTTL; p != nil && (*p < MinMemberTTL || *p > MaxMemberTTL) {
			add(at(Key, "etcd", "member_ttl"), "etcd.member_ttl", "%d s is outside %d–%d s", *p, MinMemberTTL, MaxMemberTTL)
		}
	}
	return errs
}

// daemon.etcd.member_ttl's range, in seconds. Below 2 s etcd (with its default election
// timing, 100 ms heartbeats and 10 ticks) would grant its minimum lease, 2 s, instead;
// above 10 minutes a host that died would keep matching other hosts' group references
// for too long.
const (
	MinMemberTTL = 2
	MaxMemberTTL = 600
)

// MaxHostIDLen bounds daemon.etcd.host_id: a host name (at most 63 characters per DNS
// label) or a short fully qualified one fits.
const MaxHostIDLen = 128

// CheckHostID says what is wrong with a host id ("" when nothing is): it becomes the last
// element of an etcd key, so it is 1–128 letters, digits, dots, dashes and underscores,
// beginning with a letter or a digit (no slash, no space, nothing a shell or a log would
// mangle).
func CheckHostID(id string) string {
	switch {
	case id == "":
		return "is empty"
	case len(id) > MaxHostIDLen:
		return fmt.Sprintf("is longer than %d characters", MaxHostIDLen)
	}
	for i, c := range []byte(id) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '-' && c != '_') {
			return "must be letters, digits, '.', '-' and '_', beginning with a letter or a digit"
		}
	}
	return ""
}

// checkEndpoint says what is wrong with an etcd client URL ("" when nothing is).
func checkEndpoint(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "":
		return "is not a URL such as https://10.0.0.1:2379"
	case u.Scheme != "http" && u.Scheme != "https":
		return "must be http:// or https://"
	case u.Port() == "":
		return "has no port (etcd's client port is usually 2379)"
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.User != nil:
		return "must be scheme://host:port only"
	}
	return ""
}

// quotasOK says whether each quota, where set, is in range: rules per group at least 1,
// groups per interface 1–16 (AWS's maximum).
func (s *Section) quotasOK() (rulesOK, groupsOK bool) {
	rulesOK = s.RulesPerGroupQuota == nil || *s.RulesPerGroupQuota >= 1
	groupsOK = s.GroupsPerInterfaceQuota == nil ||
		(*s.GroupsPerInterfaceQuota >= 1 && *s.GroupsPerInterfaceQuota <= rules.MaxGroupsPerInterface)
	return rulesOK, groupsOK
}
