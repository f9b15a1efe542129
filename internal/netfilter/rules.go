package netfilter

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/offload"
)

// Names of the chains sgd owns. Nothing else in the ruleset is ever written by sgd except
// the one jump rule per built-in chain to one of these chains (hook.jumpArgs).
const (
	ChainInput   = "SGD-INPUT"    // table mangle, jumped to from INPUT
	ChainOutput  = "SGD-OUTPUT"   // table mangle, jumped to from OUTPUT
	ChainForward = "SGD-FORWARD"  // table mangle, jumped to from FORWARD (ports only)
	ChainSaveIn  = "SGD-SAVE-IN"  // table filter, jumped to from INPUT (offload only)
	ChainSaveOut = "SGD-SAVE-OUT" // table filter, jumped to from OUTPUT (offload only)
	ChainSaveFwd = "SGD-SAVE-FWD" // table filter, jumped to from FORWARD (offload, ports)
	ChainRawPre  = "SGD-RAW-PRE"  // table raw, jumped to from PREROUTING (offload only)
	ChainRawOut  = "SGD-RAW-OUT"  // table raw, jumped to from OUTPUT (offload only)

	// The offload check of forwarded packets, in mangle, jumped to from SGD-FORWARD only.
	ChainForwardFast = "SGD-FORWARD-FAST"
	// The offload checks of an older version (until 2026-12), now in SGD-INPUT and
	// SGD-OUTPUT themselves: Apply removes them where it finds them.
	ChainInputFast  = "SGD-INPUT-FAST"
	ChainOutputFast = "SGD-OUTPUT-FAST"

	// jumpComment marked sgd's jumps before 2026-12 (hook.legacyJumpArgs).
	jumpComment = "sgd"
)

// hook is one of sgd's chains and the built-in chain that jumps to it (none for a chain
// only sgd's own chains jump to).
type hook struct {
	table   string // "raw", "mangle" or "filter"
	builtin string // "PREROUTING", "INPUT", "OUTPUT" or "FORWARD"; "" for none
	chain   string // sgd's chain
	// last: the jump is appended at the end of the built-in chain rather than inserted
	// at the top. In raw, so that the user's own CT rules (notrack, zones, helpers) come
	// first: the first CT target to attach a template to a packet wins.
	last bool
}

// jumpArgs is the rule specification of the jump, as iptables -S prints it after
// "-A builtin " (the form matters: -C and Remove find jumps by comparing it). A jump to one
// of sgd's chains is sgd's by the chain's name; it carries no comment match, which
// iptables-nft evaluates (an xtables call) for every packet. filter's jumps carry the
// offload mark, a native comparison, so that only the packets sgd marked enter.
func (h hook) jumpArgs() []string {
	if h.table == "filter" {
		m := hex(offload.Mark) + "/" + hex(offload.Mark)
		return []string{"-m", "mark", "--mark", m, "-j", h.chain}
	}
	return []string{"-j", h.chain}
}

// legacyJumpArgs is the jump as sgd wrote it before 2026-12 ("-m comment --comment sgd
// -j CHAIN"): Apply and Remove delete it wherever they find it.
func (h hook) legacyJumpArgs() []string {
	return []string{"-m", "comment", "--comment", jumpComment, "-j", h.chain}
}

var (
	queueHooks = [...]hook{{"mangle", "INPUT", ChainInput, false}, {"mangle", "OUTPUT", ChainOutput, false}}
	// forwardHooks is installed only while ports are configured, so that a host without
	// ports has exactly the rules it had before ports existed.
	forwardHooks = [...]hook{{"mangle", "FORWARD", ChainForward, false}}
	// The offload's: checks in mangle, labelling in filter, timeout policies in raw.
	// oldFastHooks are an older version's, never installed now.
	oldFastHooks     = [...]hook{{"mangle", "", ChainInputFast, false}, {"mangle", "", ChainOutputFast, false}}
	fastForwardHooks = [...]hook{{"mangle", "", ChainForwardFast, false}}
	saveHooks        = [...]hook{{"filter", "INPUT", ChainSaveIn, false}, {"filter", "OUTPUT", ChainSaveOut, false}}
	saveForwardHooks = [...]hook{{"filter", "FORWARD", ChainSaveFwd, false}}
	rawHooks         = [...]hook{{"raw", "PREROUTING", ChainRawPre, true}, {"raw", "OUTPUT", ChainRawOut, true}}

	// tables in the order sgd writes them.
	tables = [...]string{"raw", "mangle", "filter"}
)

