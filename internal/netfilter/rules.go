package netfilter

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"

	"github.com/sgd-firewall/sgd/internal/ipproto"
)

// Names of the chains sgd owns. Nothing else in the ruleset is ever written by sgd except
// the one jump rule per built-in chain, which carries the comment jumpComment.
const (
	ChainInput   = "SGD-INPUT"    // table mangle, jumped to from INPUT
	ChainOutput  = "SGD-OUTPUT"   // table mangle, jumped to from OUTPUT
	ChainForward = "SGD-FORWARD"  // table mangle, jumped to from FORWARD (ports only)
	ChainSaveIn  = "SGD-SAVE-IN"  // table filter, jumped to from INPUT (fast path only)
	ChainSaveOut = "SGD-SAVE-OUT" // table filter, jumped to from OUTPUT (fast path only)

	jumpComment = "sgd"
)

// hook is one of sgd's chains and the built-in chain that jumps to it.
type hook struct {
	table   string // "mangle" or "filter"
	builtin string // "INPUT", "OUTPUT" or "FORWARD"
	chain   string // sgd's chain
}

// jumpArgs is the rule specification of the jump, as iptables -S prints it after
// "-A builtin " (the form matters: Remove finds jumps by comparing listing lines).
func (h hook) jumpArgs() []string {
	return []string{"-m", "comment", "--comment", jumpComment, "-j", h.chain}
}

var (
	queueHooks = [...]hook{{"mangle", "INPUT", ChainInput}, {"mangle", "OUTPUT", ChainOutput}}
	saveHooks  = [...]hook{{"filter", "INPUT", ChainSaveIn}, {"filter", "OUTPUT", ChainSaveOut}}
	// forwardHooks is installed only while ports are configured, so that a host without
	// ports has exactly the rules it had before ports existed.
	forwardHooks = [...]hook{{"mangle", "FORWARD", ChainForward}}
)

// Spec says which interfaces sgd filters and how packets reach its queues. The zero value
// is invalid (QueueCount 0); see Validate.
type Spec struct {
	// Interfaces are the names of the interfaces to filter (exact names, no iptables
	// "+" wildcard). Packets of other interfaces never reach sgd. "lo" is refused:
	// loopback is never filtered (SPEC 1.2).
	Interfaces []string
	// Ports are the host-side devices of local instances (SPEC 4.3): bridge ports (a veth
	// end, a tap) and routed veths. Their packets are queued on the forwarding path,
	// bridged (physdev, through br_netfilter) and routed (by device), and on the way to
	// and from the host itself; the judge maps each packet's devices to the ports'
	// attachment points. The fast path does not offload ports: all their packets are
	// queued.
	Ports []string
	// QueueNum is the first NFQUEUE queue number.
	QueueNum uint16
	// QueueCount is the number of queues (>= 1). With more than one, packets are spread
	// over QueueNum..QueueNum+QueueCount-1 by --queue-balance, and --queue-cpu-fanout
	// picks the queue by CPU so that one flow's packets stay in order on one queue.
	QueueCount uint16
	// FailOpen adds --queue-bypass: while no program listens on a queue, the kernel
	// accepts its packets instead of dropping them (SPEC 2.3 fail mode).
	FailOpen bool
	// FastPathMask, when non-zero, turns on the kernel fast path. It is a field of
	// contiguous mark bits that holds an interface's zone (Zones): sgd accepts packets of
	// tracked flows with their interface's zone in the field of the packet mark; the
	// filter table saves the field to the packet's conntrack entry; and a packet whose
	// conntrack entry carries the zone of the interface it crosses is accepted in the
	// mangle table without being queued. The zone ties the offload to the interface: the
	// kernel's conntrack does not key flows by interface, sgd does (SPEC 4.2). 0 turns it
	// off.
	FastPathMask uint32
	// Zones gives each interface's zone, for the fast path. An interface whose zone the
	// mask cannot hold (or that has none) is not offloaded: all its packets are queued.
	Zones map[string]uint16
}

// ZoneMark is zone placed in the mark field mask (contiguous bits), and whether it fits.
func ZoneMark(mask uint32, zone uint16) (uint32, bool) {
	if mask == 0 || zone == 0 {
		return 0, false
	}
	shift := bits.TrailingZeros32(mask)
	v := uint32(zone) << shift
	return v, v&^mask == 0 && uint32(zone) <= mask>>shift
}

