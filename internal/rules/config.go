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

// Config is the Security Group part of sgd's configuration (SPEC 2.1): what a source —
// the config file today — proposes. Field names follow the AWS SecurityGroupRule shape in
// snake_case. The zero value is a valid, empty config: every interface it would list gets
// AWS's default group. The file's daemon: section is not the SG model's: the daemon's own
// code reads it (internal/settings), as a Section of the same document.
//
// Parse is the only way in, for YAML and JSON alike; it matches keys exactly against the
// yaml tags. The json tags (the same names) are for printing a config as JSON: decoding one
// with encoding/json would match keys case-insensitively, with Unicode folding.
type Config struct {
	SecurityGroups []Group      `yaml:"security_groups" json:"security_groups"`
	PrefixLists    []PrefixList `yaml:"prefix_lists" json:"prefix_lists"`
	Interfaces     []Interface  `yaml:"interfaces" json:"interfaces"`
	Ports          []Port       `yaml:"ports" json:"ports"`
	Members        []Member     `yaml:"members" json:"members"`
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

// Port is a network interface of a local instance (a VM, container or network namespace)
// as the host sees it: the host-side device, a bridge port or a routed veth (SPEC 4.3).
// sgd judges its traffic on the host's forwarding path, outside the instance. The
// instance's addresses are members of its groups (no members: entry needed), and with
// SourceDestCheck (the default) it may send from them only.
type Port struct {
	Name               string              `yaml:"name" json:"name"`
	InstanceID         string              `yaml:"instance_id" json:"instance_id"`
	NetworkInterfaceID string              `yaml:"network_interface_id" json:"network_interface_id"`
	Addresses          []string            `yaml:"addresses" json:"addresses"`
	SecurityGroups     []string            `yaml:"security_groups" json:"security_groups"`
	ConnectionTracking *ConnectionTracking `yaml:"connection_tracking" json:"connection_tracking"`
	// SourceDestCheck: nil is AWS's default, true.
	SourceDestCheck *bool `yaml:"source_dest_check" json:"source_dest_check"`
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
