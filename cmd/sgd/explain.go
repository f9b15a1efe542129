package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"

	"github.com/sgd-firewall/sgd/internal/controller"
	"github.com/sgd-firewall/sgd/internal/daemon"
	"github.com/sgd-firewall/sgd/internal/filter"
	"github.com/sgd-firewall/sgd/internal/ipproto"
	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/settings"
)

func cmdExplain(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("explain", "--config FILE --interface IF --direction ingress|egress --protocol P --source ADDR --destination ADDR [--port N | --icmp-type T --icmp-code C]",
		`Judge the first packet of a flow as the daemon would, without touching the firewall.
The first word printed is ALLOW or DENY; then the group and rule that allowed it (or the
rules that nearly did) and whether the flow would be tracked. Exit 0 for ALLOW, 1 for
DENY, 2 for a usage error or a config it cannot use (a --config that does not exist or
cannot be opened, or one that is rejected: sgd check says why).`, stderr)
	config := fs.String("config", "", "config file `path` (required)")
	iface := fs.String("interface", "", "interface `name` the packet crosses (required)")
	dirS := fs.String("direction", "", "ingress (arriving for this host) or egress (sent by it) (required)")
	protoS := fs.String("protocol", "", "tcp, udp, icmp, icmpv6 or a protocol `number` (required)")
	srcS := fs.String("source", "", "source `address` (required)")
	dstS := fs.String("destination", "", "destination `address` (required)")
	port := fs.Int("port", -1, "destination `port` (tcp, udp)")
	srcPort := fs.Int("source-port", 0, "source `port` (tcp, udp; only DHCP's exemption looks at it)")
	icmpType := fs.Int("icmp-type", -1, "ICMP `type` (icmp, icmpv6)")
	icmpCode := fs.Int("icmp-code", 0, "ICMP `code` (icmp, icmpv6)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sgd explain: "+format+"\n", a...)
		return 2
	}
	for _, req := range []struct{ name, val string }{{"config", *config}, {"interface", *iface}, {"direction", *dirS}, {"protocol", *protoS}, {"source", *srcS}, {"destination", *dstS}} {
		if req.val == "" {
			return fail("--%s is required (see --help)", req.name)
		}
	}
	dir, ok := rules.ParseDirection(*dirS)
	if !ok {
		return fail("--direction %q is not ingress or egress", *dirS)
	}
	proto, ok := rules.Protocol(*protoS).Number()
	if !ok || proto < 0 {
		return fail("--protocol %q is not tcp, udp, icmp, icmpv6 or a number 0–255", *protoS)
	}
	src, err := netip.ParseAddr(*srcS)
	if err != nil {
		return fail("--source: %v", err)
	}
	dst, err := netip.ParseAddr(*dstS)
	if err != nil {
		return fail("--destination: %v", err)
	}
	src, dst = src.Unmap(), dst.Unmap()
	if src.Is4() != dst.Is4() {
		return fail("--source and --destination must be of the same address family")
	}
	q := rules.Query{Iface: *iface, Direction: dir, Proto: uint8(proto), Src: src, Dst: dst}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	icmp := proto == ipproto.ICMP || proto == ipproto.ICMPv6
	switch {
	case (set["icmp-type"] || set["icmp-code"]) && !icmp:
		return fail("--icmp-type and --icmp-code are for icmp and icmpv6, not %s", *protoS)
	case (set["port"] || set["source-port"]) && !ipproto.HasPorts(uint8(proto)):
		return fail("--port and --source-port are for tcp and udp, not %s", *protoS)
	}
	switch proto {
	case ipproto.TCP, ipproto.UDP:
		if *port < 0 || *port > 65535 {
			return fail("--port (0–65535) is required for %s", *protoS)
		}
		if *srcPort < 0 || *srcPort > 65535 {
			return fail("--source-port is 0–65535")
		}
		q.Port, q.SrcPort = uint16(*port), uint16(*srcPort)
	case ipproto.ICMP, ipproto.ICMPv6:
		if *icmpType < 0 || *icmpType > 255 || *icmpCode < 0 || *icmpCode > 255 {
			return fail("--icmp-type (0–255) is required for %s, --icmp-code is 0–255", *protoS)
		}
		q.ICMPType, q.ICMPCode = uint8(*icmpType), uint8(*icmpCode)
	}
	file := controller.NewFile(*config)
	st, err := controller.Load(context.Background(), rules.Env{LocalAddrs: daemon.LocalAddrs}, file)
	if err != nil {
		configFailed("explain", *config, err, stderr)
		return exitUsage // not exitNo: 1 is DENY, and no packet was judged
	}
	p := st.Policy
	if p.Interface(*iface) == nil && *iface != "lo" {
		return fail("interface %s is not in %s (configured: %v)", *iface, *config, p.DeviceNames())
	}
	// The host's own addresses and links, as the daemon reads them: explain runs on the
	// host it explains.
	ex := filter.Explain(p, filter.ReadHost(p.InterfaceNames()), settings.Resolve(file.Settings(), settings.Section{}).ExemptDHCP, q)
	what := describe(q)
	if !ex.Allowed {
		fmt.Fprintf(stdout, "DENY %s\n  %s\n", what, ex.Why)
		if len(ex.Near) > 0 {
			fmt.Fprintln(stdout, "  nearest rules:")
			for _, n := range ex.Near {
				fmt.Fprintf(stdout, "    %s\n", n)
			}
		}
		return 1
	}
	fmt.Fprintf(stdout, "ALLOW %s\n", what)
	if ex.Exempt != "" {
		fmt.Fprintf(stdout, "  %s\n", ex.Exempt)
		return 0
	}
	r := ex.Rule
	fmt.Fprintf(stdout, "  group: %s (%s)\n", r.GroupID, r.GroupName)
	desc := ""
	if r.Rule.Description != "" {
		desc = " " + strconv.Quote(r.Rule.Description)
	}
	word := "from"
	if dir == rules.Egress {
		word = "to"
	}
	fmt.Fprintf(stdout, "  rule:  %s %s[%d] %s %s %s%s\n", r.Rule.ID, dir, r.Rule.Index, r.Rule.PortText(), word, r.Rule.Peer, desc)
	switch {
	case r.Rule.Default && r.Rule.Direction == rules.Egress:
		fmt.Fprintln(stdout, "         (AWS's implicit egress rule: the group's egress is omitted)")
	case r.Rule.Default:
		fmt.Fprintln(stdout, "         (AWS's default group: the config defines no group named default)")
	}
	switch {
	case ex.Untracked:
		fmt.Fprintln(stdout, "  flow:  untracked (peer is everything and the other direction allows all ports: replies are judged by the rules)")
	case proto == ipproto.TCP || proto == ipproto.UDP || proto == ipproto.ICMP || proto == ipproto.ICMPv6:
		fmt.Fprintln(stdout, "  flow:  tracked (replies pass while the flow is tracked)")
	default:
		fmt.Fprintln(stdout, "  flow:  tracked by address pair (replies pass while the flow is tracked)")
	}
	return 0
}

func describe(q rules.Query) string {
	name := ipproto.Name(int(q.Proto))
	switch q.Proto {
	case ipproto.TCP, ipproto.UDP:
		return fmt.Sprintf("%s %s %s -> %s on %s", q.Direction, name, q.Src, netip.AddrPortFrom(q.Dst, q.Port), q.Iface)
	case ipproto.ICMP, ipproto.ICMPv6:
		return fmt.Sprintf("%s %s type %d code %d %s -> %s on %s", q.Direction, name, q.ICMPType, q.ICMPCode, q.Src, q.Dst, q.Iface)
	}
	return fmt.Sprintf("%s protocol %s %s -> %s on %s", q.Direction, name, q.Src, q.Dst, q.Iface)
}
