// Package filter judges packets: it decodes them, asks the connection table, then the
// compiled Security Group policy, and returns a typed verdict with a typed reason. It also
// runs the NFQUEUE readers that feed it.
package filter

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
// each reason belongs to exactly one verdict (Reason.Verdict).
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
	ReasonExempt                     // accept: never filtered (NDP, an interface sgd does not filter)
	NumReasons
)

var reasonNames = [NumReasons]string{
	ReasonNoRule:       "no_rule",
	ReasonMalformed:    "malformed",
	ReasonTableFull:    "conntrack_full",
	ReasonUnknownIface: "unknown_interface",
	ReasonFragment:     "fragment",
	ReasonTracked:      "tracked",
	ReasonRule:         "rule",
	ReasonUntracked:    "untracked",
	ReasonRuleNoFlow:   "rule_no_flow",
	ReasonRelatedICMP:  "related_icmp",
	ReasonExempt:       "exempt",
}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Verdict is the verdict a reason implies.
func (r Reason) Verdict() Verdict {
	if r <= ReasonFragment {
		return Drop
	}
	return Accept
}

// Dir is the direction of a packet as sgd sees it: ingress (INPUT hook) or egress (OUTPUT).
type Dir uint8

const (
	DirIngress Dir = iota
	DirEgress
)

func (d Dir) String() string {
	if d == DirEgress {
		return "egress"
	}
	return "ingress"
}
