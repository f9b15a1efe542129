// Package rules holds sgd's Security Group model: the AWS-shaped configuration, its
// validation with AWS error codes, and the compiled, immutable policy packets are judged by.
//
// There are two worlds (STYLE.md): the config model below (strings, -1, pointers for
// "omitted") and the compiled Policy (prefix tries and port tables). Compile is the only
// bridge; the packet path only touches the compiled form.
package rules

import (
	"fmt"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"go.yaml.in/yaml/v3"
)

// Config is one sgd configuration file (SPEC 2.1). Field names follow the AWS
// SecurityGroupRule shape in snake_case. The zero value is a valid, empty config: every
// interface it would list gets AWS's default group.
//
// Parse is the only way in, for YAML and JSON alike; it matches keys exactly against the
// yaml tags. The json tags (the same names) are for printing a config as JSON: decoding one
// with encoding/json would match keys case-insensitively, with Unicode folding.
type Config struct {
	SecurityGroups []Group      `yaml:"security_groups" json:"security_groups"`
	PrefixLists    []PrefixList `yaml:"prefix_lists" json:"prefix_lists"`
	Interfaces     []Interface  `yaml:"interfaces" json:"interfaces"`
	Members        []Member     `yaml:"members" json:"members"`
	Daemon         Daemon       `yaml:"daemon" json:"daemon"`
}

// Group is a security group. Egress is a pointer so that an omitted egress (AWS's default
// allow-all rule) differs from an explicit empty list (no egress at all), SPEC 1.3.
type Group struct {
	GroupID     string  `yaml:"group_id" json:"group_id"`
	GroupName   string  `yaml:"group_name" json:"group_name"`
	Description string  `yaml:"description" json:"description"`
	Ingress     []Rule  `yaml:"ingress" json:"ingress"`
	Egress      *[]Rule `yaml:"egress" json:"egress"`
}

// Rule is one allow rule. Ports are pointers so that "omitted" differs from 0.
type Rule struct {
	IPProtocol        Protocol `yaml:"ip_protocol" json:"ip_protocol"`
	FromPort          *int     `yaml:"from_port" json:"from_port"`
	ToPort            *int     `yaml:"to_port" json:"to_port"`
	CidrIPv4          string   `yaml:"cidr_ipv4" json:"cidr_ipv4"`
	CidrIPv6          string   `yaml:"cidr_ipv6" json:"cidr_ipv6"`
	PrefixListID      string   `yaml:"prefix_list_id" json:"prefix_list_id"`
	ReferencedGroupID string   `yaml:"referenced_group_id" json:"referenced_group_id"`
	Description       string   `yaml:"description" json:"description"`
	// SecurityGroupRuleID, when set, is the rule's id (sgr- + 17 hex digits) instead of
	// the one derived from its content (SPEC 4.1).
	SecurityGroupRuleID string `yaml:"security_group_rule_id" json:"security_group_rule_id"`
}

// PrefixList is a named list of prefixes of either family (a customer-managed prefix list).
type PrefixList struct {
	PrefixListID string   `yaml:"prefix_list_id" json:"prefix_list_id"`
	Name         string   `yaml:"prefix_list_name" json:"prefix_list_name"`
	Entries      []string `yaml:"entries" json:"entries"`
}

// Interface is one of this host's network interfaces (an ENI) and the groups it carries.
type Interface struct {
	Name               string              `yaml:"name" json:"name"`
	SecurityGroups     []string            `yaml:"security_groups" json:"security_groups"`
	ConnectionTracking *ConnectionTracking `yaml:"connection_tracking" json:"connection_tracking"`
}

// ConnectionTracking holds the idle timeouts in seconds (AWS names, SPEC 1.4). An omitted
// field takes the AWS default.
type ConnectionTracking struct {
	TCPEstablishedTimeout *int `yaml:"tcp_established_timeout" json:"tcp_established_timeout"`
	UDPTimeout            *int `yaml:"udp_timeout" json:"udp_timeout"`
	UDPStreamTimeout      *int `yaml:"udp_stream_timeout" json:"udp_stream_timeout"`
}

// Member is another host's address and the groups it carries, so that rules referencing
// those groups match it.
type Member struct {
	Address        string   `yaml:"address" json:"address"`
	SecurityGroups []string `yaml:"security_groups" json:"security_groups"`
}

// Daemon holds the daemon's own settings. Every field is optional; command-line flags of
// `sgd run` override them. Pointers mark "not set" where the zero value is meaningful.
type Daemon struct {
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
	FastPath                bool   `yaml:"fast_path" json:"fast_path"`
	RulesPerGroupQuota      *int   `yaml:"rules_per_group_quota" json:"rules_per_group_quota"`
	GroupsPerInterfaceQuota *int   `yaml:"groups_per_interface_quota" json:"groups_per_interface_quota"`
	DeniedLogPerSecond      *int   `yaml:"denied_log_per_second" json:"denied_log_per_second"`
	StatusSocket            string `yaml:"status_socket" json:"status_socket"`
	AccountID               string `yaml:"account_id" json:"account_id"`
}

// Protocol is ip_protocol as written: a name (tcp, udp, icmp, icmpv6, all), -1, or a
// number 0–255, either as a string or a bare number (JSON reaches it as YAML nodes too).
type Protocol string

// UnmarshalYAML accepts a scalar of any tag (ip_protocol: 6 and ip_protocol: "6" alike).
func (p *Protocol) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: ip_protocol must be a name or a number", n.Line)
	}
	*p = Protocol(n.Value)
	return nil
}

// Number returns the IANA protocol number, ipproto.All for -1/all, and false when p is not
// a protocol AWS accepts. Names are case-insensitive.
func (p Protocol) Number() (int, bool) { return ipproto.Number(string(p)) }