// Validate reports the first problem with s: an interface name that Linux would refuse
// or that iptables would read as something else, "lo", a duplicate name, or a queue range
// that is empty or runs past 65535.
func (s Spec) Validate() error {
	if s.QueueCount == 0 {
		return errors.New("netfilter: queue count 0: need at least one queue")
	}
	if last := int(s.QueueNum) + int(s.QueueCount) - 1; last > 65535 {
		return fmt.Errorf("netfilter: queues %d..%d: last queue number above 65535", s.QueueNum, last)
	}
	seen := make(map[string]bool, len(s.Interfaces)+len(s.Ports))
	for i, name := range append(slices.Clone(s.Interfaces), s.Ports...) {
		if err := validIfName(name); err != nil {
			return err
		}
		if seen[name] && i >= len(s.Interfaces) {
			return fmt.Errorf("netfilter: port %q listed twice, or also as an interface", name)
		}
		if seen[name] {
			return fmt.Errorf("netfilter: interface %q listed twice", name)
		}
		seen[name] = true
	}
	if low := s.FastPathMask >> bits.TrailingZeros32(s.FastPathMask); low&(low+1) != 0 {
		// Shifted down, a contiguous field is all ones (0b0111): adding 1 carries through.
		return fmt.Errorf("netfilter: fast path mark bits %s are not contiguous", hex(s.FastPathMask))
	}
	return nil
}

// validIfName applies the kernel's dev_valid_name rules (non-empty, at most IFNAMSIZ-1 =
// 15 bytes, not "." or "..", no '/', ':' or whitespace) and, stricter, refuses what would
// not survive an iptables-restore line or would change meaning there: bytes outside
// printable ASCII, quotes, backslash, a leading '!' (negation) and a trailing '+'
// (iptables wildcard).
func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("netfilter: empty interface name")
	case len(name) > 15:
		return fmt.Errorf("netfilter: interface %q: longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Errorf("netfilter: interface %q: not a valid name", name)
	case name == "lo":
		return errors.New(`netfilter: interface "lo": loopback is never filtered`)
	case name[0] == '!':
		return fmt.Errorf("netfilter: interface %q: leading '!' would read as negation", name)
	case name[len(name)-1] == '+':
		return fmt.Errorf("netfilter: interface %q: trailing '+' is an iptables wildcard", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == ':' || c == '"' || c == '\'' || c == '\\' {
			return fmt.Errorf("netfilter: interface %q: byte %q at %d not allowed", name, c, i)
		}
	}
	return nil
}

// family selects the IPv4 or IPv6 flavour of the rules.
type family int

const (
	ipv4 family = iota
	ipv6
)

func (f family) String() string {
	if f == ipv6 {
		return "ipv6"
	}
	return "ipv4"
}

