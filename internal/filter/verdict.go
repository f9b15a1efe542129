// Package filter is the judge: a pure decision over a decoded packet at an attachment
// point (an interface and a direction). It decodes the packet, runs the stages — screen,
// track (the connection table), decide (the compiled Security Group policy) — and returns
// a typed verdict with a typed reason. It knows nothing of how packets arrive: a transport
// (internal/nfqueue) feeds it.
package filter

import "github.com/sgd-firewall/sgd/internal/rules"

// Verdict is what happens to a packet.
type Verdict uint8

const (
	Drop Verdict = iota
	Accept
)

func (v Verdict) String() string {
	if v == Accept {
		return "accept"
	}
	return "drop"
}

// Reason says why a packet got its verdict. It is a bounded metric label and a log field;
// each reason belongs to exactly one verdict (Reason.Verdict, from one table).
type Reason uint8

const (
	ReasonNoRule       Reason = iota // drop: no rule of the interface's groups allows it
	ReasonMalformed                  // drop: truncated or inconsistent headers
	ReasonTableFull                  // drop: a new flow, and the connection table is full
	ReasonUnknownIface               // drop: the packet's interface index does not resolve
	ReasonFragment                   // drop: a fragment other than the first (no transport header to judge)
	ReasonTracked                    // accept: belongs to a tracked flow (either direction)
	ReasonRule                       // accept: a rule allows it; a new tracked flow starts
	ReasonUntracked                  // accept: a rule allows it; the flow is untracked (SPEC 1.4)
	ReasonRuleNoFlow                 // accept: a rule allows it; it starts no flow (TCP without SYN, ICMP non-query)
	ReasonRelatedICMP                // accept: an ICMP error about a tracked flow (allow_related_icmp)
	ReasonExempt                     // accept: never filtered (NDP, DHCP on the link, an interface sgd does not filter)
	ReasonSpoofedLocal               // drop: arrived with a source address of this host
	ReasonSpoofed                    // drop: an instance's port sent from an address not its own (source/dest check)
	NumReasons
)

// reasons holds each reason's name and verdict: a reason added without an entry here
// has the zero Verdict, Drop, and an empty name that TestReasonTable catches.
var reasons = [NumReasons]struct {
	name    string
	verdict Verdict
}{
	ReasonNoRule:       {"no_rule", Drop},
	ReasonMalformed:    {"malformed", Drop},
	ReasonTableFull:    {"conntrack_full", Drop},
	ReasonUnknownIface: {"unknown_interface", Drop},
	ReasonFragment:     {"fragment", Drop},
	ReasonTracked:      {"tracked", Accept},
	ReasonRule:         {"rule", Accept},
	ReasonUntracked:    {"untracked", Accept},
	ReasonRuleNoFlow:   {"rule_no_flow", Accept},
	ReasonRelatedICMP:  {"related_icmp", Accept},
	ReasonExempt:       {"exempt", Accept},
	ReasonSpoofedLocal: {"spoofed_local", Drop},
	ReasonSpoofed:      {"spoofed", Drop},
}

func (r Reason) String() string {
	if r < NumReasons {
		return reasons[r].name
	}
	return "unknown"
}

// Verdict is the verdict a reason implies (Drop for an unknown reason).
func (r Reason) Verdict() Verdict {
	if r < NumReasons {
		return reasons[r].verdict
	}
	return Drop
}

// Dir is the direction a packet crosses an attachment point in: the rules' own
// directions, ingress (toward what the groups protect) and egress (away from it).
type Dir = rules.Direction

const (
	DirIngress = rules.Ingress
	DirEgress  = rules.Egress
)
