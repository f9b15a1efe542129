package rules

import (
	"fmt"
	"strings"
)

// AWS EC2 API error codes sgd reports (SPEC 1.5), plus two of its own for files that do
// not parse at all.
const (
	CodeGroupIDMalformed    = "InvalidGroupId.Malformed"
	CodeGroupDuplicate      = "InvalidGroup.Duplicate"
	CodeGroupNotFound       = "InvalidGroup.NotFound"
	CodePrefixListNotFound  = "InvalidPrefixListID.NotFound"
	CodePrefixListMalformed = "InvalidPrefixListId.Malformed" // sic: EC2 spells this one Id, and .NotFound ID
	CodePermissionMalformed = "InvalidPermission.Malformed"
	CodePermissionDuplicate = "InvalidPermission.Duplicate"
	CodeParameterValue      = "InvalidParameterValue"
	CodeRulesLimit          = "RulesPerSecurityGroupLimitExceeded"
	CodeGroupsLimit         = "SecurityGroupsPerInterfaceLimitExceeded"
	CodeUnknownParameter    = "UnknownParameter"
	CodeMissingParameter    = "MissingParameter"
	CodeMalformedConfig     = "MalformedConfig"
	CodeInterfaceDuplicate  = "InvalidNetworkInterface.Duplicate"
	CodeInterfaceMalformed  = "InvalidNetworkInterfaceId.Malformed"
	CodeMemberAddrMalformed = "InvalidAddress.Malformed"
	CodeInstanceIDMalformed = "InvalidInstanceID.Malformed"
	CodePrefixListDuplicate = "InvalidPrefixListID.Duplicate"
	CodeRuleIDMalformed     = "InvalidSecurityGroupRuleId.Malformed"
)

// A Locator says where each part of a configuration was written, so that an error can
// point there: a file and a line for the config file (Document), a request's parameter
// for an API source. Paths are the config's own, from the top: field names as the yaml
// tags spell them and list indexes, e.g. ("security_groups", 2, "ingress", 0, "from_port").
type Locator interface {
	// Locate returns where the value at path was written. A path that goes further than
	// what was written gets the place of the nearest value on the way; nothing known is
	// the zero Location.
	Locate(path ...any) Location
}

// Location is where a value was written.
type Location struct {
	// File names the source: a file's path, or, for a source that is not a file, the
	// place in its own terms (an API source's "IpPermissions.1.FromPort").
	File string
	Line int // 0 when not known, or not a file
	// Blank: the key is written with no value at all (YAML's bare `egress:`), which reads
	// as omitted. Only a text format can say so; other sources leave it false.
	Blank bool
}

// Error is one problem in a configuration. It names where (file, line, the group or
// interface, the rule, the field) and the AWS error code a real EC2 API would give.
type Error struct {
	File  string
	Line  int    // 0 when unknown
	Where string // e.g. `group sg-web ingress[2]`
	Field string // e.g. `cidr_ipv4`
	Code  string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Where != "" {
		b.WriteString(e.Where)
		if e.Field != "" {
			b.WriteString(" " + e.Field)
		}
		b.WriteString(": ")
	} else if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	fmt.Fprintf(&b, "%s: %s", e.Code, e.Msg)
	return b.String()
}

// Errors is every problem found in one configuration; a config is rejected whole.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Codes lists the codes in order, for tests and metrics.
func (es Errors) Codes() []string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Code
	}
	return s
}