// rules returns the iptables-restore input (for --noflush) that replaces the contents of
// sgd's chains for family f. Declaring a chain (":NAME - [0:0]") under --noflush creates
// it or flushes it, so the whole content is swapped in one transaction per table; the
// jumps are not part of it (Apply adds them only when absent). Every rule is written in
// the canonical form iptables-save prints, so the text can be compared with a listing.
//
// Exemptions and the loopback RETURN are not tied to an interface: for an interface sgd
// does not filter the packet would RETURN anyway, so one rule serves all of them.
func rules(s Spec, f family) []byte {
	var b bytes.Buffer
	b.WriteString("*mangle\n")
	hooks := queueHooks[:]
	if len(s.Ports) > 0 {
		hooks = append(hooks, forwardHooks[:]...)
	}
	for _, h := range hooks {
		fmt.Fprintf(&b, ":%s - [0:0]\n", h.chain)
	}
	for _, h := range hooks {
		in := h.builtin == "INPUT"
		dev := "-o"
		if in {
			dev = "-i"
		}
		pre := "-A " + h.chain + " "
		if h.builtin != "FORWARD" {
			// Loopback is never filtered (SPEC 1.2); it is never forwarded.
			b.WriteString(pre + dev + " lo -j RETURN\n")
		}
		if f == ipv6 {
			// IPv6 is reassembled before the hooks only when conntrack runs in the
			// namespace (nf_defrag_ipv6), and the kernel turns it on only for a ruleset
			// that uses conntrack. This match does nothing else (no target): it makes
			// fragments reach sgd as whole datagrams (SPEC 1.4). IPv4 arriving is
			// reassembled before INPUT anyway, and leaving is fragmented after OUTPUT;
			// sgd drops the rare crafted IPv4 fragment rather than make the kernel track
			// every IPv4 packet (measured: a few percent of TCP throughput).
			fmt.Fprintf(&b, "%s-m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED\n", pre)
			// Neighbour discovery is never filtered (SPEC 1.2).
			for t := ipproto.NDPFirst; t <= ipproto.NDPLast; t++ {
				fmt.Fprintf(&b, "%s-p ipv6-icmp -m icmp6 --icmpv6-type %d -j RETURN\n", pre, t)
			}
		}
		queue := queueTarget(s)
		if h.builtin == "FORWARD" {
			forwardRules(&b, pre, f, queue, s.Ports)
			continue
		}
		for _, name := range s.Interfaces {
			if z, ok := ZoneMark(s.FastPathMask, s.Zones[name]); ok {
				// Not RELATED: an ICMP error related to a marked connection carries
				// its mark too, and must still be judged by sgd (allow_related_icmp).
				fmt.Fprintf(&b, "%s%s %s -m conntrack --ctstate NEW,ESTABLISHED -m connmark --mark %s/%s -j ACCEPT\n", pre, dev, name, hex(z), hex(s.FastPathMask))
			}
			fmt.Fprintf(&b, "%s%s %s %s\n", pre, dev, name, queue)
		}
		for _, name := range s.Ports {
			// A port's traffic with the host itself: bridged to the host's address on
			// the bridge (INPUT only: the bridge picks the port of a packet the host
			// sends after OUTPUT, so physdev-out cannot match there), and routed.
			if in {
				fmt.Fprintf(&b, "%s-m physdev --physdev-in %s %s\n", pre, name, queue)
			}
			fmt.Fprintf(&b, "%s%s %s %s\n", pre, dev, name, queue)
		}
	}
	b.WriteString("COMMIT\n")
	if s.FastPathMask != 0 {
		m := hex(s.FastPathMask)
		b.WriteString("*filter\n")
		for _, h := range saveHooks {
			fmt.Fprintf(&b, ":%s - [0:0]\n", h.chain)
		}
		for _, h := range saveHooks {
			// CONNMARK does not end the traversal: the host's own filter rules
			// still judge the packet.
			fmt.Fprintf(&b, "-A %s -m mark ! --mark 0x0/%s -j CONNMARK --save-mark --nfmask %s --ctmask %s\n",
				h.chain, m, m, m)
		}
		b.WriteString("COMMIT\n")
	}
	return b.Bytes()
}

// forwardRules writes sgd's FORWARD chain after its IPv6 prelude: the packets each port
// sends or receives through the host, bridged (physdev, through br_netfilter) or routed
// (by device). A packet between two ports matches the first rule of its source's and is
// queued once: the judge takes both points from its devices (JudgePath).
//
// IPv4 also gets the conntrack match here: a forwarded datagram is reassembled before
// FORWARD only when conntrack's defragmentation runs in the namespace, and a later
// fragment has no ports to judge (the judge drops it), so without it an instance's
// fragmented UDP would never arrive.
func forwardRules(b *bytes.Buffer, pre string, f family, queue string, ports []string) {
	if f == ipv4 {
		fmt.Fprintf(b, "%s-m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED\n", pre)
	}
	for _, name := range ports {
		fmt.Fprintf(b, "%s-m physdev --physdev-in %s --physdev-is-bridged %s\n", pre, name, queue)
		fmt.Fprintf(b, "%s-m physdev --physdev-out %s --physdev-is-bridged %s\n", pre, name, queue)
		fmt.Fprintf(b, "%s-i %s %s\n", pre, name, queue)
		fmt.Fprintf(b, "%s-o %s %s\n", pre, name, queue)
	}
}

// queueTarget is the NFQUEUE target with its options in the order iptables-save prints them.
func queueTarget(s Spec) string {
	t := "-j NFQUEUE --queue-num " + strconv.Itoa(int(s.QueueNum))
	if s.QueueCount > 1 {
		last := int(s.QueueNum) + int(s.QueueCount) - 1
		t = fmt.Sprintf("-j NFQUEUE --queue-balance %d:%d", s.QueueNum, last)
	}
	if s.FailOpen {
		t += " --queue-bypass"
	}
	if s.QueueCount > 1 {
		t += " --queue-cpu-fanout"
	}
	return t
}

func hex(v uint32) string { return "0x" + strconv.FormatUint(uint64(v), 16) }