// allHooks is every chain sgd may own: what Remove takes away.
func allHooks() []hook {
	var hs []hook
	for _, g := range [][]hook{queueHooks[:], forwardHooks[:], oldFastHooks[:], fastForwardHooks[:], saveHooks[:], saveForwardHooks[:], rawHooks[:]} {
		hs = append(hs, g...)
	}
	return hs
}

// hooks is the chains s needs, main chains before the chains they jump to.
func (s Spec) hooks() []hook {
	hs := slices.Clone(queueHooks[:])
	if len(s.Ports) > 0 {
		hs = append(hs, forwardHooks[:]...)
	}
	if s.Offload == nil {
		return hs
	}
	if len(s.Ports) > 0 {
		hs = append(hs, fastForwardHooks[:]...)
	}
	hs = append(hs, saveHooks[:]...)
	if len(s.Ports) > 0 {
		hs = append(hs, saveForwardHooks[:]...)
	}
	return append(hs, rawHooks[:]...)
}

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
	// attachment points.
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
	// Offload, when set, turns the kernel fast path on (SPEC 4.7); nil queues every
	// packet, with exactly the rules sgd had before the fast path existed.
	Offload *Offload
}

// Offload is the kernel fast path's part of a Spec. Its vocabulary is internal/offload's:
// a device's zone z is connection label bit z, and sgd's verdict sets offload.Mark in
// the packet mark to offload the packet's connection at every sgd device it crosses.
//
// The rules: raw attaches each device's timeout policies to the connections created
// there (the first packet's input device; the output device for the host's own); filter
// sets, for a packet carrying offload.Mark with conntrack state NEW or ESTABLISHED, the
// label bit of each sgd device the packet crosses (the device's "point"), and
// offload.Mark in the connection mark; mangle passes (RETURN) a NEW or ESTABLISHED packet
// whose every point has its label bit, and queues the rest as without the fast path (in
// sgd's INPUT and OUTPUT chains themselves, where a packet crosses one point; through
// SGD-FORWARD-FAST for forwarded ones, which may cross two). So
// RELATED packets (ICMP errors), INVALID and UNTRACKED ones are always judged by sgd. A
// port-to-port packet has two points (the source port's and the destination port's), a
// packet between a port and anything else the port's, a host interface's its own; a
// packet a port bridges to the host crosses the bridge too, and counts at the port alone,
// as the judge counts it.
//
// The policies must exist before the rules are applied (offload.Ensure), and entries
// created before the labelling rules exist cannot carry labels: they stay on the queue.
type Offload struct {
	// Zones gives each device's zone (the one the judge tracks its flows in). A device
	// without one, or with one outside 1..offload.MaxZone, is never offloaded: all its
	// packets are queued. Names that are not configured devices are ignored; two devices
	// may not share a zone.
	Zones map[string]uint16
	// Timeouts names each device's timeout policies {TCP, UDP}, as offload.Timeouts.Names
	// gives them ("" for none: the kernel's defaults); the rules use their objects for
	// each family (offload.PolicyName). Names that are not configured devices are
	// ignored.
	Timeouts map[string][2]string
}

// hasTimeouts reports whether any configured device names a policy.
func (o *Offload) hasTimeouts(s Spec) bool {
	for _, dev := range append(slices.Clone(s.Interfaces), s.Ports...) {
		if t := o.Timeouts[dev]; t[0] != "" || t[1] != "" {
			return true
		}
	}
	return false
}

// zone is dev's label bit, and whether dev is offloaded at all.
func (o *Offload) zone(dev string) (uint16, bool) {
	z := o.Zones[dev]
	return z, z >= 1 && z <= offload.MaxZone
}

