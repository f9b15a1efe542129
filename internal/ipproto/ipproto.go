// Package ipproto is sgd's one vocabulary of IP protocols and ICMP message types: the
// numbers, the names sgd reads and prints, and the classes of ICMP message the packet
// path, the connection table, the rules and `sgd explain` each need to agree on.
package ipproto

import (
	"strconv"
	"strings"
)

// IANA protocol numbers sgd treats specially.
const (
	ICMP   = 1
	TCP    = 6
	UDP    = 17
	ICMPv6 = 58
)

// All stands for ip_protocol -1: every protocol (AWS's "all").
const All = -1

// Number returns the protocol number for a name AWS accepts (tcp, udp, icmp, icmpv6,
// case-insensitive), All for -1 or all, the number for 0–255, and false otherwise.
func Number(s string) (int, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "tcp":
		return TCP, true
	case "udp":
		return UDP, true
	case "icmp":
		return ICMP, true
	case "icmpv6":
		return ICMPv6, true
	case "-1", "all":
		return All, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return 0, false
	}
	return n, true
}

// Name is the name sgd prints for a protocol number (its number when it has no name).
func Name(n int) string {
	switch n {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case ICMP:
		return "icmp"
	case ICMPv6:
		return "icmpv6"
	case All:
		return "all"
	}
	return strconv.Itoa(n)
}

// HasPorts reports whether the protocol's flows are told apart by ports (TCP and UDP).
func HasPorts(proto uint8) bool { return proto == TCP || proto == UDP }

// IsICMP reports whether proto is ICMP or ICMPv6.
func IsICMP(proto uint8) bool { return proto == ICMP || proto == ICMPv6 }

// IsEcho reports whether typ is an echo request or reply of the protocol's ICMP (RFC 792:
// 8 and 0; RFC 4443 section 4: 128 and 129): the query messages a flow is tracked for.
func IsEcho(proto, typ uint8) bool {
	if proto == ICMP {
		return typ == 8 || typ == 0
	}
	return typ == 128 || typ == 129
}

// IsEchoRequest reports whether typ is an echo request (8; ICMPv6 128): the message that
// starts an echo flow.
func IsEchoRequest(proto, typ uint8) bool {
	if proto == ICMP {
		return typ == 8
	}
	return typ == 128
}

// ICMP echo request types, for rules that name ping.
const (
	EchoRequest   = 8
	EchoRequestV6 = 128
)

// NDP types: ICMPv6 router solicitation 133 to redirect 137 (RFC 4861), the neighbour
// discovery a VPC's fabric handles and Security Groups never filter (SPEC 1.2).
const (
	NDPFirst = 133
	NDPLast  = 137
)

// IsNDP reports whether an ICMPv6 message of this type is neighbour discovery.
func IsNDP(proto, typ uint8) bool { return proto == ICMPv6 && typ >= NDPFirst && typ <= NDPLast }

// QuotesPacket reports whether an ICMP message of this type is an error that quotes the
// offending packet: destination unreachable, source quench, redirect, time exceeded and
// parameter problem in IPv4 (RFC 792), destination unreachable, packet too big, time
// exceeded and parameter problem in IPv6 (RFC 4443 section 3).
func QuotesPacket(proto, typ uint8) bool {
	if proto == ICMP {
		return typ == 3 || typ == 4 || typ == 5 || typ == 11 || typ == 12
	}
	return typ >= 1 && typ <= 4
}

// IsRelatedError reports whether an ICMP error of this type may pass as related to a
// tracked flow (allow_related_icmp, SPEC 1.4): destination unreachable and time exceeded
// (ICMP 3 and 11; ICMPv6 1 and 3) and ICMPv6 packet too big (2). Redirects, source quench
// and parameter problems quote a packet too, but change routes or rates or report a
// header fault: they are judged by the rules.
func IsRelatedError(proto, typ uint8) bool {
	if proto == ICMP {
		return typ == 3 || typ == 11
	}
	return typ >= 1 && typ <= 3
}
