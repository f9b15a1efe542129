package conntrack

// State is a flow's protocol state. The TCP states follow Linux nf_conntrack_proto_tcp
// (without SYN_SENT2, folded into SYN_RECV, and without window tracking); UDP has three
// states that pick the AWS udp_timeout or udp_stream_timeout; ICMP echo and other
// protocols have one state each.
type State uint8

const (
	StateNone State = iota // no flow (also: a free slot)
	StateSynSent
	StateSynRecv
	StateEstablished
	StateFinWait
	StateCloseWait
	StateLastAck
	StateTimeWait
	StateClose
	StateUDPUnreplied // UDP seen from the originator only
	StateUDPReplied   // UDP with one request/response (the reply side has answered)
	StateUDPStream    // UDP with more than one request/response
	StateICMP         // ICMP echo
	StateOther        // any other protocol
	numStates
)

var stateNames = [numStates]string{
	StateNone:         "NONE",
	StateSynSent:      "SYN_SENT",
	StateSynRecv:      "SYN_RECV",
	StateEstablished:  "ESTABLISHED",
	StateFinWait:      "FIN_WAIT",
	StateCloseWait:    "CLOSE_WAIT",
	StateLastAck:      "LAST_ACK",
	StateTimeWait:     "TIME_WAIT",
	StateClose:        "CLOSE",
	StateUDPUnreplied: "UDP_UNREPLIED",
	StateUDPReplied:   "UDP_REPLIED",
	StateUDPStream:    "UDP_STREAM",
	StateICMP:         "ICMP",
	StateOther:        "OTHER",
}

func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return "UNKNOWN"
}

// TCP flag bits of the TCP header's flags byte (offset 13), RFC 9293 section 3.1.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// startsTCP reports whether a TCP packet with these flags may open a flow: a SYN without
// ACK, RST or FIN (ECN and other flags are ignored), as in nf_conntrack's tcp_new.
func startsTCP(flags uint8) bool {
	return flags&(tcpSYN|tcpACK|tcpRST|tcpFIN) == tcpSYN
}

// tcpEvent classifies a TCP packet the way nf_conntrack's get_conntrack_index does.
type tcpEvent uint8

const (
	evSYN tcpEvent = iota
	evSYNACK
	evFIN
	evACK
	evRST
	evNone
	numEvents
)

func tcpEventOf(flags uint8) tcpEvent {
	switch {
	case flags&tcpRST != 0:
		return evRST
	case flags&tcpSYN != 0:
		if flags&tcpACK != 0 {
			return evSYNACK
		}
		return evSYN
	case flags&tcpFIN != 0:
		return evFIN
	case flags&tcpACK != 0:
		return evACK
	}
	return evNone
}

// Pseudo-states in the transition table.
const (
	sIV = numStates + iota // invalid for this state: the packet is accepted as part of the flow, nothing changes
	sIG                    // ignored (e.g. a retransmission): as sIV
	sRS                    // a SYN that opens a new connection over a closed one (see step)
)

const (
	sNO = StateNone
	sSS = StateSynSent
	sSR = StateSynRecv
	sES = StateEstablished
	sFW = StateFinWait
	sCW = StateCloseWait
	sLA = StateLastAck
	sTW = StateTimeWait
	sCL = StateClose
)

// tcpNext[dir][event][state] is the next state; dir 0 is the originator, 1 the reply
// side. The table is Linux's tcp_conntracks (nf_conntrack_proto_tcp.c) with SYN_SENT2
// folded into SYN_RECV, and with SYNs after close handled as sgd needs them (sRS).
var tcpNext = [2][numEvents][sCL + 1]State{
	{ // originator
		/*            sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL */
		evSYN:    {sSS, sSS, sIG, sIG, sIG, sIG, sIG, sRS, sRS},
		evSYNACK: {sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV}, // sSR: simultaneous open
		evFIN:    {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL},
		evACK:    {sIV, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL},
		evRST:    {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		evNone:   {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
	{ // reply side
		/*            sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL */
		evSYN:    {sIV, sSR, sIV, sIV, sIV, sIV, sIV, sRS, sRS}, // sSS→sSR: simultaneous open
		evSYNACK: {sIV, sSR, sSR, sIG, sIG, sIG, sIG, sIG, sIG},
		evFIN:    {sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL},
		evACK:    {sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL},
		evRST:    {sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
		evNone:   {sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV},
	},
}

// stepResult is what a packet did to its flow.
type stepResult uint8

const (
	stepHit     stepResult = iota // part of the flow; state and deadline updated
	stepStale                     // part of the flow, but invalid or a retransmission: nothing updated
	stepRestart                   // a SYN from the originator over a closed flow: a new connection
	stepForeign                   // a SYN from the reply side over a closed flow: not part of it
)

// step advances f for a packet from the originator (orig) or the reply side with TCP
// flags flags (ignored for other protocols), refreshing its deadline from to.
//
// A SYN in TIME_WAIT or CLOSE is never part of the old flow. From the originator it opens
// a new connection (RFC 9293 section 3.6.1 allows reopening from TIME_WAIT), which the
// caller judges afresh. From the reply side it is an unsolicited connection attempt in the
// other direction on the same port pair, which the rules must judge: accepting it as
// "reply traffic" would let anyone who once received a connection from a port reach back
// into it for the next two minutes.
func step(f *flow, orig bool, flags uint8, now int64, to *[numStates]int64) stepResult {
	var next State
	switch f.state {
	case StateUDPUnreplied:
		next = StateUDPUnreplied
		if !orig {
			next = StateUDPReplied
		}
	case StateUDPReplied:
		next = StateUDPReplied
		if orig {
			next = StateUDPStream // the originator spoke again after a reply
		}
	case StateUDPStream, StateICMP, StateOther:
		next = f.state
	default:
		if f.state > sCL {
			return stepStale // unreachable: a free slot is never looked up
		}
		dir := 0
		if !orig {
			dir = 1
		}
		next = tcpNext[dir][tcpEventOf(flags)][f.state]
		switch next {
		case sIV, sIG:
			return stepStale
		case sRS:
			if orig {
				return stepRestart
			}
			return stepForeign
		}
	}
	f.state = next
	f.deadline = now + to[next]
	return stepHit
}