// Validate reports the first problem with s: an interface name that Linux would refuse
// or that iptables would read as something else, "lo", a duplicate name, a queue range
// that is empty or runs past 65535, and with Offload two devices in one zone or a timeout
// policy name iptables cannot take.
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
	if s.Offload != nil {
		if err := s.Offload.validate(s); err != nil {
			return err
		}
	}
	return nil
}

// validate checks the zones and policy names of the configured devices.
func (o *Offload) validate(s Spec) error {
	owner := map[uint16]string{}
	for _, dev := range append(slices.Clone(s.Interfaces), s.Ports...) {
		if z, ok := o.zone(dev); ok {
			if other, dup := owner[z]; dup {
				return fmt.Errorf("netfilter: devices %q and %q share zone %d: a flow offloaded at one would pass the other", other, dev, z)
			}
			owner[z] = dev
		}
		for _, name := range o.Timeouts[dev] {
			if err := validPolicyName(name); err != nil {
				return fmt.Errorf("netfilter: device %q: %w", dev, err)
			}
		}
	}
	return nil
}

// validPolicyName accepts "" (no policy) and names of letters, digits, '-', '_' and '.'
// short enough for the kernel's 31 bytes once offload.PolicyName adds the family.
func validPolicyName(name string) error {
	if name == "" {
		return nil
	}
	if n := len(offload.PolicyName(name, true)); n > 31 {
		return fmt.Errorf("timeout policy %q: %d bytes with its family suffix, the kernel takes 31", name, n)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("timeout policy %q: byte %q at %d not allowed", name, c, i)
		}
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
// sgd's chains for family f, one table after the other. Declaring a chain (":NAME - [0:0]")
// under --noflush creates it or flushes it, so the whole content is swapped in one
// transaction; the jumps are not part of it (Apply adds them only when absent). Every
// rule is written in the canonical form iptables-save prints, so the text can be
// compared with a listing (but for CT's timeout name, of which Linux 6.18 shows only the
// first 4 bytes: xt_CT's usersize stops there).
//
// Exemptions and the loopback RETURN are not tied to an interface: for an interface sgd
// does not filter the packet would RETURN anyway, so one rule serves all of them.
func rules(s Spec, f family) []byte {
	var b bytes.Buffer
	hs := s.hooks()
	for _, table := range tables {
		var in []hook
		for _, h := range hs {
			if h.table == table {
				in = append(in, h)
			}
		}
		if len(in) == 0 {
			continue
		}
		b.WriteString("*" + table + "\n")
		for _, h := range in {
			fmt.Fprintf(&b, ":%s - [0:0]\n", h.chain)
		}
		for _, h := range in {
			pre := "-A " + h.chain + " "
			switch table {
			case "raw":
				rawRules(&b, pre, s, f, h.builtin)
			case "mangle":
				mangleRules(&b, pre, s, f, h)
			case "filter":
				saveRules(&b, pre, s, h.builtin)
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.Bytes()
}

// mangleRules writes one of sgd's mangle chains: a queue chain, or with offload the
// forwarding path's check chain.
//
// With offload, a host chain (INPUT, OUTPUT) tests each point in turn: a packet whose
// connection carries the point's label bit returns (it passes), the point's others are
// queued. A packet crosses one point there, so one rule decides it, and the rule tests
// the label before the state: a packet that is not offloaded fails at the first match.
func mangleRules(b *bytes.Buffer, pre string, s Spec, f family, h hook) {
	queue := queueTarget(s)
	if h.chain == ChainForwardFast {
		fastRules(b, pre, s, queue)
		return
	}
	in := h.builtin == "INPUT"
	dev := "-o"
	if in {
		dev = "-i"
	}
	if h.builtin != "FORWARD" {
		// Loopback is never filtered (SPEC 1.2); it is never forwarded.
		b.WriteString(pre + dev + " lo -j RETURN\n")
	}
	if f == ipv6 {
		if s.Offload == nil {
			// IPv6 is reassembled before the hooks only when conntrack runs in the
			// namespace (nf_defrag_ipv6), and the kernel turns it on only for a
			// ruleset that uses conntrack. This match does nothing else (no target):
			// it makes fragments reach sgd as whole datagrams (SPEC 1.4). IPv4
			// arriving is reassembled before INPUT anyway, and leaving is fragmented
			// after OUTPUT; sgd drops the rare crafted IPv4 fragment rather than make
			// the kernel track every IPv4 packet (measured: a few percent of TCP
			// throughput). With offload, SGD-SAVE-*'s state match loads conntrack
			// for the family (the kernel does so when a rule is added, not when it
			// runs, in whatever table), and a match every packet would pay for is
			// left out.
			prelude(b, pre)
		}
		// Neighbour discovery is never filtered (SPEC 1.2).
		for t := ipproto.NDPFirst; t <= ipproto.NDPLast; t++ {
			fmt.Fprintf(b, "%s-p ipv6-icmp -m icmp6 --icmpv6-type %d -j RETURN\n", pre, t)
		}
	}
	if h.builtin == "FORWARD" {
		switch {
		case s.Offload != nil:
			// A tracked packet goes through the checks: queued there unless offloaded
			// at every point it crosses. Goto: the end of the check chain returns from
			// this one too (it passes). Others (RELATED, INVALID, UNTRACKED) are
			// queued below, as without the fast path.
			fmt.Fprintf(b, "%s-m conntrack --ctstate NEW,ESTABLISHED -g %s\n", pre, ChainForwardFast)
		case f == ipv4:
			// A forwarded IPv4 datagram is reassembled before FORWARD only when
			// conntrack's defragmentation runs in the namespace, and a later fragment
			// has no ports to judge (the judge drops it), so without it an instance's
			// fragmented UDP would never arrive. (With offload the state match above
			// loads it.)
			prelude(b, pre)
		}
		forwardRules(b, pre, queue, s.Ports)
		return
	}
	if s.Offload != nil {
		for _, p := range points(s, h.builtin) {
			if z, ok := s.Offload.zone(p.dev); ok {
				fmt.Fprintf(b, "%s%s -m connlabel --label \"%d\" -m conntrack --ctstate NEW,ESTABLISHED -j RETURN\n", pre, p.match, z)
			}
			fmt.Fprintf(b, "%s%s %s\n", pre, p.match, queue)
		}
		return
	}
	for _, name := range s.Interfaces {
		fmt.Fprintf(b, "%s%s %s %s\n", pre, dev, name, queue)
	}
	for _, name := range s.Ports {
		// A port's traffic with the host itself: bridged to the host's address on
		// the bridge (INPUT only: the bridge picks the port of a packet the host
		// sends after OUTPUT, so physdev-out cannot match there), and routed.
		if in {
			fmt.Fprintf(b, "%s-m physdev --physdev-in %s %s\n", pre, name, queue)
		}
		fmt.Fprintf(b, "%s%s %s %s\n", pre, dev, name, queue)
	}
}

// prelude is a conntrack match without a target: it does nothing when it runs, and makes
// the kernel run conntrack, and its defragmentation, for the family once it is added.
func prelude(b *bytes.Buffer, pre string) {
	fmt.Fprintf(b, "%s-m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED\n", pre)
}

// point is one device match of a hook: the rule text that picks the packets crossing a
// device there, and the device.
type point struct {
	match, dev string
	// bridgedIn: a packet a port bridges to the host, which also crosses the bridge
	// (-i br0): it counts at the port alone, so the chain returns after it.
	bridgedIn bool
}

// points lists the device matches of builtin's hook in the order the offload chains test
// them: ports before host interfaces, as the judge picks a port's point first.
func points(s Spec, builtin string) []point {
	var ps []point
	for _, name := range s.Ports {
		switch builtin {
		case "INPUT":
			ps = append(ps, point{"-m physdev --physdev-in " + name, name, true}, point{"-i " + name, name, false})
		case "OUTPUT":
			ps = append(ps, point{"-o " + name, name, false})
		case "FORWARD":
			ps = append(ps,
				point{"-m physdev --physdev-in " + name + " --physdev-is-bridged", name, false},
				point{"-m physdev --physdev-out " + name + " --physdev-is-bridged", name, false},
				point{"-i " + name, name, false},
				point{"-o " + name, name, false})
		}
	}
	if builtin == "FORWARD" {
		return ps
	}
	dev := "-o "
	if builtin == "INPUT" {
		dev = "-i "
	}
	for _, name := range s.Interfaces {
		ps = append(ps, point{dev + name, name, false})
	}
	return ps
}

// fastRules writes the forwarding path's check chain: a NEW or ESTABLISHED packet is
// queued at the first point it crosses whose label bit its connection lacks (at once for
// a device that is never offloaded); one that gets to the end passes. A forwarded packet
// may cross two points (port to port): it passes only with both bits.
func fastRules(b *bytes.Buffer, pre string, s Spec, queue string) {
	for _, p := range points(s, "FORWARD") {
		z, ok := s.Offload.zone(p.dev)
		if !ok {
			fmt.Fprintf(b, "%s%s %s\n", pre, p.match, queue)
			continue
		}
		fmt.Fprintf(b, "%s%s -m connlabel ! --label \"%d\" %s\n", pre, p.match, z, queue)
	}
}

// saveRules writes a labelling chain of table filter, which only packets carrying
// offload.Mark enter (hook.jumpArgs). It only marks connections and never ends the
// traversal: the host's own filter rules still judge the packet. connlabel --set is a
// match that succeeds once the bit is set (it fails on a connection created before any
// labelling rule existed: it has no room for labels, and gets no connection mark either).
func saveRules(b *bytes.Buffer, pre string, s Spec, builtin string) {
	m := hex(offload.Mark)
	// Not RELATED: an ICMP error belongs to the connection it quotes, and must not
	// offload it at a device it was never judged at.
	fmt.Fprintf(b, "%s-m conntrack ! --ctstate NEW,ESTABLISHED -j RETURN\n", pre)
	for _, p := range points(s, builtin) {
		if z, ok := s.Offload.zone(p.dev); ok {
			fmt.Fprintf(b, "%s%s -m connlabel --label \"%d\" --set -j CONNMARK --set-xmark %s/%s\n", pre, p.match, z, m, m)
		}
		if p.bridgedIn {
			fmt.Fprintf(b, "%s%s -j RETURN\n", pre, p.match)
		}
	}
}

// rawRules writes a timeout chain of table raw: each device's policies for the
// connections whose first packet comes in through it (PREROUTING) or, for the host's own,
// goes out through it (OUTPUT). The CT target does not end the traversal, and only the
// first one that matches a packet counts: ports come first, as in the judge. Listings
// of Linux 6.18 cut the name short (rules); the kernel holds it whole.
func rawRules(b *bytes.Buffer, pre string, s Spec, f family, builtin string) {
	hookPoint := "INPUT" // PREROUTING: the devices packets come in through
	if builtin == "OUTPUT" {
		hookPoint = "OUTPUT"
	}
	for _, p := range points(s, hookPoint) {
		names := s.Offload.Timeouts[p.dev]
		for i, proto := range [...]string{"tcp", "udp"} {
			if names[i] == "" {
				continue
			}
			name := offload.PolicyName(names[i], f == ipv6)
			match, rest, _ := strings.Cut(p.match, " ")
			if match == "-m" {
				// -p comes before the matches in the canonical form.
				fmt.Fprintf(b, "%s-p %s -m %s -j CT --timeout %s\n", pre, proto, rest, name)
			} else {
				fmt.Fprintf(b, "%s%s -p %s -j CT --timeout %s\n", pre, p.match, proto, name)
			}
		}
	}
}

// forwardRules writes the queue rules of sgd's FORWARD chain: the packets each port sends
// or receives through the host, bridged (physdev, through br_netfilter) or routed (by
// device). A packet between two ports matches the first rule of its source's and is
// queued once: the judge takes both points from its devices (JudgePath).
func forwardRules(b *bytes.Buffer, pre, queue string, ports []string) {
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
