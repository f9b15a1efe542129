package filter

import (
	"net/netip"

	"github.com/sgd-firewall/sgd/internal/packet"
)

// DHCP ports: DHCPv4 (RFC 2131) server 67, client 68; DHCPv6 (RFC 8415) server 547,
// client 546.
const (
	dhcp4Server, dhcp4Client = 67, 68
	dhcp6Server, dhcp6Client = 547, 546
)

var (
	limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	linkLocal6       = netip.MustParsePrefix("fe80::/10")
	// All_DHCP_Relay_Agents_and_Servers (RFC 8415 section 7.1).
	allDHCPServers6 = netip.MustParseAddr("ff02::1:2")
)

// dhcpExempt reports whether the UDP packet p is DHCP client traffic of the link, which a
// VPC lets through whatever the groups say (SPEC 1.2). Only the client's own direction and
// the link are exempt, so that the exemption is no way in or out for anything else:
//
//   - DHCPv4 in, server port 67 → client port 68: from an on-link source (inside nets, the
//     interface's own prefixes; a relay agent answers from the client's link too) to the
//     limited broadcast or one of the host's addresses.
//   - DHCPv4 out, 68 → 67: to the limited broadcast or an on-link address.
//   - DHCPv6 in, 547 → 546: link-local to link-local; out, 546 → 547: from link-local to
//     ff02::1:2. DHCPv6 runs on the link by design.
//
// Everything else with these ports is judged by the rules: a unicast renewal to an
// off-link server (a /32 lease whose server is a gateway away) needs an egress rule, and
// it is then tracked, so the server's answer comes back. A client's first exchange, before
// it has an address, uses packet sockets that netfilter does not see.
func dhcpExempt(p *packet.Parsed, dir Dir, nets []netip.Prefix, local *addrSet) bool {
	if p.Family == 6 {
		if dir == DirIngress {
			return p.SrcPort == dhcp6Server && p.DstPort == dhcp6Client && linkLocal6.Contains(p.Src) && linkLocal6.Contains(p.Dst)
		}
		return p.SrcPort == dhcp6Client && p.DstPort == dhcp6Server && linkLocal6.Contains(p.Src) && p.Dst == allDHCPServers6
	}
	if dir == DirIngress {
		if p.SrcPort != dhcp4Server || p.DstPort != dhcp4Client || !onLink(nets, p.Src) {
			return false
		}
		return p.Dst == limitedBroadcast || local.has(p.Dst)
	}
	return p.SrcPort == dhcp4Client && p.DstPort == dhcp4Server && (p.Dst == limitedBroadcast || onLink(nets, p.Dst))
}

func onLink(nets []netip.Prefix, a netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}
